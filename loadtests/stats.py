"""Robust statistics for the memory guard: the Theil-Sen slope and its confidence interval."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

# Above this many points the O(n^2) pairwise slopes are computed on an even subsample:
# 2,000 points are 2 million pairs (~32 MB of float64), still well under a second.
MAX_THEIL_SEN_POINTS = 2000


@dataclass(frozen=True)
class LineFit:
    """A fitted line y = intercept + slope * x, with the number of points and pairs it used."""

    slope: float
    intercept: float
    points: int
    pairs: int

    def at(self, x: float) -> float:
        """The fitted y at x."""
        return self.intercept + self.slope * x


def theil_sen(xs: Sequence[float], ys: Sequence[float], *, min_points: int = 2) -> LineFit:
    """Fit a line by Theil-Sen: the median of every pairwise slope.

    Robust to up to ~29 % outliers (one GC pause or one worker recycle does not move it), unlike
    least squares. Pairs with equal x are skipped (they have no slope). The intercept is the
    median of y - slope * x (Sen 1968).

    Ref: https://en.wikipedia.org/wiki/Theil%E2%80%93Sen_estimator

    Raises:
        ValueError: xs and ys differ in length, hold a non-finite value, there are fewer than
            min_points points, or every x is equal.
    """
    if len(xs) != len(ys):
        msg = f"xs and ys must have the same length, got {len(xs)} and {len(ys)}"
        raise ValueError(msg)
    if min_points < 2:
        msg = f"min_points must be >= 2, got {min_points!r}"
        raise ValueError(msg)
    if len(xs) < min_points:
        msg = f"theil_sen needs >= {min_points} points, got {len(xs)}"
        raise ValueError(msg)
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        msg = "xs and ys must be finite numbers (no NaN or inf)"
        raise ValueError(msg)
    if len(x) > MAX_THEIL_SEN_POINTS:
        keep = np.linspace(0, len(x) - 1, MAX_THEIL_SEN_POINTS).round().astype(np.int64)
        x, y = x[keep], y[keep]
    i, j = np.triu_indices(len(x), k=1)
    dx = x[j] - x[i]
    has_slope = dx != 0
    if not has_slope.any():
        msg = f"theil_sen needs at least two distinct x values, got only {x[0]!r}"
        raise ValueError(msg)
    slopes = (y[j] - y[i])[has_slope] / dx[has_slope]
    slope = float(np.median(slopes))
    intercept = float(np.median(y - slope * x))
    return LineFit(slope=slope, intercept=intercept, points=len(xs), pairs=int(has_slope.sum()))


@dataclass(frozen=True)
class SlopeInterval:
    """Sen's slope with its confidence interval from Kendall's S, corrected for autocorrelation.

    low/high are -inf/+inf when the series is too short or too autocorrelated to bound the
    slope on that side at this confidence.
    """

    slope: float
    low: float
    high: float
    confidence: float
    points: int
    pairs: int
    segments: int  # stretches fitted separately (pairs never span two of them)
    kendall_s: float  # sum of sign(dy) over the pairs: > 0 rising, < 0 falling
    variance_inflation: float  # n/n* of Hamed and Rao (1998); 1 for independent samples
    residual_sigma: float  # 1.4826 * MAD of the residuals around each segment's line

    @property
    def half_width(self) -> float:
        """Half the interval's width (inf when it is unbounded)."""
        return (self.high - self.low) / 2


def _tie_term(values: np.ndarray) -> float:
    _, counts = np.unique(values, return_counts=True)
    t = counts[counts > 1].astype(np.float64)
    return float((t * (t - 1) * (2 * t + 5)).sum())


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1, dtype=np.float64)
    uniques, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    if len(uniques) < len(values):  # ties share their average rank
        sums = np.bincount(inverse, weights=ranks)
        ranks = (sums / counts)[inverse]
    return ranks


def _hamed_rao_inflation(residuals: np.ndarray, z_bound: float) -> float:
    """n/n*: how much autocorrelation inflates Var(S) (Hamed & Rao 1998), never below 1.

    Uses the autocorrelation of the ranks of the detrended series at every lag, keeping the
    lags significant at the test's level, as the modified Mann-Kendall test does.
    Ref: https://doi.org/10.1016/S0022-1694(97)00125-X
    """
    n = len(residuals)
    if n < 4:
        return 1.0
    ranks = _average_ranks(residuals)
    centred = ranks - ranks.mean()
    denominator = float((centred * centred).sum())
    if denominator == 0:
        return 1.0  # a constant residual: nothing to correct
    acf = np.correlate(centred, centred, mode="full")[n:] / denominator  # lags 1..n-1
    lags = np.arange(1, n, dtype=np.float64)
    weights = (n - lags) * (n - lags - 1) * (n - lags - 2)
    significant = np.abs(acf) > z_bound / np.sqrt(n)
    correction = 1 + 2 / (n * (n - 1) * (n - 2)) * float((weights * acf)[significant].sum())
    return max(1.0, correction)


def sen_slope_interval(
    xs: Sequence[float],
    ys: Sequence[float],
    *,
    segments: Sequence[int] | None = None,
    confidence: float = 0.95,
) -> SlopeInterval:
    """Theil-Sen slope and its two-sided confidence interval, pairs taken within segments.

    The interval is Sen's (1968) distribution-free one: with N pairwise slopes sorted, the
    bounds are the slopes of rank (N - C)/2 and (N + C)/2 + 1, C = z * sqrt(Var(S)), where S
    is Kendall's statistic. Var(S) has the tie correction (RSS is often flat) and is inflated
    by n/n* (Hamed & Rao 1998) because one-second RSS samples are autocorrelated: without it
    a step or a slow wave reads as a trend with far too much confidence.

    segments labels each point (e.g. one label per set of live workers): pairs across two
    labels are skipped, like the seasonal Kendall test, so a step between segments (a worker
    recycle) adds no slope. S and Var(S) are summed over the segments.

    Raises:
        ValueError: lengths differ, a value is not finite, confidence is outside (0, 1), or
            fewer than 2 points with distinct x share a segment.
    """
    if not 0 < confidence < 1:
        msg = f"confidence must be within (0, 1), got {confidence!r}"
        raise ValueError(msg)
    labels = list(segments) if segments is not None else [0] * len(xs)
    if not len(xs) == len(ys) == len(labels):
        lengths = f"{len(xs)}, {len(ys)}, {len(labels)}"
        msg = f"xs, ys and segments must have the same length, got {lengths}"
        raise ValueError(msg)
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    seg = np.asarray(labels, dtype=np.int64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        msg = "xs and ys must be finite numbers (no NaN or inf)"
        raise ValueError(msg)
    if len(x) > MAX_THEIL_SEN_POINTS:
        keep = np.linspace(0, len(x) - 1, MAX_THEIL_SEN_POINTS).round().astype(np.int64)
        x, y, seg = x[keep], y[keep], seg[keep]
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    kendall_s = variance = plain_variance = 0.0
    for label in dict.fromkeys(seg.tolist()):
        mask = seg == label
        sx, sy = x[mask], y[mask]
        order = np.argsort(sx, kind="mergesort")
        sx, sy = sx[order], sy[order]
        n = len(sx)
        if n < 2:
            continue
        i, j = np.triu_indices(n, k=1)
        dx, dy = sx[j] - sx[i], sy[j] - sy[i]
        has_slope = dx != 0
        if not has_slope.any():
            continue
        parts.append((dy[has_slope] / dx[has_slope], sx, sy))
        kendall_s += float(np.sign(dy[has_slope]).sum())
        plain_variance += (n * (n - 1) * (2 * n + 5) - _tie_term(sy)) / 18
    if not parts:
        msg = "sen_slope_interval needs >= 2 points with distinct x in one segment"
        raise ValueError(msg)
    slopes = np.sort(np.concatenate([p[0] for p in parts]))
    slope = float(np.median(slopes))
    residuals: list[np.ndarray] = []
    for _, sx, sy in parts:
        detrended = sy - slope * sx
        variance_part = (len(sx) * (len(sx) - 1) * (2 * len(sx) + 5) - _tie_term(sy)) / 18
        variance += variance_part * _hamed_rao_inflation(detrended, z)
        residuals.append(detrended - np.median(detrended))
    spread = np.concatenate(residuals)
    sigma = float(1.4826 * np.median(np.abs(spread - np.median(spread))))
    count = len(slopes)
    c = z * float(np.sqrt(max(variance, 0.0)))
    lower_rank = int(np.floor((count - c) / 2))  # 1-based rank of the lower bound
    upper_rank = int(np.ceil((count + c) / 2)) + 1
    low = float(slopes[lower_rank - 1]) if lower_rank >= 1 else -np.inf
    high = float(slopes[upper_rank - 1]) if upper_rank <= count else np.inf
    return SlopeInterval(
        slope=slope,
        low=min(low, slope),
        high=max(high, slope),
        confidence=confidence,
        points=len(xs),
        pairs=count,
        segments=len(parts),
        kendall_s=kendall_s,
        variance_inflation=variance / plain_variance if plain_variance else 1.0,
        residual_sigma=sigma,
    )
