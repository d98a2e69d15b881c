"""Eviction policies of LRUCache: scan resistance, the frequency sketch, lock-free hit replay."""

from __future__ import annotations

import random

import pytest

from memsafe._policy import (
    POLICIES,
    READ_BUFFER_SIZE,
    SAMPLE_FACTOR,
    SKETCH_MAX_WIDTH_BITS,
    FrequencySketch,
    SegmentedPolicy,
)
from memsafe.cache import LRUCache
from memsafe.manager import CacheManager
from tests.memsafe.fakes import CountingLock


def _hot_hits_after_a_scan(policy: str) -> int:
    # 20 hot keys read 5 times each, then a scan of 200 keys read once, then the hot keys again.
    cache: LRUCache[str, int] = LRUCache(50, policy=policy)
    hot = [f"hot:{i}" for i in range(20)]
    for _ in range(5):
        for key in hot:
            if cache.get(key) is None:
                cache.set(key, 1)
    for i in range(200):
        cache.set(f"scan:{i}", 1)
    return sum(cache.get(key) is not None for key in hot)


def test_a_scan_flushes_every_hot_key_out_of_plain_lru() -> None:
    assert _hot_hits_after_a_scan("lru") == 0


@pytest.mark.parametrize("policy", ["slru", "tinylfu"])
def test_scan_resistant_policies_keep_the_hot_keys_through_a_scan(policy: str) -> None:
    assert _hot_hits_after_a_scan(policy) == 20


def test_tinylfu_admits_a_new_key_once_it_is_requested_more_often_than_the_victim() -> None:
    cache: LRUCache[str, int] = LRUCache(10, policy="tinylfu")
    for i in range(10):
        cache.set(f"k{i}", i)
    for _ in range(3):  # a newcomer asked for again and again (read-through after each miss)
        if cache.get("new") is None:
            cache.set("new", 1)
        for i in range(40):  # one-off keys push it out of the window each time
            cache.set(f"once{i}", i)
    assert "new" in cache


def test_hits_are_lock_free_and_replayed_on_the_next_write() -> None:
    lock = CountingLock()
    cache: LRUCache[str, int] = LRUCache(4, lock=lock, policy="slru")
    cache.set("a", 1)
    policy = cache._policy
    assert policy is not None
    before = lock.enters
    assert cache.get("a") == 1
    assert lock.enters == before  # no lock on a hit
    assert list(policy.probation) == ["a"]  # not yet replayed
    cache.set("b", 2)
    assert list(policy.protected) == ["a"]  # promoted by the replayed hit
    assert list(policy.probation) == ["b"]


def test_a_hit_recorded_before_its_key_expires_still_reorders_the_other_keys() -> None:
    # slru of 2: protected holds 1. Hits on a then b promote both; b's promotion demotes a.
    now = [0.0]
    cache: LRUCache[str, int] = LRUCache(2, clock=lambda: now[0], policy="slru")
    cache.set("a", 1)
    cache.set("b", 2, ttl_seconds=1)
    assert cache.get("a") == 1
    assert cache.get("b") == 2
    now[0] = 5.0
    assert cache.get("b") is None  # expired: dropped after the recorded hits are replayed
    policy = cache._policy
    assert policy is not None
    cache._sync()  # what the next write does first
    assert (list(policy.probation), list(policy.protected)) == (["a"], [])


def test_the_read_buffer_is_bounded_and_drops_the_oldest_hits() -> None:
    cache: LRUCache[int, int] = LRUCache(4, policy="tinylfu")
    cache.set(1, 1)
    for _ in range(READ_BUFFER_SIZE * 3):
        cache.get(1)
    assert cache._policy is not None
    assert len(cache._policy._buffer) == READ_BUFFER_SIZE


@pytest.mark.parametrize("policy", POLICIES)
def test_shrink_and_the_budget_evict_in_policy_order_and_keep_bounds(policy: str) -> None:
    manager = CacheManager(max_total_bytes=10_000)
    cache = manager.create_cache("c", max_size=1000, policy=policy, sizeof=lambda v: 100)
    rng = random.Random(3)
    for _ in range(2000):
        key = rng.randrange(300)
        if cache.get(key) is None:
            cache.set(key, key)
        assert manager.total_bytes() <= 10_000
    assert len(cache) == 100
    assert cache.shrink(0.5) == 50
    assert len(cache) == 50
    if cache._policy is not None:
        assert len(cache._policy) == 50


@pytest.mark.parametrize("policy", ["slru", "tinylfu"])
def test_delete_expire_and_clear_keep_the_policy_in_step(policy: str) -> None:
    now = [0.0]
    cache: LRUCache[int, int] = LRUCache(8, ttl_seconds=5, clock=lambda: now[0], policy=policy)
    for i in range(8):
        cache.set(i, i)
        cache.get(i)
    assert cache.delete(3) is True
    now[0] = 10.0
    assert cache.get(4) is None  # expired on read
    cache.set(9, 9, ttl_seconds=100)
    assert cache.expire() == 6
    assert cache._policy is not None
    assert len(cache._policy) == len(cache) == 1
    assert cache.clear() == 1
    assert len(cache._policy) == 0


def test_repr_and_property_name_the_policy() -> None:
    cache: LRUCache[int, int] = LRUCache(3, policy="slru")
    assert cache.policy == "slru"
    assert "policy='slru'" in repr(cache)
    assert LRUCache(3).policy == "lru"


def test_sketch_never_undercounts_before_aging_and_saturates_at_15() -> None:
    sketch = FrequencySketch(1000)
    counts = {key: (key % 7) + 1 for key in range(300)}
    for key, count in counts.items():
        for _ in range(count):
            sketch.increment(key)
    assert all(sketch.frequency(key) >= count for key, count in counts.items())
    exact = sum(sketch.frequency(key) == count for key, count in counts.items())
    assert exact >= 0.95 * len(counts)  # collisions are rare at this width
    for _ in range(40):
        sketch.increment("hot")
    assert sketch.frequency("hot") == 15


def test_sketch_halves_its_counters_after_a_sample_of_increments() -> None:
    sketch = FrequencySketch(4)
    for _ in range(12):
        sketch.increment("a")
    before = sketch.frequency("a")
    for i in range(SAMPLE_FACTOR * 4):
        sketch.increment(("other", i))
    assert sketch.frequency("a") <= before // 2 + 1
    sketch.clear()
    assert sketch.frequency("a") == 0


def test_sketch_memory_is_bounded_however_large_the_cache() -> None:
    assert FrequencySketch(10).nbytes == 4 * 1024
    assert FrequencySketch(5000).nbytes == 4 * 8192
    assert FrequencySketch(10**9).nbytes == 4 << SKETCH_MAX_WIDTH_BITS


def test_victim_of_a_policy_holding_only_the_kept_key_is_an_error() -> None:
    policy = SegmentedPolicy("slru", 2)
    policy.insert("only")
    with pytest.raises(LookupError, match="only 'only' is stored"):
        policy.victim(keep="only")
