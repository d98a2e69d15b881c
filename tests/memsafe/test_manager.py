"""Tests of memsafe.manager.CacheManager: registry, stats, bulk operations, byte budget."""

from __future__ import annotations

from typing import Any

import pytest

from memsafe.cache import LRUCache, default_sizeof
from memsafe.manager import CacheManager, cache_manager
from tests.conftest import FakeClock


def int_size(value: object) -> int:
    return value if isinstance(value, int) else 0


def test_create_cache_returns_the_same_cache_for_the_same_settings() -> None:
    manager = CacheManager()
    users = manager.create_cache("users", max_size=10, ttl_seconds=60)
    assert manager.create_cache("users", max_size=10, ttl_seconds=60) is users
    assert manager.get_cache("users") is users
    assert users.name == "users"
    assert manager.names() == ["users"]


def test_create_cache_passes_the_policy_through() -> None:
    manager = CacheManager()
    cache = manager.create_cache("users", max_size=10, policy="tinylfu")
    assert cache.policy == "tinylfu"
    assert manager.create_cache("users", max_size=10, policy="tinylfu") is cache
    with pytest.raises(ValueError, match="exists with settings"):
        manager.create_cache("users", max_size=10, policy="slru")
    with pytest.raises(ValueError, match="policy must be one of"):
        manager.create_cache("other", policy="lfu")


def test_create_cache_with_different_settings_raises() -> None:
    manager = CacheManager()
    manager.create_cache("users", max_size=10)
    with pytest.raises(ValueError, match="cache 'users' exists with settings"):
        manager.create_cache("users", max_size=20)
    with pytest.raises(ValueError, match="cache 'users' exists with settings"):
        manager.create_cache("users", max_size=10, sizeof=len)


@pytest.mark.parametrize(("name", "error"), [("", ValueError), (None, TypeError), (3, TypeError)])
def test_create_cache_rejects_bad_names(name: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="name must be a non-empty str"):
        CacheManager().create_cache(name)


def test_create_cache_validates_the_cache_settings() -> None:
    manager = CacheManager()
    with pytest.raises(ValueError, match="max_size must be an int >= 1, got 0"):
        manager.create_cache("a", max_size=0)
    assert manager.names() == []


def test_get_cache_of_an_unknown_name_is_none() -> None:
    assert CacheManager().get_cache("nope") is None


def test_remove_cache_forgets_it() -> None:
    manager = CacheManager(max_total_bytes=10_000)
    cache = manager.create_cache("a")
    assert manager.remove_cache("a") is True
    assert manager.remove_cache("a") is False
    assert manager.get_cache("a") is None
    assert cache._grow_hook is None
    assert manager.create_cache("a", max_size=5) is not cache


def test_stats_report_each_cache_and_totals() -> None:
    manager = CacheManager(max_total_bytes=1_000_000)
    a = manager.create_cache("a")
    b = manager.create_cache("b")
    a.set("k", "v")
    a.get("k")
    b.get("missing")
    stats = manager.get_cache_stats()
    assert set(stats["caches"]) == {"a", "b"}
    assert stats["caches"]["a"]["hits"] == 1
    totals = stats["totals"]
    assert totals["size"] == 1
    assert totals["bytes"] == default_sizeof("v")
    assert (totals["hits"], totals["misses"], totals["hit_rate"]) == (1, 1, 0.5)
    assert totals["max_total_bytes"] == 1_000_000
    assert (totals["evictions"], totals["expirations"]) == (0, 0)


def test_stats_of_an_empty_manager() -> None:
    totals = CacheManager().get_cache_stats()["totals"]
    assert totals["hit_rate"] == 0.0
    assert totals["size"] == 0


def test_managed_caches_track_bytes_even_without_a_budget() -> None:
    manager = CacheManager()
    cache = manager.create_cache("a")
    cache.set("k", "value")
    assert manager.total_bytes() == default_sizeof("value")
    assert cache._grow_hook is None  # no budget: no notification cost


def test_clear_expire_and_shrink_all(fake_clock: FakeClock) -> None:
    manager = CacheManager()
    a = manager.create_cache("a", ttl_seconds=1, clock=fake_clock)
    b = manager.create_cache("b")
    for i in range(4):
        a.set(i, i)
        b.set(i, i)
    assert manager.shrink_all(0.5) == 4
    fake_clock.advance(1)
    assert manager.expire_all() == 2
    assert manager.clear_all() == 2
    assert manager.total_bytes() == 0


def test_budget_evicts_lru_from_the_largest_cache_first() -> None:
    manager = CacheManager(max_total_bytes=10)
    big = manager.create_cache("big", sizeof=int_size)
    small = manager.create_cache("small", sizeof=int_size)
    small.set("s", 2)
    big.set("b1", 3)
    big.set("b2", 3)
    assert manager.total_bytes() == 8
    big.set("b3", 3)  # 11 > 10: the largest cache (big) drops its LRU entry
    assert manager.total_bytes() == 8
    assert "b1" not in big
    assert "s" in small
    assert big.stats()["evictions"] == 1


def test_budget_moves_to_the_next_largest_cache_when_needed() -> None:
    manager = CacheManager(max_total_bytes=10)
    a = manager.create_cache("a", sizeof=int_size)
    b = manager.create_cache("b", sizeof=int_size)
    a.set("a1", 5)
    b.set("b1", 4)
    b.set("b2", 1)  # 10: at the budget, nothing happens
    assert manager.total_bytes() == 10
    a.set("a2", 1)  # 11: a (6 bytes) is the largest; dropping a1 frees 5
    assert "a1" not in a
    assert manager.total_bytes() == 6


def test_set_budget_enforces_at_once_and_none_removes_it() -> None:
    manager = CacheManager()
    cache = manager.create_cache("a", sizeof=int_size)
    for i in range(5):
        cache.set(i, 2)
    manager.set_budget(6)
    assert manager.max_total_bytes == 6
    assert manager.total_bytes() == 6
    assert list(cache._data) == [2, 3, 4]
    manager.set_budget(None)
    assert cache._grow_hook is None
    for i in range(5, 10):
        cache.set(i, 2)
    assert manager.total_bytes() == 16


@pytest.mark.parametrize(
    ("budget", "error"),
    [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), ("10", TypeError)],
)
def test_invalid_budgets_are_rejected(budget: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_total_bytes must be an int >= 1 or None"):
        CacheManager(max_total_bytes=budget)
    with pytest.raises(error, match="max_total_bytes must be an int >= 1 or None"):
        CacheManager().set_budget(budget)


def test_reset_forgets_every_cache_and_the_budget() -> None:
    manager = CacheManager(max_total_bytes=100)
    cache = manager.create_cache("a")
    manager.reset()
    assert manager.names() == []
    assert manager.max_total_bytes is None
    assert cache._grow_hook is None


def test_a_cache_not_created_by_the_manager_is_not_counted() -> None:
    manager = CacheManager(max_total_bytes=100)
    outside: LRUCache[str, str] = LRUCache(10, max_bytes=10_000)
    outside.set("a", "x")
    assert manager.total_bytes() == 0


def test_the_process_wide_manager_exists() -> None:
    assert isinstance(cache_manager, CacheManager)
