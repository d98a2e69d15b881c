"""Hypothesis stateful test: LRUCache against a dict + recency-list model with a fake clock."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from memsafe.cache import LRUCache
from tests.conftest import FakeClock

KEYS = st.integers(min_value=0, max_value=4)
VALUES = st.integers(min_value=0, max_value=6)  # a value is its own size in bytes
TTLS = st.none() | st.sampled_from([1.0, 2.0, 3.0])


def int_size(value: object) -> int:
    return value if isinstance(value, int) else 0


@dataclass
class Entry:
    value: int
    expires_at: float
    size: int


class LRUCacheMachine(RuleBasedStateMachine):
    """Every operation is applied to the cache and to a plain model; they must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(start=0.0)
        self.cache: LRUCache[int, int] | None = None
        self.order: list[int] = []  # least recently used first
        self.entries: dict[int, Entry] = {}
        self.hits = self.misses = self.evictions = self.expirations = self.rejections = 0

    @initialize(
        max_size=st.integers(min_value=1, max_value=5),
        ttl_seconds=TTLS,
        max_bytes=st.none() | st.integers(min_value=4, max_value=16),
    )
    def create(self, max_size: int, ttl_seconds: float | None, max_bytes: int | None) -> None:
        self.max_size = max_size
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes
        self.cache = LRUCache(
            max_size,
            ttl_seconds,
            max_bytes,
            sizeof=int_size if max_bytes is not None else None,
            clock=self.clock,
        )

    # -- model helpers -----------------------------------------------------------------------

    def _expired(self, entry: Entry) -> bool:
        return entry.expires_at <= self.clock.now

    def _remove(self, key: int) -> Entry:
        self.order.remove(key)
        return self.entries.pop(key)

    def _drop_lru(self) -> None:
        entry = self._remove(self.order[0])
        if self._expired(entry):
            self.expirations += 1
        else:
            self.evictions += 1

    def _model_bytes(self) -> int:
        return sum(e.size for e in self.entries.values()) if self.max_bytes is not None else 0

    @property
    def _cache(self) -> LRUCache[int, int]:
        assert self.cache is not None
        return self.cache

    # -- rules -------------------------------------------------------------------------------

    @rule(key=KEYS, value=VALUES, ttl=TTLS)
    def set(self, key: int, value: int, ttl: float | None) -> None:
        self._cache.set(key, value, ttl)
        effective = ttl if ttl is not None else self.ttl_seconds
        expires_at = math.inf if effective is None else self.clock.now + effective
        entry = Entry(value, expires_at, value)
        if self.max_bytes is None:
            if key in self.entries:
                self._remove(key)
            elif len(self.entries) >= self.max_size:
                self._drop_lru()
        else:
            if key in self.entries:
                self._remove(key)
            if value > self.max_bytes:
                self.rejections += 1
                return
            while self.order and (
                len(self.entries) >= self.max_size or self._model_bytes() + value > self.max_bytes
            ):
                self._drop_lru()
        self.entries[key] = entry
        self.order.append(key)

    @rule(key=KEYS)
    def get(self, key: int) -> None:
        got = self._cache.get(key, -1)
        entry = self.entries.get(key)
        if entry is None:
            self.misses += 1
            assert got == -1
        elif self._expired(entry):
            self._remove(key)
            self.misses += 1
            self.expirations += 1
            assert got == -1
        else:
            self.hits += 1
            self.order.remove(key)
            self.order.append(key)
            assert got == entry.value

    @rule(key=KEYS)
    def contains(self, key: int) -> None:
        entry = self.entries.get(key)
        assert (key in self._cache) == (entry is not None and not self._expired(entry))

    @rule(key=KEYS)
    def delete(self, key: int) -> None:
        removed = self._cache.delete(key)
        entry = self.entries.get(key)
        if entry is None:
            assert removed is False
            return
        self._remove(key)
        if self._expired(entry):
            self.expirations += 1
            assert removed is False
        else:
            assert removed is True

    @rule()
    def tick(self) -> None:
        # Whole seconds against whole-second TTLs: entries expire exactly on a tick, so the
        # `clock() >= expires_at` boundary is exercised, not just "long past".
        self.clock.advance(1.0)

    @rule()
    def expire(self) -> None:
        swept = self._cache.expire()
        expired = [k for k in self.order if self._expired(self.entries[k])]
        for key in expired:
            self._remove(key)
        self.expirations += len(expired)
        assert swept == len(expired)

    @rule(fraction=st.sampled_from([0.0, 0.3, 0.5, 1.0]))
    def shrink(self, fraction: float) -> None:
        dropped = self._cache.shrink(fraction)
        count = math.ceil(len(self.order) * fraction)
        for _ in range(count):
            self._drop_lru()
        assert dropped == count

    @precondition(lambda self: len(self.entries) > 0)
    @rule()
    def clear(self) -> None:
        assert self._cache.clear() == len(self.entries)
        self.entries.clear()
        self.order.clear()

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def agrees_with_the_model(self) -> None:
        if self.cache is None:
            return
        assert list(self.cache._data) == self.order
        assert {k: e[0] for k, e in self.cache._data.items()} == {
            k: e.value for k, e in self.entries.items()
        }
        stats = self.cache.stats()
        assert stats["size"] == len(self.order) <= self.max_size
        assert stats["bytes"] == self._model_bytes()
        if self.max_bytes is not None:
            assert stats["bytes"] <= self.max_bytes
        assert (
            stats["hits"],
            stats["misses"],
            stats["evictions"],
            stats["expirations"],
            stats["rejections"],
        ) == (self.hits, self.misses, self.evictions, self.expirations, self.rejections)


LRUCacheMachine.TestCase.settings = settings(
    max_examples=120, stateful_step_count=40, deadline=None
)
TestLRUCacheAgainstModel = LRUCacheMachine.TestCase
