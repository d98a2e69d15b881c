"""Thread-safe cache (LRU, SLRU or W-TinyLFU) with TTLs, a count bound and a byte bound."""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, Generic, overload

from memsafe._checks import (
    _check_callable,
    _check_choice,
    _check_lock,
    _check_optional_positive_int,
    _check_positive_int,
    _check_str,
    _check_ttl,
    _unhashable,
)
from memsafe._clock import Clock
from memsafe._fastpaths import NEVER, make_fast_get, make_fast_set
from memsafe._policy import _NONE, POLICIES, SegmentedPolicy, make_policy
from memsafe._sizeof import ENTRY_OVERHEAD_BYTES, estimate_bytes
from memsafe._types import CacheStats, K, LockLike, T, V

__all__ = ["NEVER", "CacheStats", "LRUCache", "LockLike", "default_sizeof"]

logger = logging.getLogger(__name__)


_MISSING: Final = object()


def default_sizeof(value: object) -> int:
    """Deep, bounded estimate of the bytes `value` holds plus the cache's own per-entry bytes.

    Follows containers, dataclasses and pydantic models (see `memsafe._sizeof`); shared objects
    (small ints, one-character and interned-name strings, None, classes) count nothing.
    """
    return estimate_bytes(value) + ENTRY_OVERHEAD_BYTES


def _count_value(counter: itertools.count[int]) -> int:
    # repr is "count(N)": the next value, i.e. how many times next() ran. Reading it this way
    # avoids count.__reduce__, deprecated from 3.12.
    return int(repr(counter)[6:-1])


class LRUCache(Generic[K, V]):
    """Mapping that drops the least recently read entry (or, by `policy`, the least valuable).

    Bounds: at most `max_size` entries and, when `max_bytes` is set, at most that many bytes as
    measured by `sizeof(value)` (default: `default_sizeof`, a deep bounded estimate, computed
    only when bytes are tracked). Inserting into a full cache evicts entries first.

    Policy: "lru" (default) evicts the least recently used entry. "slru" (segmented LRU) and
    "tinylfu" (W-TinyLFU: a 1% LRU window, then segmented LRU behind a count-min frequency
    filter) resist scans: a burst of keys read once cannot push out keys read again and again.
    Their hits stay lock-free; they are replayed into the policy under the lock on the next
    write (see `memsafe._policy`). `shrink` and the manager's budget evict in the same order.
    A value larger than `max_bytes` is not stored: it counts as a rejection and any previous
    entry under that key is removed, so a stale value is never served in its place.

    Expiry: an entry set with a TTL expires when `clock() >= set time + ttl`. Expiry is lazy:
    `get` treats an expired entry as a miss and removes it; `expire()` sweeps them all. There is
    no thread per cache. `on_evict(key, value)` runs for every entry the cache drops on its own
    (capacity or byte eviction, expiry, `shrink`, the manager's budget), never for `delete`,
    `clear` or an overwriting `set`; an exception it raises is logged and swallowed.

    Thread safety: writers hold one lock; a hit reads without it (see `get`); on_evict runs
    after release.
    """

    def __init__(
        self,
        max_size: int,
        ttl_seconds: float | None = None,
        max_bytes: int | None = None,
        *,
        sizeof: Callable[[object], int] | None = None,
        on_evict: Callable[[K, V], None] | None = None,
        clock: Clock = time.monotonic,
        lock: LockLike | None = None,
        name: str = "",
        policy: str = "lru",
    ) -> None:
        self._max_size = _check_positive_int("max_size", max_size)
        self._ttl_seconds = _check_ttl("ttl_seconds", ttl_seconds)
        self._max_bytes = _check_optional_positive_int("max_bytes", max_bytes)
        _check_callable("sizeof", sizeof, optional=True)
        _check_callable("on_evict", on_evict, optional=True)
        _check_callable("clock", clock)
        if lock is not None:
            _check_lock("lock", lock)
        _check_str("name", name)
        self._policy_name = _check_choice("policy", policy, POLICIES)
        self._policy: SegmentedPolicy | None = make_policy(policy, self._max_size)
        # Entries are (value, expires_at) tuples, or (value, expires_at, size) when bytes are
        # tracked: an immutable tuple is swapped in whole, so a lock-free reader never sees a
        # half-written entry.
        self._data: OrderedDict[K, tuple[Any, ...]] = OrderedDict()
        # Sizes are computed only for a byte bound, an explicit sizeof or a manager budget.
        self._sizeof = (sizeof or default_sizeof) if self._max_bytes is not None else sizeof
        self._on_evict = on_evict
        self._clock = clock
        self._lock: LockLike = threading.RLock() if lock is None else lock
        self._name = name
        self._nbytes = 0
        # hits and misses on the lock-free paths use itertools.count: next() on it is one C
        # call, atomic under the GIL, so no increment is lost (a plain `+= 1` could be).
        self._hits = itertools.count()
        self._misses = itertools.count()
        self._count_hit = self._hits.__next__
        self._count_miss = self._misses.__next__
        self._evictions = 0
        self._expirations = 0
        self._rejections = 0
        self._ttl_used = self._ttl_seconds is not None
        self._grow_hook: Callable[[LRUCache[Any, Any]], None] | None = None
        self._fast_get = self._make_fast_get()
        self._fast_set = self._make_fast_set()
        # Bind the closures straight onto the instance (unless a subclass overrides the method):
        # a call then skips both method binding and the delegating frame.
        if type(self).get is LRUCache.get:
            self.get = self._fast_get  # type: ignore[method-assign]  # same contract
        if type(self).set is LRUCache.set:
            self.set = self._fast_set  # type: ignore[method-assign]  # same contract

    def _make_fast_get(self) -> Callable[..., Any]:
        return make_fast_get(self)

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: T) -> V | T: ...
    def get(self, key: K, default: object = None) -> object:
        """Return the live value under `key` and mark it most recently used, else `default`.

        A hit takes no lock, safe under CPython's GIL: the entry is an immutable tuple read by
        one C-level lookup; its expiry is checked against a fresh clock read, so an expired
        entry is never returned; `move_to_end` is one C call (a KeyError from a concurrent
        removal is ignored: the read came first); the hit counter's `next` is atomic.
        """
        return self._fast_get(key, default)

    def _drop_expired(self, key: K, entry: tuple[Any, ...], default: object) -> object:
        removed = False
        with self._lock:
            data = self._data
            if data.get(key) is entry:  # still the entry we saw expire
                self._sync()  # replay earlier hits first: they may reorder other keys
                del data[key]
                self._forget(key)
                if len(entry) == 3:
                    self._nbytes -= entry[2]
                self._expirations += 1
                removed = True
        self._count_miss()
        if removed:
            self._notify_evicted([(key, entry[0])])
        return default

    def __contains__(self, key: object) -> bool:
        """True if a live entry exists; neither counts as a hit or miss nor refreshes recency."""
        try:
            entry = self._data.get(key)  # type: ignore[arg-type]  # `in` may ask about any object
        except TypeError:
            raise _unhashable(key) from None
        if entry is None:
            return False
        expires_at = entry[1]
        return expires_at is NEVER or expires_at > self._clock()

    def _peek(self, key: K, default: object) -> object:
        """The live value under `key` or `default`, without touching stats or recency."""
        entry = self._data.get(key)
        if entry is None:
            return default
        expires_at = entry[1]
        if expires_at is not NEVER and expires_at <= self._clock():
            return default
        return entry[0]

    def __len__(self) -> int:
        """Number of stored entries, expired ones not yet swept included."""
        return len(self._data)

    def get_or_set(self, key: K, factory: Callable[[], V], ttl_seconds: float | None = None) -> V:
        """Return the live value under `key`, else store and return `factory()`.

        The factory runs outside the lock; two threads missing together may both call it (use
        `memsafe.decorators.cached` for single flight).
        """
        if not callable(factory):
            msg = f"factory must be callable, got {factory!r}"
            raise TypeError(msg)
        found = self.get(key, _MISSING)
        if found is not _MISSING:
            return found  # type: ignore[return-value]  # not _MISSING, so a stored V
        value = factory()
        self.set(key, value, ttl_seconds)
        return value

    def set(self, key: K, value: V, ttl_seconds: float | None = None) -> None:
        """Store `value` under `key` as most recently used; `ttl_seconds` overrides the cache's."""
        self._fast_set(key, value, ttl_seconds)

    def _make_fast_set(self) -> Callable[..., None]:
        return make_fast_set(self)

    def _store(
        self, key: K, value: V, ttl: float | None, sizeof: Callable[[object], int] | None
    ) -> None:
        # The one general write path: byte-tracked entries, and every policy but plain LRU.
        size = 0 if sizeof is None else sizeof(value)  # user code: outside the lock
        now = self._clock()
        if ttl is None:
            expires_at = NEVER
        else:
            expires_at = now + ttl
            self._ttl_used = True
        max_bytes = self._max_bytes
        dropped: list[tuple[K, Any]] = []
        with self._lock:
            data = self._data
            policy = self._policy
            if policy is not None and policy._buffer:
                policy.drain()
            before = self._nbytes
            try:
                old = data.get(key)
            except TypeError:
                raise _unhashable(key) from None
            old_size = old[2] if old is not None and len(old) == 3 else 0
            if max_bytes is not None and size > max_bytes:
                self._rejections += 1
                if old is not None:
                    del data[key]
                    self._forget(key)
                    self._nbytes -= old_size
            else:
                # An overwrite keeps the entry in place (a lock-free get must never see the key
                # missing) as most recent, and eviction never picks it.
                if old is not None:
                    if policy is None:
                        data.move_to_end(key)
                    else:
                        policy.touch(key)
                # Make room first, so nbytes and len() never exceed their bounds in between.
                while len(data) > (old is not None) and (
                    (old is None and len(data) >= self._max_size)
                    or (max_bytes is not None and self._nbytes - old_size + size > max_bytes)
                ):
                    if policy is None:
                        old_key, evicted = data.popitem(last=False)
                    else:
                        old_key = policy.victim(key)  # type: ignore[assignment]  # a stored K
                        evicted = data.pop(old_key)
                    if len(evicted) == 3:
                        self._nbytes -= evicted[2]
                    if evicted[1] is not NEVER and evicted[1] <= now:
                        self._expirations += 1
                    else:
                        self._evictions += 1
                    dropped.append((old_key, evicted[0]))
                data[key] = (value, expires_at) if sizeof is None else (value, expires_at, size)
                if old is None and policy is not None:
                    policy.insert(key)
                self._nbytes += size - old_size
            grew = self._nbytes > before
            hook = self._grow_hook
        if dropped:
            self._notify_evicted(dropped)
        if grew and hook is not None:
            hook(self)

    def delete(self, key: K) -> bool:
        """Remove `key`; True if a live entry was removed (an expired one counts as expired)."""
        with self._lock:
            self._sync()
            try:
                entry = self._data.pop(key, None)
            except TypeError:
                raise _unhashable(key) from None
            if entry is None:
                return False
            self._forget(key)
            if len(entry) == 3:
                self._nbytes -= entry[2]
            expires_at = entry[1]
            if expires_at is not NEVER and expires_at <= self._clock():
                self._expirations += 1
                return False
            return True

    def clear(self) -> int:
        """Remove every entry without calling on_evict; return how many there were."""
        with self._lock:
            count = len(self._data)
            self._data.clear()
            policy = self._sync()  # recorded hits still count in the sketch
            if policy is not None:
                policy.clear()
            self._nbytes = 0
        return count

    def expire(self) -> int:
        """Remove every expired entry now; return how many were removed."""
        if not self._ttl_used:
            return 0
        dropped: list[tuple[K, Any]] = []
        with self._lock:
            data = self._data
            self._sync()
            now = self._clock()
            # list() of the items runs in C without releasing the GIL: a consistent snapshot
            # even while lock-free readers reorder entries.
            for key, entry in list(data.items()):
                if entry[1] <= now:
                    del data[key]
                    self._forget(key)
                    if len(entry) == 3:
                        self._nbytes -= entry[2]
                    dropped.append((key, entry[0]))
            self._expirations += len(dropped)
        self._notify_evicted(dropped)
        return len(dropped)

    def shrink(self, fraction: float) -> int:
        """Drop `ceil(len * fraction)` entries, in eviction order; return that count.

        `fraction` is in [0, 1]; the cleanup service calls this under memory pressure.
        """
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0 <= fraction <= 1
        ):
            msg = f"fraction must be a number in [0, 1], got {fraction!r}"
            raise ValueError(msg)
        with self._lock:
            dropped = self._pop_lru(math.ceil(len(self._data) * fraction), None)
        self._notify_evicted(dropped)
        return len(dropped)

    def _evict_bytes(self, target_bytes: int) -> int:
        """Drop LRU entries until at least `target_bytes` are freed or the cache is empty."""
        with self._lock:
            before = self._nbytes
            dropped = self._pop_lru(len(self._data), before - target_bytes)
            freed = before - self._nbytes
        self._notify_evicted(dropped)
        return freed

    def _pop_lru(self, count: int, stop_at_bytes: int | None) -> list[tuple[K, Any]]:
        # Under the lock: pop up to `count` LRU entries, stopping once nbytes <= stop_at_bytes.
        # Already expired entries count as expirations, as on the set paths.
        data = self._data
        dropped: list[tuple[K, Any]] = []
        self._sync()
        now = self._clock()
        while data and len(dropped) < count:
            if stop_at_bytes is not None and self._nbytes <= stop_at_bytes:
                break
            key, entry = self._pop_victim(_NONE)
            if len(entry) == 3:
                self._nbytes -= entry[2]
            if entry[1] is not NEVER and entry[1] <= now:
                self._expirations += 1
            else:
                self._evictions += 1
            dropped.append((key, entry[0]))
        return dropped

    def _sync(self) -> SegmentedPolicy | None:
        # Under the lock: replay recorded hits into the policy before any order decision.
        policy = self._policy
        if policy is not None:
            policy.drain()
        return policy

    def _forget(self, key: K) -> None:
        # Under the lock: `key` left the data; the policy must forget it too.
        if self._policy is not None:
            self._policy.remove(key)

    def _pop_victim(self, keep: object) -> tuple[K, tuple[Any, ...]]:
        # Under the lock: remove and return the next entry to evict (never `keep`'s).
        if self._policy is None:
            return self._data.popitem(last=False)
        key: Any = self._policy.victim(keep)
        return key, self._data.pop(key)

    def _notify_evicted(self, dropped: list[tuple[K, Any]]) -> None:
        on_evict = self._on_evict
        if on_evict is None:
            return
        for key, value in dropped:
            try:
                on_evict(key, value)
            except Exception:
                logger.exception("on_evict of cache %r failed for key %r", self._name, key)

    def _track_bytes(self, hook: Callable[[LRUCache[Any, Any]], None] | None) -> None:
        """Turn byte accounting on (for a manager budget) and call `hook` when bytes grow."""
        with self._lock:
            if self._sizeof is None:
                sizeof = default_sizeof
                self._sizeof = sizeof
                for key, entry in list(self._data.items()):
                    size = sizeof(entry[0])
                    self._data[key] = (entry[0], entry[1], size)
                    self._nbytes += size
            self._grow_hook = hook

    def stats(self) -> CacheStats:
        """A consistent snapshot of sizes and counters."""
        with self._lock:
            hits = _count_value(self._hits)
            misses = _count_value(self._misses)
            lookups = hits + misses
            return CacheStats(
                name=self._name,
                size=len(self._data),
                max_size=self._max_size,
                bytes=self._nbytes,
                max_bytes=self._max_bytes,
                hits=hits,
                misses=misses,
                evictions=self._evictions,
                expirations=self._expirations,
                rejections=self._rejections,
                hit_rate=hits / lookups if lookups else 0.0,
            )

    @property
    def name(self) -> str:
        """Name given at creation (the manager's key)."""
        return self._name

    @property
    def max_size(self) -> int:
        """Most entries the cache holds."""
        return self._max_size

    @property
    def ttl_seconds(self) -> float | None:
        """Default TTL of entries, None for no expiry."""
        return self._ttl_seconds

    @property
    def max_bytes(self) -> int | None:
        """Most bytes (by `sizeof`) the cache holds, None when not byte-bounded."""
        return self._max_bytes

    @property
    def policy(self) -> str:
        """Eviction policy: "lru", "slru" or "tinylfu"."""
        return self._policy_name

    @property
    def nbytes(self) -> int:
        """Current bytes by `sizeof`; 0 when bytes are not tracked."""
        return self._nbytes

    def __repr__(self) -> str:
        return (
            f"LRUCache(name={self._name!r}, size={len(self._data)}, max_size={self._max_size}, "
            f"ttl_seconds={self._ttl_seconds!r}, max_bytes={self._max_bytes!r}, "
            f"policy={self._policy_name!r})"
        )
