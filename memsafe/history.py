"""A bounded per-process history of memory samples and events, for charts of memory over time."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

from memsafe.probes import ContainerMemory, container_memory, process_rss_bytes

DEFAULT_MAX_SAMPLES = 360  # one hour at one sample every 10 s
DEFAULT_MAX_EVENTS = 100
DEFAULT_MAX_CACHES = 16
MAX_DETAIL_CHARS = 200


class CacheStatsLike(Protocol):
    """What a sample reads from one cache's stats: memsafe's CacheStats has these keys."""

    def __getitem__(self, key: str, /) -> Any: ...


class CleanupLike(Protocol):
    """What a sample reads from a cleanup service: memsafe's MemoryCleanupService fits."""

    @property
    def level(self) -> str: ...

    def stats(self) -> Mapping[str, Any]: ...


class ManagerLike(Protocol):
    """What a sample reads from a cache manager: memsafe's CacheManager fits."""

    def get_cache_stats(self) -> Any: ...


@dataclass(frozen=True)
class HistoryEvent:
    """Something that happened to the process: a cleanup pass, a start, a recycle.

    Thread safety: immutable.
    """

    wall_time: float
    kind: str
    detail: str = ""


class CacheSeries(TypedDict):
    """One cache's columns: entries, bytes, and the hit rate within each interval (None: idle)."""

    entries: list[int | None]
    bytes: list[int | None]
    hit_rate: list[float | None]


class HistoryData(TypedDict):
    """A history as JSON-ready columns: one list per measure, aligned with ``wall_time``."""

    max_samples: int
    max_events: int
    dropped_samples: int
    dropped_events: int
    wall_time: list[float]
    rss_bytes: list[int]
    container_usage_bytes: list[int | None]
    container_limit_bytes: int | None
    level: list[str]
    caches: dict[str, CacheSeries]
    events: list[dict[str, Any]]


@dataclass(frozen=True)
class _Sample:
    wall_time: float
    rss_bytes: int
    container_usage_bytes: int | None
    level: str
    # name -> (entries, bytes, hits, misses)
    caches: tuple[tuple[str, int, int, int, int], ...]


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        msg = f"{name} must be an int in [1, 1000000], got {value!r}"
        raise ValueError(msg)
    return value


class MemoryHistory:
    """The last ``max_samples`` memory samples and ``max_events`` events of this process.

    Call :meth:`record` every N seconds (the app does it from one asyncio task); each call
    keeps RSS, the cgroup's usage (None outside a container), every cache's entries, bytes
    and cumulative hits/misses (the first ``max_caches`` caches by name), and the cleanup
    level; new cleanup passes that acted become events. Older samples and events drop out
    first and are counted. :meth:`as_dict` returns columns ready for JSON and charts, with
    each cache's hit rate computed per interval (so a cold scan shows as a dip, not a slow
    drift of a lifetime average).

    Thread safety: one lock guards the deques, so ``add_event`` and ``as_dict`` may run on any
    thread; call ``record`` from one thread or task at a time (it remembers the last event seen).
    """

    def __init__(
        self,
        *,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_caches: int = DEFAULT_MAX_CACHES,
        rss_probe: Callable[[], int] = process_rss_bytes,
        container_probe: Callable[[], ContainerMemory] | None = container_memory,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_samples = _check_count("max_samples", max_samples)
        self.max_events = _check_count("max_events", max_events)
        self.max_caches = _check_count("max_caches", max_caches)
        self._rss_probe = rss_probe
        self._container_probe = container_probe
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._samples: deque[_Sample] = deque(maxlen=self.max_samples)
        self._events: deque[HistoryEvent] = deque(maxlen=self.max_events)
        self._dropped_samples = 0
        self._dropped_events = 0
        self._container_limit: int | None = None
        self._last_cleanup_time = float("-inf")

    def add_event(self, kind: str, detail: str = "", wall_time: float | None = None) -> None:
        """Record an event now (or at ``wall_time``); ``detail`` is cut to 200 characters."""
        when = self._wall_clock() if wall_time is None else wall_time
        event = HistoryEvent(when, kind, detail[:MAX_DETAIL_CHARS])
        with self._lock:
            if len(self._events) == self.max_events:
                self._dropped_events += 1
            self._events.append(event)

    def record(
        self, manager: ManagerLike | None = None, cleanup: CleanupLike | None = None
    ) -> None:
        """Take one sample now from the probes, ``manager``'s caches and ``cleanup``'s level."""
        rss = self._rss_probe()
        container = self._container_probe() if self._container_probe is not None else None
        caches: list[tuple[str, int, int, int, int]] = []
        if manager is not None:
            stats: Mapping[str, CacheStatsLike] = manager.get_cache_stats()["caches"]
            for name in sorted(stats)[: self.max_caches]:
                s = stats[name]
                caches.append((name, int(s["size"]), int(s["bytes"]), s["hits"], s["misses"]))
        level = "normal"
        if cleanup is not None:
            level = cleanup.level
            self._take_cleanup_events(cleanup)
        sample = _Sample(
            wall_time=self._wall_clock(),
            rss_bytes=rss,
            container_usage_bytes=container.usage_bytes if container is not None else None,
            level=level,
            caches=tuple(caches),
        )
        with self._lock:
            if container is not None:
                self._container_limit = container.limit_bytes
            if len(self._samples) == self.max_samples:
                self._dropped_samples += 1
            self._samples.append(sample)

    def _take_cleanup_events(self, cleanup: CleanupLike) -> None:
        """Passes that did something, or changed the level, since the last sample become events."""
        newest = self._last_cleanup_time
        previous_level: str | None = None
        for event in cleanup.stats().get("events", []):
            when = float(event.get("wall_time", 0.0))
            level = str(event.get("level", "normal"))
            is_change = previous_level is not None and level != previous_level
            previous_level = level
            if when <= self._last_cleanup_time:
                continue
            newest = max(newest, when)
            if event.get("actions") or event.get("error") or is_change or level != "normal":
                freed = int(event.get("freed_bytes", 0)) / (1024 * 1024)
                detail = f"{level}: freed {freed:.1f} MiB"
                if event.get("error"):
                    detail += f", error {event['error']}"
                self.add_event("cleanup", detail, wall_time=when)
        self._last_cleanup_time = newest

    def as_dict(self) -> HistoryData:
        """The samples as aligned columns and the events oldest first, ready for JSON."""
        with self._lock:
            samples = list(self._samples)
            events = list(self._events)
            dropped_samples, dropped_events = self._dropped_samples, self._dropped_events
            limit = self._container_limit
        caches: dict[str, CacheSeries] = {}
        names = sorted({entry[0] for sample in samples for entry in sample.caches})
        for name in names:
            caches[name] = CacheSeries(entries=[], bytes=[], hit_rate=[])
        previous: dict[str, tuple[int, int]] = {}
        for sample in samples:
            seen = {entry[0]: entry for entry in sample.caches}
            for name in names:
                series = caches[name]
                entry = seen.get(name)
                if entry is None:
                    series["entries"].append(None)
                    series["bytes"].append(None)
                    series["hit_rate"].append(None)
                    continue
                _, entries, size, hits, misses = entry
                series["entries"].append(entries)
                series["bytes"].append(size)
                last_hits, last_misses = previous.get(name, (0, 0))
                if hits < last_hits or misses < last_misses:  # counters reset (cache rebuilt)
                    last_hits = last_misses = 0
                lookups = (hits - last_hits) + (misses - last_misses)
                series["hit_rate"].append(
                    round((hits - last_hits) / lookups, 4) if lookups else None
                )
                previous[name] = (hits, misses)
        return HistoryData(
            max_samples=self.max_samples,
            max_events=self.max_events,
            dropped_samples=dropped_samples,
            dropped_events=dropped_events,
            wall_time=[round(s.wall_time, 3) for s in samples],
            rss_bytes=[s.rss_bytes for s in samples],
            container_usage_bytes=[s.container_usage_bytes for s in samples],
            container_limit_bytes=limit,
            level=[s.level for s in samples],
            caches=caches,
            events=[
                {"wall_time": round(e.wall_time, 3), "kind": e.kind, "detail": e.detail}
                for e in events
            ],
        )

    def __len__(self) -> int:
        with self._lock:
            return len(self._samples)
