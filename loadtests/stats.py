"""Robust statistics for the memory guard: the Theil-Sen slope estimator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
