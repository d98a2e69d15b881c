"""Type variables and shared typed shapes of memsafe's caches."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol, TypedDict, TypeVar

K = TypeVar("K", bound=Hashable)
"""Key type of a cache or mapping."""

V = TypeVar("V")
"""Value type of a cache or mapping."""

T = TypeVar("T")
"""Type of a caller-supplied default."""


class LockLike(Protocol):
    """What a cache needs of an injected lock: a context manager (`threading.RLock`, `Lock`).

    When it also has `acquire()`/`release()`, hot paths call those directly instead.
    """

    def __enter__(self) -> Any: ...
    def __exit__(self, exc_type: Any, exc: Any, tb: Any, /) -> Any: ...


class CacheStats(TypedDict):
    """Counters and sizes of one cache, as returned by `LRUCache.stats()`."""

    name: str
    size: int
    max_size: int
    bytes: int
    max_bytes: int | None
    hits: int
    misses: int
    evictions: int
    expirations: int
    rejections: int
    hit_rate: float


class CleanupStats(TypedDict):
    """State of one MemoryCleanupService, as returned by `MemoryCleanupService.stats()`."""

    level: str
    is_running: bool
    passes: int
    failures: int
    full_gcs: int
    is_recycle_requested: bool
    last_rss_bytes: int | None
    max_events: int
    events: list[dict[str, Any]]
    config: dict[str, Any]


class RecyclerStats(TypedDict):
    """State of one worker's RSSRecycler, as returned by `RSSRecycler.stats()`."""

    pid: int | None
    max_worker_rss_mb: float | None
    check_interval_seconds: float | None
    requests: int
    checks: int
    boot_rss_bytes: int | None
    last_rss_bytes: int | None
    is_recycling: bool
    is_disabled: bool
    is_draining: bool
    overlap_max_workers: int
