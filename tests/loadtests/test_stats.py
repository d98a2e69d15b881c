"""Theil-Sen slope and the nearest-rank percentile used by the memory guard."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadtests.stats import MAX_THEIL_SEN_POINTS, theil_sen


def _brute_force_slope(xs: list[float], ys: list[float]) -> float:
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i])
        for i, j in itertools.combinations(range(len(xs)), 2)
        if xs[j] != xs[i]
    ]
    return statistics.median(slopes)


def test_exact_line_gives_its_slope_and_intercept() -> None:
    xs = [float(x) for x in range(20)]
    fit = theil_sen(xs, [3.0 + 0.5 * x for x in xs])
    assert fit.slope == pytest.approx(0.5)
    assert fit.intercept == pytest.approx(3.0)
    assert fit.at(10) == pytest.approx(8.0)
    assert (fit.points, fit.pairs) == (20, 190)


def test_flat_series_with_spikes_keeps_a_zero_slope() -> None:
    # A GC pause or a recycle: 25 % of the points far off the line do not move the median.
    ys = [100.0] * 40
    for i in range(0, 40, 4):
        ys[i] = 400.0 if i > 20 else 10.0
    fit = theil_sen([float(x) for x in range(40)], ys)
    assert fit.slope == pytest.approx(0.0)
    assert fit.intercept == pytest.approx(100.0)


def test_least_squares_would_be_fooled_where_theil_sen_is_not() -> None:
    xs = [float(x) for x in range(30)]
    ys = [50.0 + 0.1 * x for x in xs]
    ys[-1] = 500.0  # one huge outlier at the end
    lsq = statistics.linear_regression(xs, ys).slope
    assert lsq > 2  # least squares: 20x the true slope
    assert theil_sen(xs, ys).slope == pytest.approx(0.1)


def test_pairs_with_equal_x_are_skipped() -> None:
    fit = theil_sen([1.0, 1.0, 2.0, 3.0], [0.0, 100.0, 2.0, 3.0])
    assert fit.pairs == 5
    assert fit.slope == pytest.approx(_brute_force_slope([1, 1, 2, 3], [0, 100, 2, 3]))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        # Seconds and MB at 0.1 resolution, as the sampler produces them.
        st.tuples(st.integers(-10_000, 10_000), st.integers(-10_000, 10_000)).map(
            lambda p: (p[0] / 10, p[1] / 10)
        ),
        min_size=2,
        max_size=40,
    ).filter(lambda pts: len({x for x, _ in pts}) >= 2)
)
def test_matches_a_brute_force_median_of_pairwise_slopes(pts: list[tuple[float, float]]) -> None:
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    expected = _brute_force_slope(xs, ys)
    assert theil_sen(xs, ys).slope == pytest.approx(expected, rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-100, 100, allow_nan=False), min_size=3, max_size=30),
    st.floats(-50, 50, allow_nan=False),
    st.floats(-50, 50, allow_nan=False),
)
def test_adding_a_line_adds_its_slope(noise: list[float], slope: float, shift: float) -> None:
    xs = [float(i) for i in range(len(noise))]
    base = theil_sen(xs, noise).slope
    tilted = theil_sen(xs, [y + shift + slope * x for x, y in zip(xs, noise, strict=True)])
    assert tilted.slope == pytest.approx(base + slope, abs=1e-6)


def test_long_series_are_subsampled_and_still_exact_on_a_line() -> None:
    n = MAX_THEIL_SEN_POINTS * 3
    xs = [i / 10 for i in range(n)]
    fit = theil_sen(xs, [2.0 * x + 1.0 for x in xs])
    assert fit.points == n
    assert fit.pairs == MAX_THEIL_SEN_POINTS * (MAX_THEIL_SEN_POINTS - 1) // 2
    assert fit.slope == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("xs", "ys", "message"),
    [
        ([1.0, 2.0], [1.0], "same length"),
        ([1.0], [1.0], ">= 2 points"),
        ([2.0, 2.0, 2.0], [1.0, 2.0, 3.0], "two distinct x"),
        ([1.0, math.nan], [1.0, 2.0], "finite"),
        ([1.0, 2.0], [1.0, math.inf], "finite"),
    ],
)
def test_rejects_input_it_cannot_fit(xs: list[float], ys: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        theil_sen(xs, ys)


def test_min_points_is_enforced_and_validated() -> None:
    with pytest.raises(ValueError, match=">= 5 points"):
        theil_sen([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], min_points=5)
    with pytest.raises(ValueError, match="min_points"):
        theil_sen([1.0, 2.0], [1.0, 2.0], min_points=1)
