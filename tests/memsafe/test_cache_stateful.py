"""Hypothesis stateful test: LRUCache (every policy) against a dict + list model, fake clock."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from memsafe._policy import (
    POLICIES,
    PROTECTED_FRACTION,
    WINDOW_FRACTION,
    FrequencySketch,
)
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


class PolicyModel:
    """The eviction order of each policy, written plainly over lists (least recent first).

    "lru" is one list. "slru": new keys enter probation; a hit there moves the key to protected,
    whose overflow goes back to probation; victims come from probation, then protected.
    "tinylfu" adds a window in front (new keys), and admits the window's oldest key into the
    main space only when its sketch frequency beats the main victim's.
    """

    def __init__(self, policy: str, capacity: int) -> None:
        self.policy = policy
        self.window: list[int] = []
        self.probation: list[int] = []
        self.protected: list[int] = []
        has_window = policy == "tinylfu"
        self.window_cap = max(1, round(capacity * WINDOW_FRACTION)) if has_window else 0
        main = max(capacity - self.window_cap, 1)
        self.protected_cap = max(1, int(main * PROTECTED_FRACTION)) if main > 1 else 0
        self.sketch = FrequencySketch(capacity) if has_window else None

    def segments(self) -> tuple[list[int], list[int], list[int]]:
        return self.probation, self.protected, self.window

    def touch(self, key: int) -> None:
        if self.policy == "lru":
            self.probation.remove(key)
            self.probation.append(key)
            return
        if self.sketch is not None:
            self.sketch.increment(key)
        if key in self.protected:
            self.protected.remove(key)
            self.protected.append(key)
        elif key in self.probation:
            self.probation.remove(key)
            self.protected.append(key)
            if len(self.protected) > self.protected_cap:
                self.probation.append(self.protected.pop(0))
        else:
            self.window.remove(key)
            self.window.append(key)

    def insert(self, key: int) -> None:
        if self.sketch is None:
            self.probation.append(key)
            return
        self.sketch.increment(key)
        self.window.append(key)
        if len(self.window) > self.window_cap:
            self.probation.append(self.window.pop(0))

    def victim(self, keep: int | None) -> int:
        def first(segment: list[int]) -> int | None:
            return next((k for k in segment if k != keep), None)

        if self.sketch is not None and len(self.window) >= self.window_cap:
            candidate = first(self.window)
            main = first(self.probation)
            if main is None:
                main = first(self.protected)
            if candidate is not None and main is not None:
                self.window.remove(candidate)
                if self.sketch.frequency(candidate) > self.sketch.frequency(main):
                    self.probation.append(candidate)
                    self.remove(main)
                    return main
                return candidate
        for segment in self.segments():
            key = first(segment)
            if key is not None:
                segment.remove(key)
                return key
        raise AssertionError("victim of an empty model")

    def remove(self, key: int) -> None:
        for segment in self.segments():
            if key in segment:
                segment.remove(key)

    def clear(self) -> None:
        for segment in self.segments():
            segment.clear()

    def stored(self) -> list[int]:
        return [k for segment in self.segments() for k in segment]


class LRUCacheMachine(RuleBasedStateMachine):
    """Every operation is applied to the cache and to a plain model; they must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(start=0.0)
        self.cache: LRUCache[int, int] | None = None
        self.model = PolicyModel("lru", 1)
        self.entries: dict[int, Entry] = {}
        self.hits = self.misses = self.evictions = self.expirations = self.rejections = 0

    @initialize(
        max_size=st.integers(min_value=1, max_value=6),
        ttl_seconds=TTLS,
        max_bytes=st.none() | st.integers(min_value=4, max_value=16),
        policy=st.sampled_from(POLICIES),
    )
    def create(
        self, max_size: int, ttl_seconds: float | None, max_bytes: int | None, policy: str
    ) -> None:
        self.model = PolicyModel(policy, max_size)
        self.max_size = max_size
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes
        self.cache = LRUCache(
            max_size,
            ttl_seconds,
            max_bytes,
            sizeof=int_size if max_bytes is not None else None,
            clock=self.clock,
            policy=policy,
        )

    # -- model helpers -----------------------------------------------------------------------

    def _expired(self, entry: Entry) -> bool:
        return entry.expires_at <= self.clock.now

    def _remove(self, key: int) -> Entry:
        self.model.remove(key)
        return self.entries.pop(key)

    def _drop_lru(self, keep: int | None = None) -> None:
        key = self.model.victim(keep)
        entry = self.entries.pop(key)
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
        old = self.entries.get(key)
        if self.max_bytes is not None and value > self.max_bytes:
            self.rejections += 1
            if old is not None:
                self._remove(key)
            return
        if old is not None:
            self.model.touch(key)  # an overwrite keeps its place as most recent
        old_size = old.size if old is not None and self.max_bytes is not None else 0
        while len(self.entries) > (old is not None) and (
            (old is None and len(self.entries) >= self.max_size)
            or (
                self.max_bytes is not None
                and self._model_bytes() - old_size + value > self.max_bytes
            )
        ):
            self._drop_lru(keep=key)
        self.entries[key] = entry
        if old is None:
            self.model.insert(key)

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
            self.model.touch(key)
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
        expired = [k for k in self.model.stored() if self._expired(self.entries[k])]
        for key in expired:
            self._remove(key)
        self.expirations += len(expired)
        assert swept == len(expired)

    @rule(fraction=st.sampled_from([0.0, 0.3, 0.5, 1.0]))
    def shrink(self, fraction: float) -> None:
        dropped = self._cache.shrink(fraction)
        count = math.ceil(len(self.entries) * fraction)
        for _ in range(count):
            self._drop_lru()
        assert dropped == count

    @precondition(lambda self: len(self.entries) > 0)
    @rule()
    def clear(self) -> None:
        assert self._cache.clear() == len(self.entries)
        self.entries.clear()
        self.model.clear()

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def agrees_with_the_model(self) -> None:
        if self.cache is None:
            return
        policy = self.cache._policy
        if policy is None:
            assert list(self.cache._data) == self.model.probation
        elif not policy._buffer:  # hits are replayed at the next write; compare after one
            assert list(policy.window) == self.model.window
            assert list(policy.probation) == self.model.probation
            assert list(policy.protected) == self.model.protected
            if policy.sketch is not None:
                assert self.model.sketch is not None
                assert policy.sketch._table == self.model.sketch._table
        assert sorted(self.cache._data) == sorted(self.model.stored())
        assert {k: e[0] for k, e in self.cache._data.items()} == {
            k: e.value for k, e in self.entries.items()
        }
        stats = self.cache.stats()
        assert stats["size"] == len(self.entries) <= self.max_size
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
    max_examples=150, stateful_step_count=40, deadline=None
)
TestLRUCacheAgainstModel = LRUCacheMachine.TestCase
