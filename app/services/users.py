"""UserDataService: users read through a bounded memsafe cache over the store, one read per miss."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from memsafe import CacheStats, cached

if TYPE_CHECKING:
    from app.store import User, UserStore
    from memsafe import LRUCache

logger = logging.getLogger(__name__)


def _by_id(user_id: int) -> int:
    """Cache key of a user: its id (so admin tools and tests can look entries up by id)."""
    return user_id


class UserDataService:
    """Reads users through `cache` (a memsafe LRUCache) with memsafe's `cached` single flight.

    However many requests miss the same id at once (threads for `get_user`, tasks for
    `get_user_async`), the store is read once and they all get that result. Unknown ids are
    cached too (as None), so a scan of missing ids cannot hammer the store.
    Thread safety: the cache and the in-flight tables have their own locks; each store read
    borrows a pooled connection.
    """

    def __init__(
        self, store: UserStore, cache: LRUCache[Any, Any], *, offload_reads: bool = False
    ) -> None:
        self.store = store
        self.cache = cache
        self.offload_reads = offload_reads
        self._get_user = cached(cache, key=_by_id)(store.get_user)
        self._get_user_async = cached(cache, key=_by_id)(self._read_async)

    def get_user(self, user_id: int) -> User | None:
        """The user with `user_id` (None when unknown), from the cache when it holds it."""
        user: User | None = self._get_user(user_id)
        return user

    async def get_user_async(self, user_id: int) -> User | None:
        """get_user for async endpoints; a miss reads the store inline unless offload_reads."""
        user, _ = await self.lookup_async(user_id)
        return user

    async def lookup_async(self, user_id: int) -> tuple[User | None, bool]:
        """The user (None when unknown) and whether the cache answered (True) or the store.

        The route reports the second value as the X-Cache response header, so a client (the
        load test) can count hits per scenario from what the server did. The membership test
        neither counts in the cache's stats nor refreshes recency, and nothing on the event
        loop runs between it and the read through `cached` (no await in between).
        """
        is_hit = user_id in self.cache
        user: User | None = await self._get_user_async(user_id)
        return user, is_hit

    async def _read_async(self, user_id: int) -> User | None:
        # Measured here (benchmarks/bench_http.py notes): a primary-key read of the seeded
        # SQLite store takes ~8 us on the event loop, while the threadpool hop alone costs
        # ~100 us. Inline is the better trade for a store that fits the page cache;
        # offload_reads=True moves reads to the threadpool for a slow or network disk.
        if self.offload_reads:
            return await run_in_threadpool(self.store.get_user, user_id)
        return self.store.get_user(user_id)

    def stats(self) -> CacheStats:
        """The cache's stats (hits, misses, evictions, size, bytes, hit_rate)."""
        return self.cache.stats()
