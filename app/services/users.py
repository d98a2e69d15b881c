"""UserDataService: users read through a coherent two-tier cache over the store, and writes."""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from memsafe import CoherentCache, TierStats

if TYPE_CHECKING:
    from app.store import StoreBackend, User, UserFields
    from memsafe import LRUCache, SharedTier

logger = logging.getLogger(__name__)

# Shared-tier payload: the row's values in this order, as a compact JSON array (no keys).
_FIELDS = ("name", "email", "city", "created_at")


def encode_user(user: User | None) -> bytes:
    """A user (or None for 'no such user') as compact bytes for the shared tier."""
    if user is None:
        return b""
    return json.dumps([user[name] for name in _FIELDS], separators=(",", ":")).encode()


def decode_user(key: Hashable, version: int, data: bytes) -> User | None:
    """encode_user's bytes back into the user dict (id from the key)."""
    if not data:
        return None
    values = json.loads(data)
    return {"id": key, **dict(zip(_FIELDS, values, strict=True)), "version": version}


class UserDataService:
    """Reads go through `tiers` (per-worker LRU, optional shared tier, then the store);
    writes go to the store, then into this worker's tier and the shared tier at once
    (read-your-writes), and reach every other worker through the store's change channel.

    Unknown ids are cached too (as None), so a scan of missing ids cannot hammer the store.
    Concurrent misses on one id share one store read (single flight).
    Thread safety: asyncio only; the per-worker LRU has its own lock.
    """

    def __init__(
        self,
        store: StoreBackend,
        local: LRUCache[Any, Any],
        *,
        shared: SharedTier | None = None,
        degraded_ttl_seconds: float = 2.0,
        fence_max_keys: int = 10_000,
        fence_ttl_seconds: float = 60.0,
    ) -> None:
        self.store = store
        self.cache = local
        self.tiers: CoherentCache[User | None] = CoherentCache(
            local,
            self._load,
            shared=shared,
            encode=encode_user,
            decode=decode_user,
            degraded_ttl_seconds=degraded_ttl_seconds,
            fence_max_keys=fence_max_keys,
            fence_ttl_seconds=fence_ttl_seconds,
        )

    async def _load(self, key: Hashable) -> tuple[int, User | None]:
        user = await self.store.get_user(int(key))  # type: ignore[call-overload]  # keys are ints
        return (0, None) if user is None else (int(user["version"]), user)

    async def get_user(self, user_id: int) -> User | None:
        """The user with `user_id` (None when unknown), from the first tier that has it."""
        return await self.tiers.get(user_id)

    async def lookup(self, user_id: int) -> tuple[User | None, bool]:
        """The user (None when unknown) and whether this worker's cache answered (True).

        The route reports the second value as the X-Cache response header, so a client (the
        load test) can count hits per scenario from what the server did. The membership test
        neither counts in the cache's stats nor refreshes recency, and nothing on the event
        loop runs between it and the read through the tiers (no await in between).
        """
        is_hit = user_id in self.cache
        return await self.tiers.get(user_id), is_hit

    async def list_users(self, *, after_id: int, limit: int) -> list[User]:
        """One page straight from the store (pages are not cached: they change with writes)."""
        return await self.store.list_users(after_id=after_id, limit=limit)

    async def create_user(self, fields: UserFields) -> User:
        """Insert; the new user is readable at once on this worker."""
        user = await self.store.create_user(fields)
        await self.tiers.put(user["id"], int(user["version"]), user)
        return user

    async def update_user(self, user_id: int, fields: UserFields) -> User | None:
        """Change fields; None when unknown. The next read on this worker shows the change."""
        user = await self.store.update_user(user_id, fields)
        if user is not None:
            await self.tiers.put(user_id, int(user["version"]), user)
        return user

    async def delete_user(self, user_id: int) -> bool:
        """Delete; False when unknown. The next read on this worker is a 404."""
        version = await self.store.delete_user(user_id)
        if version is None:
            return False
        await self.tiers.put(user_id, version, None)
        return True

    def stats(self) -> dict[str, Any]:
        """The per-worker cache's stats (hits, misses, evictions, size, bytes, hit_rate)."""
        return dict(self.cache.stats())

    def tier_stats(self) -> TierStats:
        """Both tiers' hit rates and the coherence counters."""
        return self.tiers.stats()
