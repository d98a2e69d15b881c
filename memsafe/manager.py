"""Registry of named LRU caches with a total byte budget shared by all of them."""

from __future__ import annotations

import logging
import threading
from typing import Any, TypedDict

from memsafe._checks import _check_optional_positive_int, _check_str
from memsafe.cache import CacheStats, LRUCache

logger = logging.getLogger(__name__)


class CacheTotals(TypedDict):
    """Sums over every managed cache, as returned in `CacheManager.get_cache_stats()`."""

    size: int
    bytes: int
    hits: int
    misses: int
    evictions: int
    expirations: int
    hit_rate: float
    max_total_bytes: int | None


class ManagerStats(TypedDict):
    """Per-cache stats and their totals."""

    caches: dict[str, CacheStats]
    totals: CacheTotals


def _check_budget(max_total_bytes: int | None) -> int | None:
    return _check_optional_positive_int("max_total_bytes", max_total_bytes)


class CacheManager:
    """Named caches, created once and looked up by name, with an optional total byte budget.

    Every managed cache tracks its bytes (`sizeof`, default `memsafe.cache.default_sizeof`, a
    deep bounded estimate). The budget rule: when a `set` makes a managed cache's bytes grow and
    the sum of bytes over all managed caches is then above `max_total_bytes`, the manager evicts
    entries, in each cache's eviction order, from the largest cache (by bytes), then the next
    largest, until the sum is at or under the budget. A cache notifies the manager only when
    its bytes grow and only while a budget is set, so caches cost nothing extra when there is
    no budget. Setting or lowering a budget enforces it at once.

    Thread safety: one lock guards the registry and budget enforcement; the manager takes a
    cache's lock only through that cache's methods, never while the cache holds it.
    """

    def __init__(self, max_total_bytes: int | None = None) -> None:
        self._lock = threading.RLock()
        self._caches: dict[str, LRUCache[Any, Any]] = {}
        self._settings: dict[str, tuple[object, ...]] = {}
        # Immutable snapshot for the grow hook, which runs on every growing set and so reads
        # it without the lock.
        self._all: tuple[LRUCache[Any, Any], ...] = ()
        self._max_total_bytes = _check_budget(max_total_bytes)

    def create_cache(
        self,
        name: str,
        max_size: int = 1000,
        ttl_seconds: float | None = None,
        max_bytes: int | None = None,
        policy: str = "lru",
        **kwargs: Any,
    ) -> LRUCache[Any, Any]:
        """Create the cache `name`, or return it if it exists with the same settings.

        `policy` is the eviction policy ("lru", "slru" or "tinylfu", see `LRUCache`); `kwargs`
        are `LRUCache`'s other keyword-only options (sizeof, on_evict, clock, lock).

        Raises:
            ValueError: `name` exists with different settings, or a setting is invalid.
        """
        _check_str("name", name, allow_empty=False)
        settings = (max_size, ttl_seconds, max_bytes, policy, sorted(kwargs.items()))
        with self._lock:
            existing = self._caches.get(name)
            if existing is not None:
                if self._settings[name] != settings:
                    msg = (
                        f"cache {name!r} exists with settings {self._settings[name]!r}, "
                        f"got {settings!r}; remove_cache({name!r}) first or reuse the settings"
                    )
                    raise ValueError(msg)
                return existing
            cache: LRUCache[Any, Any] = LRUCache(
                max_size, ttl_seconds, max_bytes, name=name, policy=policy, **kwargs
            )
            cache._track_bytes(self._on_grow if self._max_total_bytes is not None else None)
            self._caches[name] = cache
            self._settings[name] = settings
            self._all = tuple(self._caches.values())
            return cache

    def get_cache(self, name: str) -> LRUCache[Any, Any] | None:
        """The cache named `name`, or None."""
        return self._caches.get(name)

    def remove_cache(self, name: str) -> bool:
        """Forget the cache `name` (its entries stay with whoever holds it); True if it existed."""
        with self._lock:
            cache = self._caches.pop(name, None)
            self._settings.pop(name, None)
            self._all = tuple(self._caches.values())
        if cache is None:
            return False
        cache._track_bytes(None)
        return True

    def names(self) -> list[str]:
        """Names of the managed caches, in creation order."""
        return list(self._caches)

    def _snapshot(self) -> tuple[LRUCache[Any, Any], ...]:
        return self._all

    def get_cache_stats(self) -> ManagerStats:
        """Stats of every cache and their totals."""
        caches = {cache.name: cache.stats() for cache in self._snapshot()}
        hits = sum(s["hits"] for s in caches.values())
        misses = sum(s["misses"] for s in caches.values())
        totals = CacheTotals(
            size=sum(s["size"] for s in caches.values()),
            bytes=sum(s["bytes"] for s in caches.values()),
            hits=hits,
            misses=misses,
            evictions=sum(s["evictions"] for s in caches.values()),
            expirations=sum(s["expirations"] for s in caches.values()),
            hit_rate=hits / (hits + misses) if hits + misses else 0.0,
            max_total_bytes=self._max_total_bytes,
        )
        return ManagerStats(caches=caches, totals=totals)

    def clear_all(self) -> int:
        """Clear every cache; return the number of entries removed."""
        return sum(cache.clear() for cache in self._snapshot())

    def expire_all(self) -> int:
        """Sweep expired entries from every cache; return how many were removed."""
        return sum(cache.expire() for cache in self._snapshot())

    def shrink_all(self, fraction: float) -> int:
        """Drop `fraction` of every cache's entries, LRU first; return how many were dropped."""
        return sum(cache.shrink(fraction) for cache in self._snapshot())

    def total_bytes(self) -> int:
        """Sum of the bytes of every managed cache."""
        return sum(cache.nbytes for cache in self._snapshot())

    @property
    def max_total_bytes(self) -> int | None:
        """The total byte budget, None for none."""
        return self._max_total_bytes

    def set_budget(self, max_total_bytes: int | None) -> None:
        """Set (or with None, remove) the total byte budget and enforce it now."""
        budget = _check_budget(max_total_bytes)
        with self._lock:
            self._max_total_bytes = budget
            hook = self._on_grow if budget is not None else None
            for cache in self._caches.values():
                cache._track_bytes(hook)
        if budget is not None:
            self._enforce()

    def reset(self) -> None:
        """Forget every cache and the budget (for tests and app shutdown)."""
        with self._lock:
            caches = list(self._caches.values())
            self._caches.clear()
            self._settings.clear()
            self._all = ()
            self._max_total_bytes = None
        for cache in caches:
            cache._track_bytes(None)

    def _on_grow(self, cache: LRUCache[Any, Any]) -> None:
        # Called by a managed cache after a set grew its bytes, outside that cache's lock.
        budget = self._max_total_bytes
        if budget is not None and sum(c.nbytes for c in self._all) > budget:
            self._enforce()

    def _enforce(self) -> None:
        with self._lock:
            budget = self._max_total_bytes
            caches = self._all
            if budget is None:  # pragma: no cover  # budget removed while a set was growing
                return
            total = sum(c.nbytes for c in caches)
            while total > budget:
                largest = max(caches, key=lambda c: c.nbytes)
                freed = largest._evict_bytes(total - budget)
                if freed == 0:  # pragma: no cover  # another thread emptied it meanwhile
                    break
                logger.debug(
                    "cache budget %d bytes exceeded by %d; evicted %d bytes from %r",
                    budget,
                    total - budget,
                    freed,
                    largest.name,
                )
                total = sum(c.nbytes for c in caches)


cache_manager = CacheManager()
"""The process-wide manager (one per worker process)."""
