"""CoherentCache: a bounded per-process tier over an optional shared one, kept fresh by versions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, Protocol, TypedDict, TypeVar

from memsafe.cache import LRUCache
from memsafe.invalidation import Invalidation

logger = logging.getLogger(__name__)

V = TypeVar("V")

DEFAULT_DEGRADED_TTL_SECONDS = 2.0
DEFAULT_FENCE_MAX_KEYS = 10_000
DEFAULT_FENCE_TTL_SECONDS = 60.0


class SharedTier(Protocol):
    """A cache shared by processes (Redis, Valkey): versioned bytes under string keys.

    Implementations never raise for an unreachable server: `get` answers None (a miss) and
    `set_if_newer` does nothing; `is_available` says which.
    """

    @property
    def is_available(self) -> bool: ...

    async def get(self, key: str) -> tuple[int, bytes] | None: ...

    async def set_if_newer(self, key: str, version: int, data: bytes) -> None: ...


class TierStats(TypedDict):
    """Hit counts of both tiers and of the coherence machinery."""

    l1_hits: int
    l1_misses: int
    l1_hit_rate: float
    l2_hits: int
    l2_misses: int
    l2_stale: int
    l2_hit_rate: float
    loads: int
    joined_loads: int
    discarded_fills: int
    invalidations: int
    is_degraded: bool


def _rate(hits: int, misses: int) -> float:
    total = hits + misses
    return round(hits / total, 4) if total else 0.0


class _Flight:
    __slots__ = ("future", "is_stale")

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future
        self.is_stale = False


class CoherentCache(Generic[V]):
    """Read-through cache: `local` (a bounded LRUCache) first, then `shared`, then `loader`.

    Every value carries a version (a counter the store bumps on each write). A write calls
    `put` (read-your-writes on this process) and other processes call `invalidate(key,
    version)` when the change reaches them over an invalidation channel. An invalidation
    drops the local entry, leaves a version fence so no older copy (from the shared tier or
    from a load that started before the write) is cached again, and detaches any load in
    flight for the key. Concurrent misses on one key share one load (single flight).

    While the channel is down (`set_degraded(True)`), entries are kept at most
    `degraded_ttl_seconds`: a missed invalidation is then stale for that long at most. The
    fences live in a bounded LRUCache (`fence_max_keys`, `fence_ttl_seconds`).

    Thread safety: asyncio only (one event loop); the LRUCaches it uses are thread-safe.
    """

    def __init__(
        self,
        local: LRUCache[Any, Any],
        loader: Callable[[Hashable], Awaitable[tuple[int, V]]],
        *,
        shared: SharedTier | None = None,
        encode: Callable[[V], bytes] | None = None,
        decode: Callable[[Hashable, int, bytes], V] | None = None,
        shared_key: Callable[[Hashable], str] = str,
        degraded_ttl_seconds: float = DEFAULT_DEGRADED_TTL_SECONDS,
        fence_max_keys: int = DEFAULT_FENCE_MAX_KEYS,
        fence_ttl_seconds: float = DEFAULT_FENCE_TTL_SECONDS,
    ) -> None:
        if shared is not None and (encode is None or decode is None):
            msg = "a shared tier needs encode and decode; allowed: both set, or shared=None"
            raise ValueError(msg)
        if degraded_ttl_seconds <= 0:
            msg = f"degraded_ttl_seconds must be > 0, got {degraded_ttl_seconds!r}"
            raise ValueError(msg)
        self.local = local
        self.shared = shared
        self._loader = loader
        self._encode = encode
        self._decode = decode
        self._shared_key = shared_key
        self.degraded_ttl_seconds = degraded_ttl_seconds
        self._fences: LRUCache[Hashable, int] = LRUCache(
            max_size=fence_max_keys, ttl_seconds=fence_ttl_seconds, name=f"{local.name}.fences"
        )
        self._flights: dict[Hashable, _Flight] = {}
        self._has_fences = False  # until the first invalidation a miss skips the fence lookups
        self._degraded = True  # until the channel says it listens, nothing is known fresh
        self._l2_hits = self._l2_misses = self._l2_stale = 0
        self._loads = self._joined = self._discarded = self._invalidations = 0

    @property
    def is_degraded(self) -> bool:
        """True while invalidations may be missed (entries then live degraded_ttl_seconds)."""
        return self._degraded

    def set_degraded(self, is_degraded: bool) -> None:
        """Channel down (True) or up (False); either way the local tier starts empty.

        Going down: entries cached with the normal TTL could outlive a missed invalidation.
        Coming up: invalidations sent while down are lost.
        """
        self._degraded = is_degraded
        self.local.clear()
        for flight in self._flights.values():
            flight.is_stale = True
        self._flights.clear()

    async def get(self, key: Hashable) -> V:
        """The value for `key` from the first tier that has a fresh one."""
        while True:
            entry = self.local.get(key)
            if entry is not None:
                return entry[1]  # type: ignore[no-any-return]  # entries are (version, V)
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead(key)
            self._joined += 1
            try:
                # shield: a cancelled follower must not cancel the leader's result.
                return await asyncio.shield(flight.future)
            except asyncio.CancelledError:
                if not flight.future.cancelled():
                    raise  # this follower was cancelled
                # The leader was cancelled before it loaded: try again (maybe as leader).

    async def _lead(self, key: Hashable) -> V:
        """Load `key` in this task; concurrent callers for the key wait on its future.

        Running the load in the caller (no task per miss) keeps a miss as cheap as a plain
        read-through; the future only exists for the callers that join.
        """
        self._loads += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        flight = self._flights[key] = _Flight(future)
        try:
            value = await self._load(key, flight)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" log when nobody joined
            raise
        else:
            future.set_result(value)
            return value
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]

    async def _load(self, key: Hashable, flight: _Flight) -> V:
        fence = self._fences.get(key, 0) if self._has_fences else 0
        shared = self.shared
        if shared is not None and shared.is_available:
            found = await shared.get(self._shared_key(key))
            if found is not None and found[0] >= fence:
                self._l2_hits += 1
                value = self._decode(key, found[0], found[1])  # type: ignore[misc]  # set with shared
                self._fill(key, found[0], value, flight)
                return value
            if found is None:
                self._l2_misses += 1
            else:
                self._l2_stale += 1
        version, value = await self._loader(key)
        # The loader read the source after the fenced change was announced (announcements
        # follow commits), so its answer is at least that new even when its own version is
        # lower: a deleted row reads as (0, None).
        version = max(version, fence)
        self._fill(key, version, value, flight)
        if shared is not None:
            await shared.set_if_newer(self._shared_key(key), version, self._encode(value))  # type: ignore[misc]  # set with shared
        return value

    def _fill(self, key: Hashable, version: int, value: V, flight: _Flight) -> None:
        # A load detached by an invalidation, or older than the last version announced for
        # the key, answers its own callers but is never cached.
        if flight.is_stale or (self._has_fences and version < self._fences.get(key, 0)):
            self._discarded += 1
            return
        ttl = self.degraded_ttl_seconds if self._degraded else None
        self.local.set(key, (version, value), ttl)

    async def put(self, key: Hashable, version: int, value: V) -> None:
        """After a committed write: this process sees `value` now, the shared tier too."""
        self.invalidate(key, version)
        ttl = self.degraded_ttl_seconds if self._degraded else None
        self.local.set(key, (version, value), ttl)
        if self.shared is not None:
            await self.shared.set_if_newer(self._shared_key(key), version, self._encode(value))  # type: ignore[misc]  # set with shared

    def invalidate(self, key: Hashable, version: int) -> None:
        """`key` changed to `version` elsewhere: drop it here and fence older copies out.

        A version at or below the key's fence is already known (the echo of this process's
        own write, or a repeat): every entry and load since that fence is at least as new,
        so nothing is dropped. Version 0 means "unknown" and always drops.
        """
        self._invalidations += 1
        fence = self._fences.get(key, 0)
        if 0 < version <= fence:
            return
        self.local.delete(key)
        if version > fence:
            self._fences.set(key, version)
            self._has_fences = True
        flight = self._flights.pop(key, None)
        if flight is not None:
            flight.is_stale = True

    def apply(self, batch: Sequence[Invalidation]) -> None:
        """Apply a batch from an InvalidationListener (a None key clears the local tier)."""
        for item in batch:
            if item.key is None:
                self.set_degraded(self._degraded)
            else:
                self.invalidate(item.key, item.version)

    def stats(self) -> TierStats:
        """Both tiers' hits and misses, loads, and coherence counters."""
        local = self.local.stats()
        return TierStats(
            l1_hits=local["hits"],
            l1_misses=local["misses"],
            l1_hit_rate=_rate(local["hits"], local["misses"]),
            l2_hits=self._l2_hits,
            l2_misses=self._l2_misses,
            l2_stale=self._l2_stale,
            l2_hit_rate=_rate(self._l2_hits, self._l2_misses + self._l2_stale),
            loads=self._loads,
            joined_loads=self._joined,
            discarded_fills=self._discarded,
            invalidations=self._invalidations,
            is_degraded=self._degraded,
        )
