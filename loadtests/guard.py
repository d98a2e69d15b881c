"""The memory guard: samples the server's process tree every second and judges the run."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from loadtests.cgroups import CgroupFiles, read_key
from loadtests.stats import LineFit, theil_sen
from loadtests.thresholds import LoadSettings

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
# Spend at most this long per tick reading USS (smaps_rollup); beyond it USS is read less often.
USS_BUDGET_SECONDS = 0.05
# A slope from fewer post-warm-up samples than this is not evidence of anything.
MIN_WINDOW_SAMPLES = 8
# Growth per request needs this many requests inside the window to mean something.
MIN_WINDOW_REQUESTS = 200


@dataclass(frozen=True)
class MemorySample:
    """One second of the server tree: totals plus each process's RSS."""

    t_seconds: float  # since the sampler started
    epoch_seconds: float
    total_rss_bytes: int
    master_rss_bytes: int
    worker_rss_bytes: dict[int, int]  # pid -> RSS
    total_uss_bytes: int | None  # None on ticks that skipped USS
    cgroup_usage_bytes: int | None  # only when the server has a cgroup to itself
    recycles: int  # cumulative worker exits seen while the master lived

    @property
    def workers(self) -> int:
        """Number of live workers at this tick."""
        return len(self.worker_rss_bytes)


class TreeSampler:
    """Samples RSS (and USS where affordable) of a root process and all its descendants.

    Thread safety: start() runs sample() on one daemon thread; read samples, fatal_reason and
    recycles from any thread (they are replaced, never mutated in place).
    """

    def __init__(
        self,
        root_pid: int,
        *,
        is_alive: Callable[[], bool] | None = None,
        cgroup: CgroupFiles | None = None,
        interval_seconds: float = 1.0,
        is_uss_enabled: bool = True,
        on_fatal: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._root = psutil.Process(root_pid)
        self._is_alive = is_alive or self._root.is_running
        self._cgroup = cgroup
        self._interval = interval_seconds
        self._is_uss_enabled = is_uss_enabled
        self._on_fatal = on_fatal
        self._clock = clock
        self._start = clock()
        self._known_workers: set[int] = set()
        self._uss_skip = 0
        self._oom_base = cgroup.oom_kills() if cgroup else None
        self._limit_base = cgroup.limit_hits() if cgroup else None
        self._vmstat_oom_base = read_key(Path("/proc/vmstat"), "oom_kill")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples: list[MemorySample] = []
        self.recycles = 0
        self.oom_kills = 0
        self.limit_hits = 0
        self.fatal_reason: str | None = None
        self.sample_seconds_max = 0.0

    def elapsed_seconds(self) -> float:
        """Seconds since the sampler was created: the clock of every sample's t_seconds."""
        return self._clock() - self._start

    # -- one tick -----------------------------------------------------------------------------
    def sample(self) -> MemorySample | None:
        """Take one sample; on a server death or OOM kill set fatal_reason and return None."""
        if self.fatal_reason is not None:
            return None
        started = time.perf_counter()
        if not self._is_alive():
            self._check_oom(had_exit=True)  # name the OOM killer when it was the cause
            if self.fatal_reason is None:
                self._fail("server died: the master process exited")
            return None
        try:
            master_rss = self._root.memory_info().rss
            children = self._root.children(recursive=True)
        except psutil.Error:
            self._fail("server died: the master process vanished")
            return None
        workers: dict[int, int] = {}
        procs: list[psutil.Process] = [self._root]
        for child in children:
            try:
                workers[child.pid] = child.memory_info().rss
                procs.append(child)
            except psutil.Error:
                continue  # exited between listing and reading: counted as gone below
        vanished = self._known_workers - workers.keys()
        self.recycles += len(vanished)
        self._known_workers = set(workers)
        self._check_oom(had_exit=bool(vanished))
        if self.fatal_reason is not None:
            return None
        uss = self._uss(procs)
        usage = self._cgroup.usage_bytes() if self._cgroup and self._cgroup.is_dedicated else None
        item = MemorySample(
            t_seconds=self._clock() - self._start,
            epoch_seconds=time.time(),
            total_rss_bytes=master_rss + sum(workers.values()),
            master_rss_bytes=master_rss,
            worker_rss_bytes=workers,
            total_uss_bytes=uss,
            cgroup_usage_bytes=usage,
            recycles=self.recycles,
        )
        self.samples = [*self.samples, item]
        self.sample_seconds_max = max(self.sample_seconds_max, time.perf_counter() - started)
        return item

    def _uss(self, procs: Sequence[psutil.Process]) -> int | None:
        if not self._is_uss_enabled:
            return None
        if self._uss_skip > 0:
            self._uss_skip -= 1
            return None
        started = time.perf_counter()
        total = 0
        try:
            for proc in procs:
                total += proc.memory_full_info().uss
        except (psutil.Error, AttributeError):
            return None
        cost = time.perf_counter() - started
        if cost > USS_BUDGET_SECONDS:
            self._uss_skip = int(cost / USS_BUDGET_SECONDS)
        return total

    def _check_oom(self, *, had_exit: bool) -> None:
        cgroup = self._cgroup
        if cgroup is not None and self._limit_base is not None:
            self.limit_hits = (cgroup.limit_hits() or 0) - self._limit_base
        if cgroup is not None and cgroup.is_dedicated and self._oom_base is not None:
            kills = (cgroup.oom_kills() or 0) - self._oom_base
        else:
            # A shared cgroup (or none): a kill counts only if a server process vanished with it.
            now = read_key(Path("/proc/vmstat"), "oom_kill")
            base = self._vmstat_oom_base
            kills = (now - base) if had_exit and now is not None and base is not None else 0
            if now is not None:
                self._vmstat_oom_base = now
            kills += self.oom_kills
        if kills > self.oom_kills:
            self.oom_kills = kills
            self._fail(f"OOM kill: {kills} server process(es) killed by the kernel OOM killer")

    def _fail(self, reason: str) -> None:
        self.fatal_reason = reason
        logger.error("guard: %s", reason)
        if self._on_fatal is not None:
            self._on_fatal(reason)

    # -- background thread --------------------------------------------------------------------
    def start(self) -> None:
        """Sample every interval on a daemon thread until stop() or a fatal event."""
        self._thread = threading.Thread(target=self._run, name="memory-guard", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_tick = self._clock() + self._interval  # the caller may have just sampled
        while not self._stop.wait(max(0.0, next_tick - self._clock())):
            if self.fatal_reason is not None:
                return
            try:
                self.sample()
            except Exception:  # a sampling bug must not kill the guard silently mid-run
                logger.exception("guard: sampling failed")
            next_tick += self._interval

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


# -- verdict ----------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class Criterion:
    """One line of the verdict table."""

    name: str
    value: float | None
    limit: float | None
    unit: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    """Every criterion, the fits behind the slopes, and the overall result."""

    criteria: tuple[Criterion, ...]
    slope_fit: LineFit | None = None  # x: minutes since start, y: MB
    growth_fit: LineFit | None = None  # x: thousands of requests, y: MB
    window_start_seconds: float = 0.0
    info: dict[str, float | int | str | None] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when every criterion passed."""
        return all(c.passed for c in self.criteria)


def _at_most(
    name: str, value: float | None, limit: float, unit: str, detail: str = ""
) -> Criterion:
    if value is None:
        return Criterion(name, None, limit, unit, False, detail or "not measured")
    return Criterion(name, value, limit, unit, value <= limit, detail)


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


def judge(facts: RunFacts, limits: LoadSettings) -> Verdict:
    """Compare the facts with the limits: one Criterion per requirement, all must pass."""
    samples = list(facts.samples)
    peak_mb = max((s.total_rss_bytes for s in samples), default=0) / MIB if samples else None
    window_start = facts.load_start_seconds + limits.warmup_fraction * facts.duration_seconds
    window = [s for s in samples if s.t_seconds >= window_start]
    criteria = [
        Criterion(
            "server alive, no OOM kill",
            float(facts.oom_kills),
            0.0,
            "kills",
            facts.fatal_reason is None and facts.oom_kills == 0,
            facts.fatal_reason or "",
        ),
        _at_most("peak total RSS", peak_mb, limits.max_rss_mb, "MB"),
    ]
    slope_fit: LineFit | None = None
    if len(window) >= MIN_WINDOW_SAMPLES:
        slope_fit = theil_sen(
            [s.t_seconds / 60 for s in window], [s.total_rss_bytes / MIB for s in window]
        )
        criteria.append(
            _at_most(
                "RSS slope after warm-up (Theil-Sen)",
                slope_fit.slope,
                limits.max_slope_mb_per_min,
                "MB/min",
                f"{len(window)} samples from t={window_start:.0f}s",
            )
        )
    else:
        detail = f"only {len(window)} samples after warm-up, need >= {MIN_WINDOW_SAMPLES}"
        criteria.append(
            _at_most(
                "RSS slope after warm-up (Theil-Sen)",
                None,
                limits.max_slope_mb_per_min,
                "MB/min",
                detail,
            )
        )
    growth_fit: LineFit | None = None
    counts = [requests_at(facts.request_counts, s.t_seconds) / 1000 for s in window]
    served = (counts[-1] - counts[0]) * 1000 if counts else 0.0
    if len(window) >= MIN_WINDOW_SAMPLES and served >= MIN_WINDOW_REQUESTS:
        growth_fit = theil_sen(counts, [s.total_rss_bytes / MIB for s in window])
        criteria.append(
            _at_most(
                "RSS growth per 1k requests",
                growth_fit.slope,
                limits.max_growth_mb_per_1k_requests,
                "MB/1k req",
                f"{served:.0f} requests in the window",
            )
        )
    else:
        detail = f"{served:.0f} requests in the window, need >= {MIN_WINDOW_REQUESTS}"
        criteria.append(
            _at_most(
                "RSS growth per 1k requests",
                None,
                limits.max_growth_mb_per_1k_requests,
                "MB/1k req",
                detail,
            )
        )
    ratio = facts.failures / facts.requests if facts.requests else None
    criteria += [
        _at_most(
            "error ratio",
            ratio,
            limits.max_error_ratio,
            "ratio",
            f"{facts.failures}/{facts.requests} failed" if facts.requests else "no requests",
        ),
        _at_most("p95 latency", facts.p95_ms, limits.max_p95_ms, "ms"),
        Criterion(
            "health poller failures",
            float(facts.health_failures),
            0.0,
            "checks",
            facts.health_checks > 0 and facts.health_failures == 0,
            f"{facts.health_checks} checks" if facts.health_checks else "no health check ran",
        ),
        _at_most("slowest health check", facts.health_max_ms, limits.max_health_ms, "ms"),
        Criterion(
            "Locust exit code",
            None if facts.locust_exit_code is None else float(facts.locust_exit_code),
            0.0,
            "",
            facts.locust_exit_code == 0,
            "non-zero: Locust saw failures or errors" if facts.locust_exit_code else "",
        ),
    ]
    uss = [s.total_uss_bytes for s in samples if s.total_uss_bytes is not None]
    cgroup = [s.cgroup_usage_bytes for s in samples if s.cgroup_usage_bytes is not None]
    info: dict[str, float | int | str | None] = {
        "recycles": facts.recycles,
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
    return Verdict(tuple(criteria), slope_fit, growth_fit, window_start, info)


def format_table(verdict: Verdict) -> str:
    """The verdict as a fixed-width text table, one criterion a line, then the result."""
    rows = [("criterion", "value", "limit", "result", "detail")]
    for c in verdict.criteria:
        value = (
            "n/a"
            if c.value is None
            else f"{c.value:.3g}"
            if abs(c.value) < 1000
            else f"{c.value:.0f}"
        )
        limit = "" if c.limit is None else f"<= {c.limit:g} {c.unit}".rstrip()
        rows.append((c.name, value, limit, "PASS" if c.passed else "FAIL", c.detail))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows]
    lines.insert(1, "-" * (sum(widths) + 8))
    lines.append("-" * (sum(widths) + 8))
    info = verdict.info
    extras = [f"{k}={_fmt(v)}" for k, v in info.items()]
    lines.append("reported: " + ", ".join(extras))
    lines.append("VERDICT: " + ("PASS (memory bounded)" if verdict.passed else "FAIL"))
    return "\n".join(line.rstrip() for line in lines)


def _fmt(value: float | int | str | None) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
