"""Three-valued judgement of a memory trend: PASS, FAIL or INCONCLUSIVE, with what to do next."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from loadtests.stats import SlopeInterval, sen_slope_interval

PASS = "PASS"
FAIL = "FAIL"
INCONCLUSIVE = "INCONCLUSIVE"
RESULTS = (PASS, FAIL, INCONCLUSIVE)
# Growth must stand this many residual sigmas clear of the noise, besides min_growth_mb.
NOISE_SIGMAS = 3.0
# A suggested run length is capped here: beyond an hour, the slope sits on the limit.
MAX_SUGGESTED_SECONDS = 3600.0
# Never suggest less than this: measured, 2-minute runs of the healthy template PASS 10 of 10
# while 1-minute runs are often still INCONCLUSIVE (make loadtest-calibrate).
MIN_SUGGESTED_SECONDS = 120.0
# The interval's half-width is taken to shrink like 1/window: between independent samples
# (1/window^1.5) and a random walk (1/window^0.5), and conservative for the former.
WIDTH_EXPONENT = 1.0


@dataclass(frozen=True)
class TrendJudgement:
    """One trend criterion's outcome and the evidence behind it."""

    result: str  # PASS | FAIL | INCONCLUSIVE
    interval: SlopeInterval | None
    growth_mb: float | None  # slope times the window's span: the growth the fit implies
    noise_floor_mb: float
    reason: str
    span_ratio: float | None = None  # how much longer a window should be to decide (>= 1)
    span: float = 0.0  # the window's extent in x (minutes, or thousands of requests)


def judge_trend(
    xs: Sequence[float],
    ys: Sequence[float],
    *,
    limit: float,
    confidence: float,
    min_growth_mb: float,
    min_points: int,
    segments: Sequence[int] | None = None,
) -> TrendJudgement:
    """Judge a slope against limit.

    FAIL only when growth is established: the whole interval lies above limit AND the growth
    over the window (slope x span of xs) exceeds the noise floor, max(min_growth_mb,
    NOISE_SIGMAS x residual sigma). PASS only when the whole interval lies below limit.
    Anything else (too few points, an interval straddling the limit, growth within noise)
    is INCONCLUSIVE with span_ratio saying how much longer the window should be.
    """
    if len(xs) < min_points:
        return TrendJudgement(
            INCONCLUSIVE, None, None, min_growth_mb,
            f"only {len(xs)} samples in the window, need >= {min_points}",
            span_ratio=max(2.0, min_points / max(1, len(xs))),
        )  # fmt: skip
    try:
        interval = sen_slope_interval(xs, ys, segments=segments, confidence=confidence)
    except ValueError as exc:
        return TrendJudgement(INCONCLUSIVE, None, None, min_growth_mb, str(exc), span_ratio=2.0)
    span = max(xs) - min(xs)
    growth = interval.slope * span
    judged = functools.partial(TrendJudgement, interval=interval, growth_mb=growth,
                               noise_floor_mb=0.0, span=span)  # fmt: skip
    floor = max(min_growth_mb, NOISE_SIGMAS * interval.residual_sigma)
    ci = f"{confidence:.0%} CI [{_num(interval.low)}, {_num(interval.high)}]"
    judged = functools.partial(judged, noise_floor_mb=floor)
    if interval.low > limit and growth > floor:
        return judged(result=FAIL, reason=f"{ci} above {limit:g}; growth {growth:.1f} MB")
    if interval.high < limit:
        return judged(result=PASS, reason=f"{ci} below {limit:g}")
    if interval.low > limit:
        ratio = floor / growth if growth > 0 else 2.0
        reason = f"{ci} above {limit:g} but growth {growth:.1f} MB is within noise {floor:.1f} MB"
        return judged(result=INCONCLUSIVE, reason=reason, span_ratio=max(1.5, ratio))
    gap = abs(interval.slope - limit)
    width = interval.half_width
    ratio = (width / gap) ** (1 / WIDTH_EXPONENT) if math.isfinite(width) and gap > 0 else math.inf
    reason = f"{ci} straddles {limit:g}"
    return judged(result=INCONCLUSIVE, reason=reason, span_ratio=max(1.5, ratio))


def suggested_seconds(duration_seconds: float, span_ratio: float | None) -> float | None:
    """A whole-minute run length whose window is span_ratio times this one: 2 min to 1 h."""
    if span_ratio is None:
        return None
    wanted = duration_seconds * span_ratio * 1.2  # 20 % margin: the ratio is an estimate
    if not math.isfinite(wanted) or wanted > MAX_SUGGESTED_SECONDS:
        return MAX_SUGGESTED_SECONDS
    return max(MIN_SUGGESTED_SECONDS, math.ceil(wanted / 60) * 60)


def _num(value: float) -> str:
    return f"{value:+.2f}" if math.isfinite(value) else ("-inf" if value < 0 else "+inf")
