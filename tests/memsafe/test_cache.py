"""Unit tests of memsafe.cache.LRUCache: bounds, recency, TTL, bytes, stats, validation."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from memsafe._sizeof import ENTRY_OVERHEAD_BYTES
from memsafe.cache import LRUCache, default_sizeof
from tests.conftest import FakeClock
from tests.memsafe.fakes import CountingLock


def int_size(value: object) -> int:
    """A sizeof for tests: an int value is its own size in bytes."""
    return value if isinstance(value, int) else 0


def test_get_missing_returns_default_and_counts_a_miss() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    assert cache.get("a") is None
    assert cache.get("a", 7) == 7
    assert cache.stats()["misses"] == 2


def test_set_then_get_is_a_hit() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    cache.set("a", 1)
    assert cache.get("a") == 1
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["hit_rate"]) == (1, 0, 1.0)


def test_a_stored_none_is_a_hit_distinct_from_missing() -> None:
    cache: LRUCache[str, None] = LRUCache(2)
    cache.set("a", None)
    sentinel = object()
    assert cache.get("a", sentinel) is None
    assert cache.stats()["hits"] == 1


def test_full_cache_evicts_least_recently_used() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    cache.set("a", 1)
    cache.set("b", 2)
    cache.set("c", 3)
    assert "a" not in cache
    assert len(cache) == 2
    assert cache.stats()["evictions"] == 1


def test_get_refreshes_recency() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    cache.set("a", 1)
    cache.set("b", 2)
    cache.get("a")
    cache.set("c", 3)
    assert "a" in cache
    assert "b" not in cache


def test_overwrite_refreshes_recency_without_eviction() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    cache.set("a", 1)
    cache.set("b", 2)
    cache.set("a", 10)
    cache.set("c", 3)
    assert cache.get("a") == 10
    assert "b" not in cache
    assert cache.stats()["evictions"] == 1


def test_contains_neither_counts_nor_refreshes() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    cache.set("a", 1)
    cache.set("b", 2)
    assert "a" in cache
    cache.set("c", 3)
    assert "a" not in cache
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (0, 0)


def test_expired_entry_is_a_miss_and_is_removed(fake_clock: FakeClock) -> None:
    cache: LRUCache[str, int] = LRUCache(4, ttl_seconds=10, clock=fake_clock)
    cache.set("a", 1)
    fake_clock.advance(9.999)
    assert cache.get("a") == 1
    fake_clock.advance(0.001)  # exactly at set time + ttl: expired
    assert "a" not in cache
    assert cache.get("a") is None
    assert len(cache) == 0
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["expirations"]) == (1, 1, 1)


def test_per_entry_ttl_overrides_the_cache_ttl(fake_clock: FakeClock) -> None:
    cache: LRUCache[str, int] = LRUCache(4, ttl_seconds=10, clock=fake_clock)
    cache.set("short", 1, ttl_seconds=1)
    cache.set("long", 2, ttl_seconds=100)
    cache.set("default", 3)
    fake_clock.advance(1)
    assert cache.get("short") is None
    fake_clock.advance(9)
    assert cache.get("default") is None
    assert cache.get("long") == 2


def test_per_entry_ttl_on_a_cache_without_ttl(fake_clock: FakeClock) -> None:
    cache: LRUCache[str, int] = LRUCache(4, clock=fake_clock)
    cache.set("a", 1, ttl_seconds=5)
    cache.set("b", 2)
    fake_clock.advance(5)
    assert cache.get("a") is None
    assert cache.get("b") == 2
    assert cache.ttl_seconds is None


def test_no_ttl_entries_never_expire(fake_clock: FakeClock) -> None:
    cache: LRUCache[str, int] = LRUCache(4, clock=fake_clock)
    cache.set("a", 1)
    fake_clock.advance(1e12)
    assert cache.get("a") == 1
    assert cache.expire() == 0


def test_expire_sweeps_only_expired_entries(fake_clock: FakeClock) -> None:
    evicted: list[tuple[str, int]] = []
    cache: LRUCache[str, int] = LRUCache(
        8, ttl_seconds=10, clock=fake_clock, on_evict=lambda k, v: evicted.append((k, v))
    )
    cache.set("a", 1)
    fake_clock.advance(5)
    cache.set("b", 2)
    fake_clock.advance(5)
    assert cache.expire() == 1
    assert evicted == [("a", 1)]
    assert len(cache) == 1
    assert cache.stats()["expirations"] == 1


def test_eviction_of_an_expired_lru_entry_counts_as_expiration(fake_clock: FakeClock) -> None:
    cache: LRUCache[str, int] = LRUCache(1, ttl_seconds=1, clock=fake_clock)
    cache.set("a", 1)
    fake_clock.advance(2)
    cache.set("b", 2)
    stats = cache.stats()
    assert (stats["evictions"], stats["expirations"]) == (0, 1)


def test_eviction_of_an_expired_per_entry_ttl_when_cache_has_no_ttl(
    fake_clock: FakeClock,
) -> None:
    cache: LRUCache[str, int] = LRUCache(1, clock=fake_clock)
    cache.set("a", 1, ttl_seconds=1)
    fake_clock.advance(2)
    cache.set("b", 2)
    assert cache.stats()["expirations"] == 1


def test_delete_reports_whether_a_live_entry_was_removed(fake_clock: FakeClock) -> None:
    cache: LRUCache[str, int] = LRUCache(4, ttl_seconds=1, clock=fake_clock)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.delete("a") is True
    assert cache.delete("a") is False
    fake_clock.advance(1)
    assert cache.delete("b") is False
    assert len(cache) == 0
    assert cache.stats()["expirations"] == 1


def test_clear_returns_count_and_skips_on_evict() -> None:
    evicted: list[str] = []
    cache: LRUCache[str, int] = LRUCache(
        4, max_bytes=10_000, on_evict=lambda k, v: evicted.append(k)
    )
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.clear() == 2
    assert len(cache) == 0
    assert cache.nbytes == 0
    assert evicted == []


def test_on_evict_runs_for_capacity_eviction_after_the_lock_is_released() -> None:
    lock = threading.Lock()  # not reentrant: acquiring it here fails if the cache holds it
    seen: list[tuple[str, int, bool]] = []

    def on_evict(key: str, value: int) -> None:
        is_free = lock.acquire(blocking=False)
        if is_free:
            lock.release()
        seen.append((key, value, is_free))

    cache: LRUCache[str, int] = LRUCache(1, on_evict=on_evict, lock=lock)
    cache.set("a", 1)
    cache.set("b", 2)
    assert seen == [("a", 1, True)]


def test_on_evict_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def boom(key: str, value: int) -> None:
        raise RuntimeError("boom")

    cache: LRUCache[str, int] = LRUCache(1, on_evict=boom, name="c")
    cache.set("a", 1)
    with caplog.at_level(logging.ERROR, logger="memsafe.cache"):
        cache.set("b", 2)
    assert "on_evict of cache 'c' failed" in caplog.text
    assert cache.get("b") == 2


def test_shrink_drops_the_fraction_lru_first() -> None:
    evicted: list[int] = []
    cache: LRUCache[int, int] = LRUCache(10, on_evict=lambda k, v: evicted.append(k))
    for i in range(10):
        cache.set(i, i)
    cache.get(0)
    assert cache.shrink(0.25) == 3  # ceil(10 * 0.25)
    assert evicted == [1, 2, 3]
    assert 0 in cache
    assert cache.shrink(0) == 0
    assert cache.shrink(1) == 7
    assert len(cache) == 0
    assert cache.stats()["evictions"] == 10


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan"), True, "0.5"])
def test_shrink_rejects_fractions_outside_zero_one(fraction: Any) -> None:
    cache: LRUCache[int, int] = LRUCache(2)
    with pytest.raises(ValueError, match="fraction must be a number in"):
        cache.shrink(fraction)


def test_get_or_set_calls_the_factory_only_on_a_miss() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    calls: list[int] = []

    def factory() -> int:
        calls.append(1)
        return 42

    assert cache.get_or_set("a", factory) == 42
    assert cache.get_or_set("a", factory) == 42
    assert len(calls) == 1


def test_get_or_set_uses_the_per_entry_ttl(fake_clock: FakeClock) -> None:
    cache: LRUCache[str, int] = LRUCache(2, clock=fake_clock)
    cache.get_or_set("a", lambda: 1, ttl_seconds=1)
    fake_clock.advance(1)
    assert "a" not in cache


def test_get_or_set_rejects_a_non_callable_factory() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    with pytest.raises(TypeError, match="factory must be callable, got 42"):
        cache.get_or_set("a", 42)  # type: ignore[arg-type]  # the point of the test


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_size": 0}, ValueError, "max_size must be an int >= 1, got 0"),
        ({"max_size": -3}, ValueError, "max_size must be an int >= 1, got -3"),
        ({"max_size": 2.5}, TypeError, "max_size must be an int >= 1, got 2.5"),
        ({"max_size": True}, TypeError, "max_size must be an int >= 1, got True"),
        ({"max_size": "3"}, TypeError, "max_size must be an int >= 1, got '3'"),
        ({"max_size": 1, "ttl_seconds": -1}, ValueError, "ttl_seconds must be a number > 0"),
        ({"max_size": 1, "ttl_seconds": 0}, ValueError, "ttl_seconds must be a number > 0"),
        ({"max_size": 1, "ttl_seconds": float("nan")}, ValueError, "got nan"),
        ({"max_size": 1, "ttl_seconds": "5"}, TypeError, "got '5'"),
        ({"max_size": 1, "policy": "lfu"}, ValueError, "policy must be one of"),
        ({"max_size": 1, "policy": 1}, TypeError, "policy must be one of"),
        ({"max_size": 1, "name": 1}, TypeError, "name must be a str, got 1"),
        ({"max_size": 1, "lock": 1}, TypeError, "lock must be a context manager"),
        (
            {"max_size": 1, "max_bytes": 0},
            ValueError,
            "max_bytes must be an int >= 1 or None, got 0",
        ),
        ({"max_size": 1, "max_bytes": "8"}, TypeError, "max_bytes must be an int >= 1 or None"),
        ({"max_size": 1, "sizeof": 3}, TypeError, "sizeof must be callable or None, got 3"),
        ({"max_size": 1, "on_evict": "x"}, TypeError, "on_evict must be callable or None"),
        ({"max_size": 1, "clock": 1.0}, TypeError, "clock must be callable, got 1.0"),
    ],
)
def test_invalid_arguments_name_the_argument_and_value(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        LRUCache(**kwargs)


def test_negative_per_entry_ttl_is_rejected() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    with pytest.raises(ValueError, match="ttl_seconds must be a number > 0 or None, got -1"):
        cache.set("a", 1, ttl_seconds=-1)
    assert len(cache) == 0


@pytest.mark.parametrize("max_bytes", [None, 10_000])
def test_unhashable_keys_raise_type_error_naming_the_key(max_bytes: int | None) -> None:
    cache: LRUCache[Any, int] = LRUCache(2, max_bytes=max_bytes)
    calls: list[Callable[[], object]] = [
        lambda: cache.get([1]),
        lambda: cache.set([1], 1),
        lambda: [1] in cache,
        lambda: cache.delete([1]),
    ]
    for call in calls:
        with pytest.raises(TypeError, match=r"key must be hashable, got \[1\] of type list"):
            call()
    # The lock was released on the error path.
    cache.set("ok", 1)
    assert cache.get("ok") == 1


def test_byte_bound_evicts_lru_until_the_value_fits() -> None:
    cache: LRUCache[str, int] = LRUCache(100, max_bytes=10, sizeof=int_size)
    cache.set("a", 4)
    cache.set("b", 4)
    assert cache.nbytes == 8
    cache.set("c", 7)
    assert "a" not in cache
    assert "b" not in cache
    assert cache.nbytes == 7
    assert cache.stats()["evictions"] == 2


def test_value_larger_than_max_bytes_is_rejected_and_drops_the_old_entry() -> None:
    evicted: list[str] = []
    cache: LRUCache[str, int] = LRUCache(
        100,
        max_bytes=10,
        sizeof=int_size,
        on_evict=lambda k, v: evicted.append(k),
    )
    cache.set("a", 3)
    cache.set("b", 3)
    cache.set("a", 11)
    assert "a" not in cache
    assert cache.get("b") == 3
    assert cache.nbytes == 3
    stats = cache.stats()
    assert (stats["rejections"], stats["evictions"]) == (1, 0)
    assert evicted == []


def test_overwrite_in_a_byte_bounded_cache_replaces_the_size() -> None:
    cache: LRUCache[str, int] = LRUCache(100, max_bytes=10, sizeof=int_size)
    cache.set("a", 6)
    cache.set("b", 2)
    cache.set("a", 8)  # 8 + 2 fits: nothing evicted
    assert cache.nbytes == 10
    assert len(cache) == 2
    assert cache.stats()["evictions"] == 0


def test_count_bound_still_applies_to_a_byte_bounded_cache() -> None:
    cache: LRUCache[str, str] = LRUCache(2, max_bytes=1_000_000)
    for key in "abc":
        cache.set(key, key)
    assert len(cache) == 2
    assert cache.nbytes == 2 * default_sizeof("a")


def test_default_sizeof_follows_containers_and_adds_the_entry_overhead() -> None:
    value = ["x" * 1000]
    expected = sys.getsizeof(value) + sys.getsizeof(value[0]) + ENTRY_OVERHEAD_BYTES
    assert default_sizeof(value) == expected
    cache: LRUCache[str, list[str]] = LRUCache(2, max_bytes=10_000)
    cache.set("a", value)
    assert cache.nbytes == expected


def test_an_explicit_sizeof_without_max_bytes_tracks_bytes_unbounded() -> None:
    cache: LRUCache[str, bytes] = LRUCache(4, sizeof=len)  # type: ignore[arg-type]  # bytes only
    cache.set("a", b"12345")
    assert cache.nbytes == 5
    assert cache.max_bytes is None


def test_expiry_in_a_byte_bounded_cache_releases_bytes(fake_clock: FakeClock) -> None:
    cache: LRUCache[str, str] = LRUCache(4, ttl_seconds=1, max_bytes=10_000, clock=fake_clock)
    cache.set("a", "x")
    cache.set("b", "y", ttl_seconds=5)
    fake_clock.advance(1)
    assert cache.get("a") is None
    assert cache.nbytes == default_sizeof("y")
    fake_clock.advance(4)
    assert cache.expire() == 1
    assert cache.nbytes == 0
    cache.set("c", "z", ttl_seconds=1)
    fake_clock.advance(1)
    assert cache.delete("c") is False
    assert cache.nbytes == 0


def test_evicting_an_expired_entry_in_a_byte_bounded_cache(fake_clock: FakeClock) -> None:
    cache: LRUCache[str, str] = LRUCache(1, ttl_seconds=1, max_bytes=10_000, clock=fake_clock)
    cache.set("a", "x")
    fake_clock.advance(1)
    cache.set("b", "y")
    assert cache.stats()["expirations"] == 1


def test_stats_snapshot_has_every_field() -> None:
    cache: LRUCache[str, int] = LRUCache(3, ttl_seconds=5, max_bytes=1000, name="users")
    assert cache.stats() == {
        "name": "users",
        "size": 0,
        "max_size": 3,
        "bytes": 0,
        "max_bytes": 1000,
        "hits": 0,
        "misses": 0,
        "evictions": 0,
        "expirations": 0,
        "rejections": 0,
        "hit_rate": 0.0,
    }
    cache.set("a", 1)
    cache.get("a")
    cache.get("b")
    cache.get("c")
    assert cache.stats()["hit_rate"] == pytest.approx(1 / 3)


def test_properties_report_the_settings() -> None:
    cache: LRUCache[str, int] = LRUCache(3, ttl_seconds=5, max_bytes=100, name="n")
    assert (cache.name, cache.max_size, cache.ttl_seconds, cache.max_bytes, cache.nbytes) == (
        "n",
        3,
        5.0,
        100,
        0,
    )
    assert repr(cache) == (
        "LRUCache(name='n', size=0, max_size=3, ttl_seconds=5.0, max_bytes=100, policy='lru')"
    )


def test_hits_take_no_lock_and_writes_take_it_once() -> None:
    lock = CountingLock()
    cache: LRUCache[str, int] = LRUCache(2, ttl_seconds=60, lock=lock)
    cache.set("a", 1)
    assert lock.enters == 1
    for _ in range(10):
        cache.get("a")
        cache.get("missing")
    assert lock.enters == 1
    cache.stats()
    assert lock.enters == 2


def test_a_subclass_overriding_get_and_set_is_respected() -> None:
    class Upper(LRUCache[str, str]):
        def get(self, key: str, default: object = None) -> Any:
            value = super().get(key, default)
            return value.upper() if isinstance(value, str) else value

        def set(self, key: str, value: str, ttl_seconds: float | None = None) -> None:
            super().set(key, value + "!", ttl_seconds)

    cache = Upper(2)
    cache.set("a", "x")
    assert cache.get("a") == "X!"


def test_track_bytes_sizes_existing_entries_and_calls_the_hook() -> None:
    grown: list[int] = []
    cache: LRUCache[str, str] = LRUCache(4)
    cache.set("a", "x")
    cache._track_bytes(lambda c: grown.append(c.nbytes))
    assert cache.nbytes == default_sizeof("x")
    cache.set("b", "y")
    assert grown == [2 * default_sizeof("x")]
    cache.delete("b")
    cache._track_bytes(None)
    cache.set("c", "z")
    assert grown == [2 * default_sizeof("x")]


def test_evict_bytes_frees_at_least_the_target_lru_first() -> None:
    cache: LRUCache[str, int] = LRUCache(10, sizeof=int_size)
    for key, size in (("a", 3), ("b", 3), ("c", 3)):
        cache.set(key, size)
    assert cache._evict_bytes(4) == 6
    assert list(cache._data) == ["c"]


def test_peek_neither_counts_nor_refreshes(fake_clock: FakeClock) -> None:
    cache: LRUCache[str, int] = LRUCache(2, ttl_seconds=1, clock=fake_clock)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache._peek("a", None) == 1
    assert cache._peek("zz", None) is None
    cache.set("c", 3)
    assert "a" not in cache
    fake_clock.advance(1)
    assert cache._peek("b", "gone") == "gone"
    assert cache.stats()["hits"] == 0


class RacingClock:
    """A clock that runs `race` on its next read: a writer thread acting mid-`get`."""

    def __init__(self) -> None:
        self.now = 0.0
        self.race: Any = None

    def __call__(self) -> float:
        race, self.race = self.race, None
        if race is not None:
            race()
        return self.now


def test_hit_on_an_entry_removed_mid_get_returns_the_value_read() -> None:
    clock = RacingClock()
    cache: LRUCache[str, int] = LRUCache(2, ttl_seconds=10, clock=clock)
    cache.set("a", 1)
    clock.race = lambda: cache._data.pop("a")
    assert cache.get("a") == 1  # read before the removal: linearizable as get-then-delete
    assert "a" not in cache
    assert cache.stats()["hits"] == 1


def test_expired_entry_replaced_mid_get_is_a_miss_that_keeps_the_new_entry() -> None:
    clock = RacingClock()
    cache: LRUCache[str, str] = LRUCache(2, ttl_seconds=1, max_bytes=10_000, clock=clock)
    cache.set("a", "old")
    clock.now = 5.0
    clock.race = lambda: cache.set("a", "new")
    assert cache.get("a") is None
    assert cache.get("a") == "new"
    stats = cache.stats()
    assert (stats["expirations"], stats["size"], stats["bytes"]) == (0, 1, default_sizeof("new"))


class EnterExitLock:
    """A lock with only the context-manager protocol (no acquire/release)."""

    def __init__(self) -> None:
        self.enters = 0
        self.depth = 0

    def __enter__(self) -> EnterExitLock:
        self.enters += 1
        self.depth += 1
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any, /) -> None:
        self.depth -= 1


def test_a_context_manager_only_lock_is_taken_and_always_released() -> None:
    lock = EnterExitLock()
    cache: LRUCache[Any, int] = LRUCache(1, lock=lock)
    cache.set("a", 1)
    cache.set("b", 2)  # evicts
    with pytest.raises(TypeError, match="key must be hashable"):
        cache.set([1], 3)
    assert (lock.enters, lock.depth) == (3, 0)


class _TrackingOnAcquireLock(CountingLock):
    """A lock whose next acquire first runs `fire`, as another thread could just before it."""

    def __init__(self) -> None:
        super().__init__()
        self.fire: Callable[[], None] | None = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        acquired = super().acquire(blocking, timeout)
        fire, self.fire = self.fire, None
        if fire is not None:
            fire()
        return acquired


def test_set_racing_with_byte_tracking_switching_on_stores_a_sized_entry() -> None:
    lock = _TrackingOnAcquireLock()
    cache: LRUCache[str, int] = LRUCache(10, lock=lock)
    cache.set("a", 1)
    lock.fire = lambda: cache._track_bytes(None)  # the manager adding a budget mid-set
    cache.set("b", 2)
    cache.set("b", 3)  # an overwrite reads the stored entry's size
    assert cache.get("b") == 3
    assert cache.nbytes == default_sizeof(1) + default_sizeof(3)
    cache.shrink(1.0)
    assert cache.nbytes == 0


@pytest.mark.parametrize("max_bytes", [None, 10**6], ids=["untracked", "byte-tracked"])
def test_shrink_counts_already_expired_entries_as_expirations(
    fake_clock: FakeClock, max_bytes: int | None
) -> None:
    cache: LRUCache[str, int] = LRUCache(10, max_bytes=max_bytes, clock=fake_clock)
    cache.set("old", 1, ttl_seconds=1)
    cache.set("live", 2)
    fake_clock.advance(1)
    assert cache.shrink(1.0) == 2
    stats = cache.stats()
    assert (stats["expirations"], stats["evictions"]) == (1, 1)


def test_byte_budget_eviction_counts_already_expired_entries_as_expirations(
    fake_clock: FakeClock,
) -> None:
    cache: LRUCache[str, int] = LRUCache(10, max_bytes=100, sizeof=int_size, clock=fake_clock)
    cache.set("old", 10, ttl_seconds=1)
    cache.set("live", 20)
    fake_clock.advance(1)
    assert cache._evict_bytes(30) == 30
    stats = cache.stats()
    assert (stats["expirations"], stats["evictions"]) == (1, 1)
