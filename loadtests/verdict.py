"""The run's verdict: PASS, FAIL or INCONCLUSIVE from hard limits and two memory trends."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from loadtests.stats import LineFit, theil_sen
from loadtests.thresholds import LoadSettings
from loadtests.trend import FAIL, INCONCLUSIVE, PASS, TrendJudgement, judge_trend, suggested_seconds

if TYPE_CHECKING:
    from loadtests.guard import MemorySample
    from loadtests.locust_io import LocustResults

MIB = 1024 * 1024
# A slope from fewer post-warm-up samples than this is not evidence of anything.
MIN_WINDOW_SAMPLES = 8
# Growth per request needs this many requests inside the window to mean something.
MIN_WINDOW_REQUESTS = 200
# A worker missing from this many samples in a row is gone for good: a new segment starts.
MISSING_WORKER_TICKS = 5
# Process exit codes of `python -m loadtests.run` (2 is argparse's usage error).
EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_INCONCLUSIVE = 3
EXIT_INTERRUPTED = 130
EXIT_CODES = {PASS: EXIT_PASS, FAIL: EXIT_FAIL, INCONCLUSIVE: EXIT_INCONCLUSIVE}
SLOPE_CRITERION = "RSS slope after warm-up (Theil-Sen)"
GROWTH_CRITERION = "RSS growth per 1k requests"


@dataclass(frozen=True)
class RunFacts:
    """What the run measured; the verdict compares it with LoadSettings."""

    samples: Sequence[MemorySample]
    duration_seconds: float
    requests: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    rps: float
    health_checks: int
    health_failures: int
    health_max_ms: float | None
    request_counts: Sequence[tuple[float, int]] = ()  # (t_seconds, cumulative requests)
    load_start_seconds: float = 0.0  # when Locust started, on the samples' clock
    oom_kills: int = 0
    fatal_reason: str | None = None
    locust_exit_code: int | None = 0
    recycles: int = 0
    hit_rate: float | None = None

    @classmethod
    def from_locust(
        cls,
        results: LocustResults,
        samples: Sequence[MemorySample],
        *,
        duration_seconds: float,
        load_start_seconds: float,
        request_counts: Sequence[tuple[float, int]],
        oom_kills: int,
        fatal_reason: str | None,
        locust_exit_code: int | None,
        recycles: int,
        hit_rate: float | None,
    ) -> RunFacts:
        """The facts of a run: Locust's and the health poller's figures from `results`."""
        return cls(
            samples=samples,
            duration_seconds=duration_seconds,
            load_start_seconds=load_start_seconds,
            requests=results.requests,
            failures=results.failures,
            p50_ms=results.p50_ms,
            p95_ms=results.p95_ms,
            p99_ms=results.p99_ms,
            rps=results.rps,
            health_checks=results.health_checks,
            health_failures=results.health_failures,
            health_max_ms=results.health_max_ms,
            request_counts=request_counts,
            oom_kills=oom_kills,
            fatal_reason=fatal_reason,
            locust_exit_code=locust_exit_code,
            recycles=recycles,
            hit_rate=hit_rate,
        )


@dataclass(frozen=True)
class Criterion:
    """One line of the verdict table; result is PASS, FAIL or INCONCLUSIVE."""

    name: str
    value: float | None
    limit: float | None
    unit: str
    result: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        """True when the criterion passed."""
        return self.result == PASS


@dataclass(frozen=True)
class Verdict:
    """Every criterion, the fits behind the trends, and the overall result."""

    criteria: tuple[Criterion, ...]
    slope_fit: LineFit | None = None  # x: minutes since start, y: MB
    growth_fit: LineFit | None = None  # x: thousands of requests, y: MB
    window_start_seconds: float = 0.0
    info: dict[str, float | int | str | None] = field(default_factory=dict)
    trends: dict[str, TrendJudgement] = field(default_factory=dict)
    suggested_duration_seconds: float | None = None  # set when INCONCLUSIVE

    @property
    def result(self) -> str:
        """FAIL if any criterion failed, else INCONCLUSIVE if any was, else PASS."""
        results = {c.result for c in self.criteria}
        return FAIL if FAIL in results else INCONCLUSIVE if INCONCLUSIVE in results else PASS

    @property
    def passed(self) -> bool:
        """True when every criterion passed."""
        return self.result == PASS

    @property
    def exit_code(self) -> int:
        """0 PASS, 1 FAIL, 3 INCONCLUSIVE."""
        return EXIT_CODES[self.result]


def _at_most(
    name: str, value: float | None, limit: float, unit: str, detail: str = ""
) -> Criterion:
    if value is None:
        return Criterion(name, None, limit, unit, FAIL, detail or "not measured")
    return Criterion(name, value, limit, unit, PASS if value <= limit else FAIL, detail)


def requests_at(counts: Sequence[tuple[float, int]], t: float) -> float:
    """Cumulative requests at t, linearly interpolated between Locust's per-second counts."""
    if not counts:
        return 0.0
    if t <= counts[0][0]:
        return float(counts[0][1]) if t == counts[0][0] else 0.0
    for (t0, c0), (t1, c1) in itertools.pairwise(counts):
        if t0 <= t <= t1:
            return c0 + (c1 - c0) * ((t - t0) / (t1 - t0) if t1 > t0 else 1.0)
    return float(counts[-1][1])


def worker_segments(samples: Sequence[MemorySample]) -> list[int | None]:
    """One label per sample: a new segment starts whenever a worker pid never seen appears.

    A recycle swaps a grown worker for a fresh one: total RSS steps down (or up, while both
    live) by several MB. The trend is fitted within segments only, so the step itself adds no
    slope. A sample missing a worker of its segment (the old one gone, its successor not yet
    there, or a worker unreadable for one tick) is transitional: labelled None and left out.
    A missing worker that stays missing for MISSING_WORKER_TICKS samples opens a new segment.
    """
    labels: list[int | None] = []
    seen: set[int] = set()
    current: frozenset[int] | None = None
    label, missing = 0, 0
    for sample in samples:
        pids = frozenset(sample.worker_rss_bytes)
        is_new = bool(pids - seen)
        seen |= pids
        if current is None or pids == current:
            current, missing = pids, 0
        elif is_new or missing + 1 >= MISSING_WORKER_TICKS:
            current, missing, label = pids, 0, label + 1
        else:
            missing += 1
            labels.append(None)
            continue
        labels.append(label)
    return labels


def per_worker_slopes(samples: Sequence[MemorySample], since: float) -> dict[int, float]:
    """Theil-Sen MB/min of each worker's own RSS after `since` (workers with >= 8 samples).

    Reported next to the tree's slope: a recycled worker's series simply ends and its
    successor's begins, so neither carries the recycle's step.
    """
    series: dict[int, list[tuple[float, float]]] = {}
    for sample in samples:
        if sample.t_seconds >= since:
            for pid, rss in sample.worker_rss_bytes.items():
                series.setdefault(pid, []).append((sample.t_seconds / 60, rss / MIB))
    return {
        pid: round(theil_sen([x for x, _ in points], [y for _, y in points]).slope, 3)
        for pid, points in series.items()
        if len(points) >= MIN_WINDOW_SAMPLES and len({x for x, _ in points}) > 1
    }


def settled_window(
    samples: Sequence[MemorySample], load_start: float, window_start: float, settle_seconds: float
) -> tuple[list[MemorySample], list[int]]:
    """The window's samples and segment labels, leaving out transitional samples and the first
    settle_seconds of every segment that began after the load started.

    A recycled worker starts with empty caches and refills them: bounded growth, the same
    warm-up the run itself gets. Segments that began before the load (workers still starting)
    are covered by the run's own warm-up.
    """
    labels = worker_segments(samples)
    starts: dict[int, float] = {}
    for sample, label in zip(samples, labels, strict=True):
        if label is not None:
            starts.setdefault(label, sample.t_seconds)
    window: list[MemorySample] = []
    kept: list[int] = []
    for sample, label in zip(samples, labels, strict=True):
        if label is None or sample.t_seconds < window_start:
            continue
        began = starts[label]
        if began > load_start and sample.t_seconds - began < settle_seconds:
            continue
        window.append(sample)
        kept.append(label)
    return window, kept


def _fit(trend: TrendJudgement, xs: Sequence[float], ys: Sequence[float]) -> LineFit | None:
    if trend.interval is None:
        return None
    slope = trend.interval.slope
    intercept = float(np.median(np.asarray(ys) - slope * np.asarray(xs)))
    return LineFit(slope, intercept, trend.interval.points, trend.interval.pairs)


def _trend_criterion(name: str, unit: str, limit: float, trend: TrendJudgement) -> Criterion:
    value = trend.interval.slope if trend.interval else None
    return Criterion(name, value, limit, unit, trend.result, trend.reason)


def judge(facts: RunFacts, limits: LoadSettings) -> Verdict:
    """Compare the facts with the limits: hard criteria pass or fail, trends may be undecided."""
    samples = list(facts.samples)
    peak_mb = max((s.total_rss_bytes for s in samples), default=0) / MIB if samples else None
    window_start = facts.load_start_seconds + limits.warmup_fraction * facts.duration_seconds
    window, labels = settled_window(
        samples, facts.load_start_seconds, window_start, limits.recycle_settle_seconds
    )
    alive = facts.fatal_reason is None and facts.oom_kills == 0
    criteria = [
        Criterion(
            "server alive, no OOM kill",
            float(facts.oom_kills),
            0.0,
            "kills",
            PASS if alive else FAIL,
            facts.fatal_reason or "",
        ),
        _at_most("peak total RSS", peak_mb, limits.max_rss_mb, "MB"),
    ]
    mb = [s.total_rss_bytes / MIB for s in window]
    minutes = [s.t_seconds / 60 for s in window]
    common = {"confidence": limits.confidence, "min_growth_mb": limits.min_growth_mb}
    slope = judge_trend(minutes, mb, limit=limits.max_slope_mb_per_min,
                        min_points=MIN_WINDOW_SAMPLES, segments=labels, **common)  # fmt: skip
    criteria.append(_trend_criterion(SLOPE_CRITERION, "MB/min", limits.max_slope_mb_per_min, slope))
    counts = [requests_at(facts.request_counts, s.t_seconds) / 1000 for s in window]
    served = (counts[-1] - counts[0]) * 1000 if counts else 0.0
    if served >= MIN_WINDOW_REQUESTS:
        growth = judge_trend(counts, mb, limit=limits.max_growth_mb_per_1k_requests,
                             min_points=MIN_WINDOW_SAMPLES, segments=labels, **common)  # fmt: skip
    else:
        reason = f"{served:.0f} requests in the window, need >= {MIN_WINDOW_REQUESTS}"
        growth = TrendJudgement(INCONCLUSIVE, None, None, limits.min_growth_mb, reason, 2.0)
    criteria.append(
        _trend_criterion(
            GROWTH_CRITERION, "MB/1k req", limits.max_growth_mb_per_1k_requests, growth
        )
    )
    ratio = facts.failures / facts.requests if facts.requests else None
    criteria += [
        _at_most("error ratio", ratio, limits.max_error_ratio, "ratio",
                 f"{facts.failures}/{facts.requests} failed" if facts.requests else "no requests"),
        _at_most("p95 latency", facts.p95_ms, limits.max_p95_ms, "ms"),
        Criterion("health poller failures", float(facts.health_failures), 0.0, "checks",
                  PASS if facts.health_checks > 0 and facts.health_failures == 0 else FAIL,
                  f"{facts.health_checks} checks" if facts.health_checks else "no check ran"),
        _at_most("slowest health check", facts.health_max_ms, limits.max_health_ms, "ms"),
        Criterion("Locust exit code",
                  None if facts.locust_exit_code is None else float(facts.locust_exit_code),
                  0.0, "", PASS if facts.locust_exit_code == 0 else FAIL,
                  "non-zero: Locust saw failures or errors" if facts.locust_exit_code else ""),
    ]  # fmt: skip
    trends = {SLOPE_CRITERION: slope, GROWTH_CRITERION: growth}
    uss = [s.total_uss_bytes for s in samples if s.total_uss_bytes is not None]
    cgroup = [s.cgroup_usage_bytes for s in samples if s.cgroup_usage_bytes is not None]
    info: dict[str, float | int | str | None] = {
        "recycles": facts.recycles,
        "window_segments": len(set(labels)),
        "hit_rate": facts.hit_rate,
        "requests": facts.requests,
        "rps": facts.rps,
        "p50_ms": facts.p50_ms,
        "p95_ms": facts.p95_ms,
        "p99_ms": facts.p99_ms,
        "peak_uss_mb": max(uss) / MIB if uss else None,
        "peak_cgroup_mb": max(cgroup) / MIB if cgroup else None,
        "max_workers": max((s.workers for s in samples), default=0),
    }
    undecided = [t.span_ratio for t in trends.values() if t.result == INCONCLUSIVE]
    suggestion = (
        suggested_seconds(facts.duration_seconds, max(r or 2.0 for r in undecided))
        if undecided
        else None
    )
    return Verdict(
        tuple(criteria),
        _fit(slope, minutes, mb),
        _fit(growth, counts, mb),
        window_start,
        info,
        trends,
        suggestion,
    )


def _value(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def advice(verdict: Verdict) -> str:
    """What the overall result means and, when INCONCLUSIVE, how long to run instead."""
    result = verdict.result
    if result == PASS:
        return "VERDICT: PASS (exit 0): memory bounded; every limit held with confidence."
    if result == FAIL:
        failed = ", ".join(c.name for c in verdict.criteria if c.result == FAIL)
        return f"VERDICT: FAIL (exit 1): {failed}."
    seconds = verdict.suggested_duration_seconds or 0.0
    minutes = max(1, math.ceil(seconds / 60))
    capped = " (capped: the slope sits close to the limit)" if seconds >= 3600 else ""
    return (
        "VERDICT: INCONCLUSIVE (exit 3): no limit was broken, but the run was too short or too "
        "noisy to tell a bounded server from a slow leak.\n"
        f"next: run about {minutes} min instead: make loadtest DURATION={minutes}m{capped}"
    )


def format_table(verdict: Verdict) -> str:
    """The verdict as a fixed-width text table, one criterion a line, then the result."""
    rows = [("criterion", "value", "limit", "result", "detail")]
    for c in verdict.criteria:
        limit = "" if c.limit is None else f"<= {c.limit:g} {c.unit}".rstrip()
        rows.append((c.name, _value(c.value), limit, c.result, c.detail))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows]
    lines.insert(1, "-" * (sum(widths) + 8))
    lines.append("-" * (sum(widths) + 8))
    extras = [f"{k}={_fmt(v)}" for k, v in verdict.info.items()]
    lines.append("reported: " + ", ".join(extras))
    lines.append(
        "INCONCLUSIVE = the interval of a slope straddles its limit, or its growth is within "
        "noise: not a failure, not a pass; run longer."
    )
    lines.append(advice(verdict))
    return "\n".join(line.rstrip() for line in lines)


def _fmt(value: float | int | str | None) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
