"""8 real threads x 50k mixed operations on one LRUCache: bounds and counters hold throughout."""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Iterator

import pytest

from memsafe._policy import POLICIES
from memsafe.cache import LRUCache

THREADS = 8
OPS_PER_THREAD = 50_000
MAX_SIZE = 64
MAX_BYTES = 64 * 100


@pytest.fixture
def fast_switching() -> Iterator[None]:
    # Switch threads far more often than the default 5 ms, to interleave the lock-free hit
    # path with writers as much as possible.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def _size(value: object) -> int:
    return len(value) if isinstance(value, str) else 0


@pytest.mark.slow
@pytest.mark.usefixtures("fast_switching")
@pytest.mark.parametrize("max_bytes", [None, MAX_BYTES], ids=["count-bound", "byte-bound"])
@pytest.mark.parametrize("policy", POLICIES)
def test_threads_hammering_one_cache_keep_bounds_and_exact_counts(
    max_bytes: int | None, policy: str
) -> None:
    evicted = [0]
    cache: LRUCache[int, str] = LRUCache(
        MAX_SIZE,
        ttl_seconds=0.002,  # short: expiry races with hits
        max_bytes=max_bytes,
        sizeof=_size if max_bytes is not None else None,
        on_evict=lambda k, v: evicted.__setitem__(0, evicted[0] + 1),
        policy=policy,
    )
    gets = [0] * THREADS
    violations: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS + 1)
    done = threading.Event()

    def observe(where: str) -> None:
        size, nbytes = len(cache), cache.nbytes
        if size > MAX_SIZE or (max_bytes is not None and nbytes > max_bytes):
            violations.append(f"{where}: size={size} bytes={nbytes}")

    def worker(index: int) -> None:
        rng = random.Random(index)
        count = 0
        try:
            barrier.wait()
            for i in range(OPS_PER_THREAD):
                key = rng.randrange(200)
                op = rng.random()
                if op < 0.6:
                    cache.get(key)
                    count += 1
                elif op < 0.65:
                    cache.get_or_set(key, lambda: "v" * rng.randrange(1, 150))
                    count += 1
                elif op < 0.9:
                    ttl = 0.001 if op < 0.7 else None
                    cache.set(key, "v" * rng.randrange(1, 150), ttl)
                elif op < 0.95:
                    cache.delete(key)
                elif op < 0.97:
                    _ = key in cache
                elif op < 0.99:
                    cache.expire()
                else:
                    cache.shrink(0.1)
                if i % 16 == 0:
                    observe(f"thread {index}")
        except BaseException as exc:
            errors.append(exc)
        finally:
            gets[index] = count

    def observer() -> None:
        barrier.wait()
        while not done.is_set():
            stats = cache.stats()
            if stats["size"] > MAX_SIZE or (max_bytes is not None and stats["bytes"] > max_bytes):
                violations.append(f"stats: {stats}")
            observe("observer")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    watcher = threading.Thread(target=observer)
    for thread in [*threads, watcher]:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    watcher.join()

    assert errors == []
    assert violations == []
    stats = cache.stats()
    assert stats["hits"] + stats["misses"] == sum(gets)
    assert stats["hits"] > 0
    assert stats["expirations"] > 0
    assert stats["size"] <= MAX_SIZE
    if max_bytes is not None:
        assert stats["bytes"] == sum(len(e[0]) for e in cache._data.values()) <= max_bytes
    assert evicted[0] > 0
    if cache._policy is not None:  # the policy orders exactly the stored keys
        cache._sync()
        ordered = [*cache._policy.window, *cache._policy.probation, *cache._policy.protected]
        assert set(cache._data) == set(ordered)
        assert len(ordered) == len(cache._data)


@pytest.mark.slow
@pytest.mark.parametrize("max_bytes", [None, 10**6], ids=["untracked", "byte-tracked"])
def test_overwriting_a_key_never_hides_it_from_a_concurrent_get(max_bytes: int | None) -> None:
    # An overwrite must swap the entry in place: a lock-free get between "remove" and
    # "re-insert" would report a miss on a key that is always present.
    cache: LRUCache[str, str] = LRUCache(100, max_bytes=max_bytes)
    cache.set("k", "v")
    stop = threading.Event()

    def overwrite() -> None:
        while not stop.is_set():
            cache.set("k", "v")

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    writer = threading.Thread(target=overwrite)
    writer.start()
    misses = 0
    try:
        for _ in range(100_000):
            if cache.get("k") is None:
                misses += 1
    finally:
        stop.set()
        writer.join()
        sys.setswitchinterval(previous)
    assert misses == 0
