"""Memory cleanup service: one asyncio task per worker that samples memory and acts by level."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from memsafe._checks import _check_number
from memsafe._clock import Clock
from memsafe._types import CleanupStats
from memsafe.probes import (
    ContainerMemory,
    ReleaseResult,
    container_memory,
    process_rss_bytes,
    release_memory_async,
)

logger = logging.getLogger(__name__)

Level = Literal["normal", "soft", "hard", "recycle"]
LEVELS: Final[tuple[Level, ...]] = ("normal", "soft", "hard", "recycle")
MIB: Final = 1024 * 1024
YOUNG_GENERATION: Final = 1
FULL_GENERATION: Final = 2

ReleaseFunc = Callable[..., Awaitable[ReleaseResult]]


class CacheManagerLike(Protocol):
    """What the cleanup service needs from a cache manager (memsafe.manager.CacheManager)."""

    def expire_all(self) -> int: ...

    def shrink_all(self, fraction: float) -> int: ...


def _check_ordered(names: tuple[str, ...], config: CleanupConfig) -> None:
    """Raise unless the thresholds that are set grow strictly: soft < hard < recycle."""
    given = [(name, getattr(config, name)) for name in names if getattr(config, name) is not None]
    for (low_name, low), (high_name, high) in itertools.pairwise(given):
        if not low < high:
            msg = (
                f"thresholds must grow soft < hard < recycle: "
                f"{high_name}={high!r} must be > {low_name}={low!r}"
            )
            raise ValueError(msg)


@dataclass
class CleanupConfig:
    """Settings of a MemoryCleanupService, validated on construction.

    Thresholds are in MiB of this process's RSS (``*_limit_mb``) or a fraction of the
    container's memory limit compared with the container's usage (``*_fraction``); either,
    both or neither may be set per level, and the level is the highest one whose threshold
    is reached. A level drops only once memory falls ``hysteresis_mb`` below its threshold.

    Thread safety: a plain value object; do not mutate it while a service uses it.
    """

    interval_seconds: float = 30.0
    soft_limit_mb: float | None = None
    hard_limit_mb: float | None = None
    recycle_limit_mb: float | None = None
    soft_fraction: float | None = None
    hard_fraction: float | None = None
    recycle_fraction: float | None = None
    hysteresis_mb: float = 16.0
    min_full_gc_gap_seconds: float = 60.0
    periodic_gc_seconds: float | None = None
    shrink_fraction: float = 0.5
    max_events: int = 256
    shutdown_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        for name, (low, high, low_open, is_optional) in _RANGES.items():
            value = getattr(self, name)
            if value is not None or not is_optional:
                _check_number(name, value, low=low, high=high, low_open=low_open)
        if isinstance(self.max_events, bool) or not isinstance(self.max_events, int):
            msg = f"max_events must be an int in [1, 1000000], got {self.max_events!r}"
            raise TypeError(msg)
        for suffix in ("limit_mb", "fraction"):
            _check_ordered(tuple(f"{level}_{suffix}" for level in LEVELS[1:]), self)


# Allowed ranges: field -> (low, high, is the low end excluded, may be None).
_RANGES: Final[dict[str, tuple[float, float, bool, bool]]] = {
    "interval_seconds": (0, 86400, True, False),
    "soft_limit_mb": (0, 1024 * 1024, True, True),
    "hard_limit_mb": (0, 1024 * 1024, True, True),
    "recycle_limit_mb": (0, 1024 * 1024, True, True),
    "soft_fraction": (0, 1, True, True),
    "hard_fraction": (0, 1, True, True),
    "recycle_fraction": (0, 1, True, True),
    "hysteresis_mb": (0, 1024 * 1024, False, False),
    "min_full_gc_gap_seconds": (0, 86400, False, False),
    "periodic_gc_seconds": (0, 86400, True, True),
    "shrink_fraction": (0, 1, True, False),
    "max_events": (1, 1_000_000, False, False),
    "shutdown_timeout_seconds": (0, 3600, True, False),
}


@dataclass(frozen=True)
class CleanupEvent:
    """One cleanup pass: when, at which level, the memory it saw and freed, and what it did.

    Thread safety: immutable.
    """

    wall_time: float
    level: Level
    rss_before_bytes: int
    rss_after_bytes: int
    freed_bytes: int
    duration_seconds: float
    actions: tuple[str, ...] = ()
    error: str | None = None
    container_usage_bytes: int | None = None
    container_limit_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["actions"] = list(self.actions)
        return data


@dataclass
class _Sample:
    rss_bytes: int
    container: ContainerMemory | None


@dataclass
class _PassResult:
    actions: list[str] = field(default_factory=list)


class MemoryCleanupService:
    """Samples memory every ``interval_seconds`` and frees what it can, harder as memory grows.

    Levels: ``normal`` sweeps expired cache entries (and runs the periodic gc when
    configured); ``soft`` also collects the young generations and trims the malloc heap;
    ``hard`` shrinks every cache by ``shrink_fraction``, runs a full collection (at most one
    per ``min_full_gc_gap_seconds``) and trims; ``recycle`` does what ``hard`` does and asks
    this worker, once, to exit gracefully so the master forks a fresh one. gc and trim run
    in a thread, off the event loop. Every pass that does something is a CleanupEvent in a
    bounded log that :meth:`stats` exposes; a failing pass is logged and counted, and the
    loop goes on.

    Thread safety: drive it from one event loop (passes are serialized by an asyncio.Lock);
    ``stats()`` and ``level`` may be read from any thread.
    """

    def __init__(
        self,
        config: CleanupConfig | None = None,
        *,
        manager: CacheManagerLike | None = None,
        rss_probe: Callable[[], int] = process_rss_bytes,
        container_probe: Callable[[], ContainerMemory] | None = container_memory,
        clock: Clock = time.monotonic,
        recycle: Callable[[str], object] | None = None,
        release: ReleaseFunc = release_memory_async,
        wall_clock: Clock = time.time,
    ) -> None:
        if manager is None:
            from memsafe.manager import cache_manager

            manager = cache_manager
        if recycle is None:
            from memsafe.recycle import recycle_worker

            recycle = recycle_worker
        self._config = config if config is not None else CleanupConfig()
        self._manager = manager
        self._rss_probe = rss_probe
        self._container_probe = container_probe
        self._clock = clock
        self._wall_clock = wall_clock
        self._recycle = recycle
        self._release = release
        self._events: deque[CleanupEvent] = deque(maxlen=self._config.max_events)
        self._level: Level = "normal"
        self._passes = 0
        self._failures = 0
        self._full_gcs = 0
        self._last_full_gc: float | None = None
        self._started_at = clock()
        self._is_recycle_requested = False
        self._last_rss_bytes: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop_event = asyncio.Event()
        self._pass_lock = asyncio.Lock()

    @property
    def config(self) -> CleanupConfig:
        """The settings this service runs with."""
        return self._config

    @property
    def level(self) -> Level:
        """The memory level of the last pass: "normal", "soft", "hard" or "recycle"."""
        return self._level

    @property
    def is_running(self) -> bool:
        """True while the background task is alive."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the background task on the running event loop (a second call does nothing).

        Raises:
            RuntimeError: when no event loop is running in this thread, or when a task that
                `stop()` abandoned (it ignored cancellation) still runs: never two loops.
        """
        if self.is_running:
            if not self._stop_event.is_set():
                return
            msg = (
                "MemoryCleanupService.start(): the previous cleanup task ignored cancellation "
                "and is still running; not starting a second loop"
            )
            raise RuntimeError(msg)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            msg = "MemoryCleanupService.start() needs a running event loop (call it in a lifespan)"
            raise RuntimeError(msg) from None
        self._stop_event = asyncio.Event()
        self._task = loop.create_task(self._run_forever(self._stop_event), name="memsafe-cleanup")
        logger.info(
            "memory cleanup started: every %.1fs, limits MB soft=%s hard=%s recycle=%s",
            self._config.interval_seconds,
            self._config.soft_limit_mb,
            self._config.hard_limit_mb,
            self._config.recycle_limit_mb,
        )

    async def stop(self) -> None:
        """Stop the task, within ``shutdown_timeout_seconds`` even when a pass is running.

        A running pass gets half the budget to finish, then it is cancelled (a gc or trim
        already running in its thread completes on its own, unobserved). A task that ignores
        cancellation is abandoned but kept: `is_running` stays True until it ends.
        """
        task = self._task
        if task is None:
            return
        self._stop_event.set()
        half = self._config.shutdown_timeout_seconds / 2
        done, _ = await asyncio.wait({task}, timeout=half)
        if not done:
            logger.warning("memory cleanup pass still running at shutdown; cancelling it")
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=half)
        if not done:
            logger.error("memory cleanup task ignored cancellation; abandoning it still running")
            return
        if self._task is task:
            self._task = None
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover
            logger.error("memory cleanup task ended with %r", task.exception())
        logger.info("memory cleanup stopped after %d passes", self._passes)

    async def _run_forever(self, stop_event: asyncio.Event) -> None:
        """Run a pass every interval until ``stop_event`` is set."""
        while not stop_event.is_set():
            try:
                await asyncio.wait_for(stop_event.wait(), timeout=self._config.interval_seconds)
            except TimeoutError:
                await self.run_once()

    async def run_once(self, force_level: Level | None = None) -> CleanupEvent:
        """Sample memory and run one pass now; ``force_level`` acts at that level instead.

        The tracked level still follows the measured memory. Errors are logged, counted and
        returned in the event's ``error``, never raised.

        Raises:
            ValueError: when ``force_level`` is not one of the four levels.
        """
        if force_level is not None and force_level not in LEVELS:
            msg = f"force_level must be one of {LEVELS} or None, got {force_level!r}"
            raise ValueError(msg)
        async with self._pass_lock:
            return await self._pass(force_level)

    async def _pass(self, force_level: Level | None) -> CleanupEvent:
        started = self._clock()
        wall = self._wall_clock()
        result = _PassResult()
        sample: _Sample | None = None
        level: Level = force_level or self._level
        error: str | None = None
        rss_after: int | None = None
        self._passes += 1
        try:
            sample = self._sample()
            measured = self._pick_level(sample)
            if measured != self._level:
                self._log_level_change(measured, sample)
                self._level = measured
            level = force_level or measured
            await self._act(level, sample, result)
            rss_after = self._rss_probe()
        except Exception as exc:  # a failing pass must never end the loop
            self._failures += 1
            error = f"{type(exc).__name__}: {exc}"
            logger.exception("memory cleanup pass failed at level %s", level)
        rss_before = sample.rss_bytes if sample is not None else 0
        if rss_after is None:
            rss_after = rss_before
        self._last_rss_bytes = rss_after
        container = sample.container if sample is not None else None
        event = CleanupEvent(
            wall_time=wall,
            level=level,
            rss_before_bytes=rss_before,
            rss_after_bytes=rss_after,
            freed_bytes=max(0, rss_before - rss_after),
            duration_seconds=max(0.0, self._clock() - started),
            actions=tuple(result.actions),
            error=error,
            container_usage_bytes=container.usage_bytes if container else None,
            container_limit_bytes=container.limit_bytes if container else None,
        )
        if force_level is not None or error is not None or _is_eventful(event):
            self._events.append(event)
        return event

    def _sample(self) -> _Sample:
        container = self._container_probe() if self._container_probe is not None else None
        return _Sample(rss_bytes=self._rss_probe(), container=container)

    def _is_over(self, level: Level, sample: _Sample, margin_bytes: float) -> bool:
        """True when ``sample`` reaches ``level``'s MB or fraction threshold minus the margin."""
        config = self._config
        limit_mb = getattr(config, f"{level}_limit_mb")
        if limit_mb is not None and sample.rss_bytes >= limit_mb * MIB - margin_bytes:
            return True
        fraction = getattr(config, f"{level}_fraction")
        container = sample.container
        if fraction is None or container is None or not container.limit_bytes:
            return False
        used = container.usage_bytes if container.usage_bytes is not None else sample.rss_bytes
        return bool(used >= fraction * container.limit_bytes - margin_bytes)

    def _pick_level(self, sample: _Sample) -> Level:
        """The highest level reached; a level is kept until memory is hysteresis below it."""
        margin = self._config.hysteresis_mb * MIB
        current = LEVELS.index(self._level)
        for index in range(len(LEVELS) - 1, 0, -1):
            level = LEVELS[index]
            if self._is_over(level, sample, 0.0):
                return level
            if index <= current and self._is_over(level, sample, margin):
                return level
        return "normal"

    def _log_level_change(self, new: Level, sample: _Sample) -> None:
        rising = LEVELS.index(new) > LEVELS.index(self._level)
        container = sample.container
        logger.log(
            logging.WARNING if rising else logging.INFO,
            "memory level %s -> %s: rss %.1f MiB, container %s/%s MiB",
            self._level,
            new,
            sample.rss_bytes / MIB,
            _mib(container.usage_bytes if container else None),
            _mib(container.limit_bytes if container else None),
        )

    async def _act(self, level: Level, sample: _Sample, result: _PassResult) -> None:
        """Run the actions of ``level``; every level sweeps expired entries first."""
        expired = self._manager.expire_all()
        result.actions.append(f"expired {expired} entries")
        if level in ("hard", "recycle"):
            shrunk = self._manager.shrink_all(self._config.shrink_fraction)
            result.actions.append(f"shrank caches by {self._config.shrink_fraction:g}: {shrunk}")
        now = self._clock()
        is_full_due = level in ("hard", "recycle") or self._is_periodic_gc_due(now)
        if is_full_due and self._is_full_gc_allowed(now):
            await self._release_and_record(FULL_GENERATION, result)
            self._last_full_gc = now
            self._full_gcs += 1
        elif level != "normal":
            if is_full_due:
                result.actions.append(
                    f"full gc skipped: last one under {self._config.min_full_gc_gap_seconds:g}s ago"
                )
            await self._release_and_record(YOUNG_GENERATION, result)
        if level == "recycle" and not self._is_recycle_requested:
            self._is_recycle_requested = True
            reason = f"rss {sample.rss_bytes / MIB:.1f} MiB reached the recycle level"
            result.actions.append("recycle requested")
            self._recycle(reason)

    def _is_periodic_gc_due(self, now: float) -> bool:
        period = self._config.periodic_gc_seconds
        if period is None:
            return False
        last = self._last_full_gc if self._last_full_gc is not None else self._started_at
        return now - last >= period

    def _is_full_gc_allowed(self, now: float) -> bool:
        last = self._last_full_gc
        return last is None or now - last >= self._config.min_full_gc_gap_seconds

    async def _release_and_record(self, generation: int, result: _PassResult) -> None:
        released = await self._release(generation, trim=True)
        result.actions.append(
            f"gc gen {generation}: {released.collected} objects, "
            f"trim {'done' if released.trimmed else 'unavailable'}, "
            f"{released.freed_bytes / MIB:.1f} MiB freed in {released.seconds * 1000:.1f} ms"
        )

    def stats(self) -> CleanupStats:
        """Level, counts of passes, failures and full gcs, and the recent events (oldest first)."""
        events = list(self._events)
        return {
            "level": self._level,
            "is_running": self.is_running,
            "passes": self._passes,
            "failures": self._failures,
            "full_gcs": self._full_gcs,
            "is_recycle_requested": self._is_recycle_requested,
            "last_rss_bytes": self._last_rss_bytes,
            "max_events": self._config.max_events,
            "events": [event.as_dict() for event in events],
            "config": dataclasses.asdict(self._config),
        }


def _is_eventful(event: CleanupEvent) -> bool:
    """False for a quiet normal pass: nothing expired and nothing else done."""
    return event.level != "normal" or event.actions != ("expired 0 entries",)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f}"
