"""Tests of memsafe.decorators.cached: memoization, single flight, errors, sync and async."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from memsafe.cache import LRUCache
from memsafe.decorators import cached
from tests.conftest import FakeClock


def test_sync_results_are_cached_per_arguments() -> None:
    cache: LRUCache[Any, Any] = LRUCache(10)
    calls: list[tuple[int, int]] = []

    @cached(cache)
    def add(a: int, b: int = 0) -> int:
        calls.append((a, b))
        return a + b

    assert add(1, 2) == 3
    assert add(1, 2) == 3
    assert add(1, b=2) == 3  # a different call shape is a different key
    assert add(2) == 2
    assert calls == [(1, 2), (1, 2), (2, 0)]
    assert add.__name__ == "add"


def test_functions_sharing_a_cache_do_not_collide() -> None:
    cache: LRUCache[Any, Any] = LRUCache(10)

    @cached(cache)
    def double(x: int) -> int:
        return 2 * x

    @cached(cache)
    def triple(x: int) -> int:
        return 3 * x

    assert (double(1), triple(1)) == (2, 3)


def test_custom_key_function() -> None:
    cache: LRUCache[Any, Any] = LRUCache(10)
    calls: list[str] = []

    @cached(cache, key=lambda user_id, verbose=False: f"user:{user_id}")
    def load(user_id: int, verbose: bool = False) -> str:
        calls.append(f"{user_id}")
        return f"user {user_id}"

    load(1)
    load(1, verbose=True)
    assert calls == ["1"]
    assert cache.get("user:1") == "user 1"


def test_ttl_seconds_overrides_the_cache_ttl(fake_clock: FakeClock) -> None:
    cache: LRUCache[Any, Any] = LRUCache(10, ttl_seconds=100, clock=fake_clock)
    calls: list[int] = []

    @cached(cache, ttl_seconds=1)
    def load(x: int) -> int:
        calls.append(x)
        return x

    load(1)
    fake_clock.advance(1)
    load(1)
    assert calls == [1, 1]


def test_sync_exceptions_are_not_cached() -> None:
    cache: LRUCache[Any, Any] = LRUCache(10)
    attempts: list[int] = []

    @cached(cache)
    def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) == 1:
            raise RuntimeError("first call fails")
        return x

    with pytest.raises(RuntimeError, match="first call fails"):
        flaky(1)
    assert flaky(1) == 1
    assert attempts == [1, 1]


def test_a_value_stored_while_waiting_for_the_lock_is_used_without_a_call() -> None:
    # Simulates a leader finishing between this caller's miss and its turn at the table.
    class RacedCache(LRUCache[Any, Any]):
        def get(self, key: Any, default: Any = None) -> Any:
            self.set(key, "from the leader")
            return default  # this caller saw a miss

    calls: list[int] = []

    @cached(RacedCache(10))
    def load(x: int) -> str:
        calls.append(x)
        return "from a second call"

    assert load(1) == "from the leader"
    assert calls == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"cache": {}}, TypeError, "cache must be a memsafe LRUCache, got {}"),
        ({"key": 3}, TypeError, "key must be callable or None, got 3"),
        ({"ttl_seconds": -1}, ValueError, "ttl_seconds must be a number > 0 or None, got -1"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    arguments: dict[str, Any] = {"cache": LRUCache(1), **kwargs}
    with pytest.raises(error, match=match):
        cached(**arguments)


def test_decorating_a_non_callable_raises() -> None:
    with pytest.raises(TypeError, match="cached\\(\\) decorates a callable, got 3"):
        cached(LRUCache(1))(3)  # type: ignore[type-var]  # the point of the test


def test_unhashable_arguments_raise_type_error() -> None:
    @cached(LRUCache(1))
    def load(items: list[int]) -> int:
        return len(items)

    with pytest.raises(TypeError, match="key must be hashable"):
        load([1, 2])


# -- async -----------------------------------------------------------------------------------


def test_async_results_are_cached() -> None:
    cache: LRUCache[Any, Any] = LRUCache(10)
    calls: list[int] = []

    @cached(cache)
    async def load(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(0)
        return x * 10

    async def main() -> tuple[int, int]:
        return await load(1), await load(1)

    assert asyncio.run(main()) == (10, 10)
    assert calls == [1]
    assert asyncio.iscoroutinefunction(load)


def test_100_concurrent_awaiters_of_one_missing_key_make_one_call() -> None:
    cache: LRUCache[Any, Any] = LRUCache(10)
    calls: list[int] = []

    async def main() -> list[int]:
        gate = asyncio.Event()

        @cached(cache)
        async def load(x: int) -> int:
            calls.append(x)
            await gate.wait()
            return x + 1

        tasks = [asyncio.create_task(load(7)) for _ in range(100)]
        for _ in range(3):
            await asyncio.sleep(0)  # every task reaches its await
        gate.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == [8] * 100
    assert calls == [7]
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (0, 100)


def test_async_exceptions_reach_every_waiter_and_are_not_cached() -> None:
    cache: LRUCache[Any, Any] = LRUCache(10)
    calls: list[int] = []

    @cached(cache)
    async def load(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(0)
        if len(calls) == 1:
            raise RuntimeError("backend down")
        return x

    async def main() -> tuple[list[Any], int]:
        results = await asyncio.gather(*(load(1) for _ in range(10)), return_exceptions=True)
        return results, await load(1)

    results, retried = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert retried == 1
    assert calls == [1, 1]


def test_a_caller_arriving_after_a_failure_before_cleanup_starts_a_new_call() -> None:
    # asyncio runs ready callbacks in FIFO order: the late caller, woken by the same gate as the
    # failing call, runs after that call's task is done but before its done-callback removes
    # it from the in-flight table. It must start a new call, not get the finished exception.
    cache: LRUCache[Any, Any] = LRUCache(10)
    calls: list[int] = []

    async def main() -> BaseException | None:
        gate = asyncio.Event()

        @cached(cache)
        async def load(x: int) -> int:
            calls.append(x)
            await gate.wait()
            raise RuntimeError(f"backend down (call {len(calls)})")

        async def late_caller() -> int:
            await gate.wait()
            return await load(1)

        first = asyncio.create_task(load(1))
        for _ in range(2):
            await asyncio.sleep(0)  # the shared call starts and waits on the gate
        late = asyncio.create_task(late_caller())
        await asyncio.sleep(0)  # the late caller waits on the gate after it
        gate.set()
        await asyncio.gather(first, late, return_exceptions=True)
        assert isinstance(first.exception(), RuntimeError)
        return late.exception()

    late_error = asyncio.run(main())
    assert calls == [1, 1]
    assert str(late_error) == "backend down (call 2)"


def test_a_cancelled_caller_does_not_cancel_the_shared_call() -> None:
    cache: LRUCache[Any, Any] = LRUCache(10)
    calls: list[int] = []

    async def main() -> int:
        gate = asyncio.Event()

        @cached(cache)
        async def load(x: int) -> int:
            calls.append(x)
            await gate.wait()
            return x

        first = asyncio.create_task(load(5))
        second = asyncio.create_task(load(5))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        gate.set()
        return await second

    assert asyncio.run(main()) == 5
    assert calls == [5]
    assert (
        cache.get(
            (
                "test_a_cancelled_caller_does_not_cancel_the_shared_call.<locals>.main.<locals>.load",
                (5,),
            )
        )
        == 5
    )


def test_async_works_across_event_loops() -> None:
    cache: LRUCache[Any, Any] = LRUCache(10, ttl_seconds=60)

    @cached(cache, ttl_seconds=1e-9)  # expires at once: every run loads again
    async def load(x: int) -> int:
        await asyncio.sleep(0)
        return x

    assert asyncio.run(load(1)) == 1
    assert asyncio.run(load(1)) == 1


# -- threads ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_threads_missing_one_key_make_one_call() -> None:
    cache: LRUCache[Any, Any] = LRUCache(10)
    calls: list[int] = []
    release = threading.Event()

    @cached(cache)
    def load(x: int) -> int:
        calls.append(x)
        release.wait(timeout=10)
        return x * 2

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(load(21))) for _ in range(16)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # let every thread reach the cache while the first call is blocked
    release.set()
    for thread in threads:
        thread.join()
    assert results == [42] * 16
    assert calls == [21]


@pytest.mark.slow
def test_thread_waiters_get_the_leaders_exception_and_nothing_is_cached() -> None:
    cache: LRUCache[Any, Any] = LRUCache(10)
    calls: list[int] = []
    release = threading.Event()

    @cached(cache)
    def load(x: int) -> int:
        calls.append(x)
        release.wait(timeout=10)
        raise ValueError("bad")

    errors: list[BaseException] = []

    def call() -> None:
        try:
            load(1)
        except ValueError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    release.set()
    for thread in threads:
        thread.join()
    assert len(errors) == 8
    assert calls == [1]
    assert len(cache) == 0
