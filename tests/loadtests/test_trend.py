"""Sen's slope interval and the three-valued trend verdict, on synthetic RSS series."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loadtests.stats import sen_slope_interval
from loadtests.trend import FAIL, INCONCLUSIVE, PASS, judge_trend, suggested_seconds

LIMIT = 1.0  # MB/min
MINUTES_60 = np.arange(60) / 60  # a 60 s window of 1 s samples, x in minutes


def _judge(ys: np.ndarray, xs: np.ndarray = MINUTES_60, **kw: object) -> str:
    args: dict[str, object] = {"limit": LIMIT, "confidence": 0.95, "min_growth_mb": 4.0,
                               "min_points": 8, **kw}  # fmt: skip
    return judge_trend(list(xs), list(ys), **args).result  # type: ignore[arg-type]  # test kwargs


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    out = np.zeros(n)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + rng.normal(0, sigma)
    return out


@pytest.mark.parametrize("seed", range(60))
def test_flat_series_with_noise_never_fail(seed: int) -> None:
    # Independent noise, autocorrelated noise, page-sized ties and a random step: all bounded.
    rng = np.random.default_rng(seed)
    flat = 160.0 + rng.normal(0, 0.5, 60)
    wavy = 160.0 + _ar1(rng, 60, 0.9, 0.4)
    pages = 160.0 + np.round(rng.normal(0, 0.3, 60) / 0.004) * 0.004
    step = 160.0 + np.where(np.arange(60) > rng.integers(5, 55), rng.uniform(0, 2), 0.0)
    for ys in (flat, wavy, pages, step):
        assert _judge(ys) != FAIL


def test_flat_long_series_pass() -> None:
    rng = np.random.default_rng(7)
    minutes = np.arange(300) / 60
    assert _judge(160.0 + rng.normal(0, 0.5, 300), minutes) == PASS
    assert _judge(np.full(60, 160.0)) == PASS


@pytest.mark.parametrize(("rate", "seconds"), [(3.0, 300), (6.0, 120), (60.0, 30)])
def test_known_leaks_are_detected(rate: float, seconds: int) -> None:
    rng = np.random.default_rng(int(rate))
    minutes = np.arange(seconds) / 60
    ys = 160.0 + rate * minutes + rng.normal(0, 0.3, seconds)
    assert _judge(ys, minutes) == FAIL
    interval = sen_slope_interval(list(minutes), list(ys))
    assert interval.slope == pytest.approx(rate, rel=0.05)


def test_a_leak_too_small_for_the_noise_floor_is_inconclusive() -> None:
    # 2 MB/min for 60 s is only 1 MB of growth: the interval is above the limit, the growth not.
    ys = 160.0 + 2.0 * MINUTES_60
    judgement = judge_trend(list(MINUTES_60), list(ys), limit=LIMIT, confidence=0.95,
                            min_growth_mb=4.0, min_points=8)  # fmt: skip
    assert judgement.result == INCONCLUSIVE
    assert "within noise" in judgement.reason
    assert judgement.span_ratio is not None and judgement.span_ratio >= 2


def test_short_series_are_inconclusive_and_say_how_long_to_run() -> None:
    judgement = judge_trend([0.0, 0.1, 0.2], [1.0, 2.0, 3.0], limit=LIMIT, confidence=0.95,
                            min_growth_mb=4.0, min_points=8)  # fmt: skip
    assert judgement.result == INCONCLUSIVE
    assert suggested_seconds(30.0, judgement.span_ratio) == pytest.approx(120.0)
    rng = np.random.default_rng(3)
    noisy = 160.0 + rng.normal(0, 2.0, 15)
    assert _judge(noisy, MINUTES_60[:15]) == INCONCLUSIVE


def test_suggestions_are_whole_minutes_capped_at_an_hour() -> None:
    assert suggested_seconds(60.0, 1.5) == 120.0
    assert suggested_seconds(60.0, math.inf) == 3600.0
    assert suggested_seconds(600.0, 100.0) == 3600.0
    assert suggested_seconds(60.0, None) is None


def test_interval_coverage_is_near_its_confidence_for_independent_noise() -> None:
    rng = np.random.default_rng(11)
    minutes = np.arange(60) / 60
    covered = 0
    for _ in range(200):
        ys = 160.0 + 1.5 * minutes + rng.normal(0, 0.5, 60)
        interval = sen_slope_interval(list(minutes), list(ys), confidence=0.95)
        covered += interval.low <= 1.5 <= interval.high
    assert covered >= 180  # 95 % nominal; >= 90 % observed over 200 series


def test_autocorrelation_widens_the_interval() -> None:
    rng = np.random.default_rng(5)
    walk = 160.0 + np.cumsum(rng.normal(0, 0.2, 120))
    minutes = list(np.arange(120) / 60)
    corrected = sen_slope_interval(minutes, list(walk))
    assert corrected.variance_inflation > 1.5


def test_adding_a_linear_leak_shifts_slope_and_bounds_by_exactly_that_rate() -> None:
    # The calibration's minimum detectable leak rests on this equivariance.
    rng = np.random.default_rng(2)
    base = 160.0 + rng.normal(0, 0.5, 60)
    a = sen_slope_interval(list(MINUTES_60), list(base))
    b = sen_slope_interval(list(MINUTES_60), list(base + 2.5 * MINUTES_60))
    assert b.slope - a.slope == pytest.approx(2.5)
    assert b.low - a.low == pytest.approx(2.5)
    assert b.high - a.high == pytest.approx(2.5)


def test_pairs_never_span_segments() -> None:
    # A recycle drops 10 MB between two flat stretches: no slope at all within segments.
    ys = [170.0] * 30 + [160.0] * 30
    pooled = sen_slope_interval(list(MINUTES_60), ys)
    split = sen_slope_interval(list(MINUTES_60), ys, segments=[0] * 30 + [1] * 30)
    assert pooled.slope < 0 or pooled.low < 0
    assert (split.slope, split.low, split.high) == (0.0, 0.0, 0.0)
    assert split.segments == 2
    assert split.pairs == 2 * (30 * 29 // 2)


def test_an_exact_line_has_a_zero_width_interval() -> None:
    interval = sen_slope_interval([float(x) for x in range(20)], [2.0 * x for x in range(20)])
    assert (interval.slope, interval.low, interval.high) == (2.0, 2.0, 2.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"xs": [1.0, 2.0], "ys": [1.0]}, "same length"),
        ({"xs": [1.0, math.nan], "ys": [1.0, 2.0]}, "finite"),
        ({"xs": [1.0, 1.0], "ys": [1.0, 2.0]}, "distinct x"),
        ({"xs": [1.0, 2.0], "ys": [1.0, 2.0], "confidence": 1.0}, "confidence"),
    ],
)
def test_bad_input_is_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sen_slope_interval(**kwargs)  # type: ignore[arg-type]  # deliberately bad input
