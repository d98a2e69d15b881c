"""UserDataService: users read through a bounded LRU cache over the SQLite store."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

if TYPE_CHECKING:
    from app.store import User, UserStore
    from memsafe.cache import LRUCache

logger = logging.getLogger(__name__)

_MISSING: Any = object()


class UserDataService:
    """Reads users through `cache` (a memsafe LRUCache) and falls back to the store.

    Unknown ids are cached too (as None), so a scan of missing ids cannot hammer SQLite.
    Thread safety: the cache has its own lock; each store read borrows a pooled connection.
    """

    def __init__(
        self, store: UserStore, cache: LRUCache[Any, Any], *, offload_reads: bool = False
    ) -> None:
        self.store = store
        self.cache = cache
        self.offload_reads = offload_reads

    def get_user(self, user_id: int) -> User | None:
        """The user with `user_id` (None when unknown), from the cache when it holds it."""
        user = self.cache.get(user_id, _MISSING)
        if user is _MISSING:
            user = self.store.get_user(user_id)
            self.cache.set(user_id, user)
        return user  # type: ignore[no-any-return]  # cache values are User | None

    async def get_user_async(self, user_id: int) -> User | None:
        """get_user for async endpoints; a miss reads SQLite inline unless offload_reads."""
        user, _ = await self.lookup_async(user_id)
        return user

    async def lookup_async(self, user_id: int) -> tuple[User | None, bool]:
        """The user (None when unknown) and whether the cache served it (True) or the store.

        The route reports the second value as the X-Cache response header, so a client (the
        load test) can count hits per scenario from what the server did.

        Measured here (benchmarks/bench_http.py notes): a primary-key read of the seeded store
        takes ~8 us on the event loop, while the threadpool hop alone costs ~100 us. Inline
        is the better trade for a store that fits the page cache; offload_reads=True moves
        reads to the threadpool for a store on a slow or network disk.
        """
        user = self.cache.get(user_id, _MISSING)
        if user is not _MISSING:
            return user, True  # cache values are User | None
        if self.offload_reads:
            user = await run_in_threadpool(self.store.get_user, user_id)
        else:
            user = self.store.get_user(user_id)
        self.cache.set(user_id, user)
        return user, False

    def stats(self) -> dict[str, Any]:
        """The cache's stats (hits, misses, evictions, size, bytes, hit_rate)."""
        return dict(self.cache.stats())
