"""The memory guard: samples the server's process tree every second (verdict.py judges)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from loadtests.cgroups import CgroupFiles, read_key

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
# Spend at most this long per tick reading USS (smaps_rollup); beyond it USS is read less often.
USS_BUDGET_SECONDS = 0.05


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
