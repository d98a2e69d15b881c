"""The eviction and expiry facts cachetools' own LRUCache/TTLCache tests check, for memsafe.

Re-expressed from cachetools' tests/test_lru.py and tests/test_ttl.py (facts, not code).
Where memsafe differs on purpose it says so: a value too large is rejected without raising
(cachetools raises ValueError), and deleting an expired key returns False (cachetools raises
KeyError).
"""

from __future__ import annotations

from memsafe.cache import LRUCache
from tests.conftest import FakeClock


class AutoClock:
    """Moves one second on every read, like cachetools' Timer(auto=True)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def keys(cache: LRUCache[int, int]) -> set[int]:
    return {key for key in range(10) if key in cache}


def int_size(value: object) -> int:
    return value if isinstance(value, int) else 0


# -- tests/test_lru.py -----------------------------------------------------------------------


def test_lru_evicts_in_least_recently_used_order() -> None:
    cache: LRUCache[int, int] = LRUCache(2)
    cache.set(1, 1)
    cache.set(2, 2)
    cache.set(3, 3)
    assert len(cache) == 2
    assert keys(cache) == {2, 3}

    assert cache.get(2) == 2  # 2 is now more recent than 3
    cache.set(4, 4)
    assert keys(cache) == {2, 4}

    cache.set(5, 5)
    assert keys(cache) == {4, 5}


def test_lru_update_of_an_existing_key_makes_it_most_recent() -> None:
    cache: LRUCache[int, int] = LRUCache(2)
    cache.set(1, 1)
    cache.set(2, 2)
    cache.set(1, 1)
    cache.set(3, 3)
    assert keys(cache) == {1, 3}


def test_lru_update_keeps_the_size() -> None:
    cache: LRUCache[int, int] = LRUCache(2)
    cache.set(1, 1)
    cache.set(1, 2)
    assert len(cache) == 1
    assert cache.get(1) == 2


def test_lru_getsizeof_evicts_until_the_new_value_fits() -> None:
    cache: LRUCache[int, int] = LRUCache(10, max_bytes=3, sizeof=int_size)
    cache.set(1, 1)
    cache.set(2, 2)
    assert keys(cache) == {1, 2}
    assert cache.nbytes == 3

    cache.set(3, 3)
    assert keys(cache) == {3}
    assert cache.nbytes == 3


def test_lru_getsizeof_too_large_value_leaves_other_entries_alone() -> None:
    cache: LRUCache[int, int] = LRUCache(10, max_bytes=3, sizeof=int_size)
    cache.set(3, 3)
    cache.set(4, 4)  # larger than the whole cache: rejected (cachetools raises ValueError)
    assert keys(cache) == {3}
    assert cache.nbytes == 3
    assert cache.stats()["rejections"] == 1


# -- tests/test_ttl.py -----------------------------------------------------------------------


def test_ttl_entries_expire_exactly_ttl_after_they_were_set(fake_clock: FakeClock) -> None:
    cache: LRUCache[int, int] = LRUCache(2, ttl_seconds=2, clock=fake_clock)
    cache.set(1, 1)
    assert cache.get(1) == 1

    fake_clock.advance(1)
    assert cache.get(1) == 1
    cache.set(2, 2)
    assert keys(cache) == {1, 2}

    fake_clock.advance(1)
    assert 1 not in cache
    assert cache.get(2) == 2
    assert keys(cache) == {2}

    cache.set(3, 3)
    assert keys(cache) == {2, 3}

    fake_clock.advance(1)
    assert keys(cache) == {3}
    assert cache.get(3) == 3

    fake_clock.advance(1)
    assert keys(cache) == set()
    for key in (1, 2, 3):
        assert cache.delete(key) is False  # cachetools raises KeyError
    assert cache.get(1) is None


def test_ttl_cache_still_evicts_lru_at_capacity(fake_clock: FakeClock) -> None:
    cache: LRUCache[int, int] = LRUCache(2, ttl_seconds=1, clock=fake_clock)
    cache.set(1, 1)
    cache.set(2, 2)
    cache.set(3, 3)
    assert len(cache) == 2
    assert keys(cache) == {2, 3}

    cache.get(2)
    cache.set(4, 4)
    assert keys(cache) == {2, 4}

    cache.set(5, 5)
    assert keys(cache) == {4, 5}


def test_ttl_expire_removes_exactly_the_entries_past_their_time(fake_clock: FakeClock) -> None:
    fake_clock.now = 0.0
    cache: LRUCache[int, int] = LRUCache(3, ttl_seconds=3, clock=fake_clock)
    cache.set(1, 1)
    fake_clock.advance(1)
    cache.set(2, 2)
    fake_clock.advance(1)
    cache.set(3, 3)

    assert cache.expire() == 0
    assert keys(cache) == {1, 2, 3}

    fake_clock.now = 3.0
    assert cache.expire() == 1
    assert keys(cache) == {2, 3}
    assert len(cache) == 2

    fake_clock.now = 4.0
    assert cache.expire() == 1
    assert keys(cache) == {3}

    fake_clock.now = 5.0
    assert cache.expire() == 1
    assert len(cache) == 0


def test_ttl_each_operation_reads_the_clock_once() -> None:
    # With a clock that moves on every read, a set followed by a get still hits: set and get
    # each read the time once (the "atomic" fact of cachetools' test_ttl_atomic).
    cache: LRUCache[int, int] = LRUCache(1, ttl_seconds=2, clock=AutoClock())
    cache.set(1, 1)
    assert cache.get(1) == 1
    cache.set(1, 1)
    assert cache.get(1) == 1
    cache.set(1, 1)
    assert cache.get_or_set(1, lambda: 2) == 1
    cache.set(1, 1)
    assert cache.clear() == 1
    assert len(cache) == 0


def test_ttl_tuple_keys_expire(fake_clock: FakeClock) -> None:
    cache: LRUCache[tuple[int, ...], int] = LRUCache(1, ttl_seconds=1, clock=fake_clock)
    cache.set((1, 2, 3), 42)
    assert cache.get((1, 2, 3)) == 42
    fake_clock.advance(1)
    assert cache.get((1, 2, 3)) is None
    assert (1, 2, 3) not in cache


def test_per_entry_ttl_expires_each_entry_on_its_own_schedule(fake_clock: FakeClock) -> None:
    # cachetools' TLRUCache (time-to-use per entry): here the per-entry ttl_seconds.
    fake_clock.now = 0.0
    cache: LRUCache[int, int] = LRUCache(6, clock=fake_clock)
    for key in (1, 2, 3):
        cache.set(key, key, ttl_seconds=key + 1)
    assert keys(cache) == {1, 2, 3}
    fake_clock.now = 2.0
    assert keys(cache) == {2, 3}
    fake_clock.now = 3.0
    assert keys(cache) == {3}
    fake_clock.now = 4.0
    assert keys(cache) == set()
