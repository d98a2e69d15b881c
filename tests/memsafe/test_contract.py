"""One contract, checked against every bounded container memsafe ships."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from memsafe._policy import POLICIES
from memsafe._routes import RouteBuckets
from memsafe.bounded import BoundedDict, BoundedList, MetricsCollector
from memsafe.cache import LRUCache
from memsafe.decorators import cached
from memsafe.manager import CacheManager
from memsafe.middleware import MemoryMonitor
from tests.memsafe.fakes import CountingLock


@dataclass(frozen=True)
class ContainerCase:
    """How the contract drives one kind of container."""

    build: Callable[..., Any]
    """``build(limit, lock=None)`` returns an empty container holding at most ``limit`` items."""
    put: Callable[[Any, int], None]
    """Adds item number ``i`` (a new key for keyed containers)."""
    limit_argument: str
    """Constructor argument that sets the limit; errors must name it."""
    drops_key: str = "dropped"
    """The ``stats()`` key counting what the container dropped at capacity."""
    is_keyed: bool = True
    """Putting an existing key again replaces it instead of adding an item."""


def _record(collector: MetricsCollector, i: int) -> None:
    collector.record(f"metric-{i}", float(i))


CASES: dict[str, ContainerCase] = {
    "BoundedList": ContainerCase(
        build=lambda limit, lock=None: BoundedList[int](limit, lock=lock),
        put=lambda c, i: c.append(i),
        limit_argument="max_size",
        is_keyed=False,
    ),
    "BoundedDict-lru": ContainerCase(
        build=lambda limit, lock=None: BoundedDict[int, int](limit, "lru", lock=lock),
        put=lambda c, i: c.__setitem__(i, i),
        limit_argument="max_size",
    ),
    "BoundedDict-fifo": ContainerCase(
        build=lambda limit, lock=None: BoundedDict[int, int](limit, "fifo", lock=lock),
        put=lambda c, i: c.__setitem__(i, i),
        limit_argument="max_size",
    ),
    **{
        f"LRUCache-{policy}": ContainerCase(
            build=lambda limit, lock=None, policy=policy: LRUCache[int, int](
                limit, lock=lock, policy=policy
            ),
            put=lambda c, i: c.set(i, i),
            limit_argument="max_size",
            drops_key="evictions",
        )
        for policy in POLICIES
    },
    "LRUCache-tinylfu-bytes": ContainerCase(
        build=lambda limit, lock=None: LRUCache[int, int](
            limit, max_bytes=1_000_000, lock=lock, policy="tinylfu"
        ),
        put=lambda c, i: c.set(i, i),
        limit_argument="max_size",
        drops_key="evictions",
    ),
    # The limit of a MetricsCollector that the contract checks is its number of metric names.
    "MetricsCollector": ContainerCase(
        build=lambda limit, lock=None: MetricsCollector(max_metrics=limit, lock=lock),
        put=_record,
        limit_argument="max_metrics",
    ),
}
KEYED_CASES = sorted(name for name, case in CASES.items() if case.is_keyed)


@pytest.fixture(params=sorted(CASES), ids=str)
def case(request: pytest.FixtureRequest) -> ContainerCase:
    return CASES[request.param]


def _check_stats(container: Any, case: ContainerCase, limit: int) -> Mapping[str, Any]:
    stats: Mapping[str, Any] = container.stats()
    assert stats["max_size"] == limit
    assert stats["size"] == len(container)
    assert 0 <= stats["size"] <= limit
    assert stats[case.drops_key] >= 0
    return stats


@pytest.mark.parametrize("limit", [1, 2, 7])
def test_never_exceeds_its_limit_and_counts_every_drop(case: ContainerCase, limit: int) -> None:
    container = case.build(limit)
    for i in range(limit * 3 + 1):
        case.put(container, i)
        stats = _check_stats(container, case, limit)
        assert stats["size"] == min(i + 1, limit)
        assert stats[case.drops_key] == max(0, i + 1 - limit)


def test_starts_empty_with_consistent_stats(case: ContainerCase) -> None:
    container = case.build(5)
    assert len(container) == 0
    stats = _check_stats(container, case, 5)
    assert stats[case.drops_key] == 0


@pytest.mark.parametrize("name", KEYED_CASES)
def test_replacing_a_key_is_not_a_drop(name: str) -> None:
    case = CASES[name]
    container = case.build(3)
    for _ in range(10):
        for i in range(3):
            case.put(container, i)
    stats = _check_stats(container, case, 3)
    assert stats["size"] == 3
    assert stats[case.drops_key] == 0


@pytest.mark.parametrize("bad", [0, -1, -100])
def test_non_positive_limit_is_rejected_naming_argument_and_value(
    case: ContainerCase, bad: int
) -> None:
    with pytest.raises(ValueError, match=case.limit_argument) as caught:
        case.build(bad)
    assert repr(bad) in str(caught.value)


@pytest.mark.parametrize("bad", [1.5, "10", None, True])
def test_non_integer_limit_is_a_type_error_naming_argument_and_value(
    case: ContainerCase, bad: object
) -> None:
    # One rule for every container (memsafe/_checks.py): a wrong type is a TypeError.
    with pytest.raises(TypeError, match=case.limit_argument) as caught:
        case.build(bad)
    assert repr(bad) in str(caught.value)


# Every other public factory with a checked argument: (call, wrong type, out of range).
FACTORY_CHECKS: dict[str, tuple[Callable[[Any], object], object, object]] = {
    "LRUCache.ttl_seconds": (lambda v: LRUCache(1, ttl_seconds=v), "5", -1),
    "LRUCache.max_bytes": (lambda v: LRUCache(1, max_bytes=v), "8", 0),
    "LRUCache.policy": (lambda v: LRUCache(1, policy=v), 1, "lfu"),
    "BoundedDict.policy": (lambda v: BoundedDict(1, v), 1, "mru"),
    "MetricsCollector.max_samples_per_metric": (
        lambda v: MetricsCollector(max_samples_per_metric=v),
        "3",
        0,
    ),
    "CacheManager.max_total_bytes": (lambda v: CacheManager(max_total_bytes=v), 2.0, 0),
    "CacheManager.create_cache.max_size": (
        lambda v: CacheManager().create_cache("c", max_size=v),
        "3",
        0,
    ),
    "CacheManager.create_cache.name": (lambda v: CacheManager().create_cache(v), 3, ""),
    "cached.ttl_seconds": (lambda v: cached(LRUCache(1), ttl_seconds=v), "1", 0),
    "MemoryMonitor.max_routes": (lambda v: MemoryMonitor(max_routes=v), "3", 0),
    "RouteBuckets.max_routes": (lambda v: RouteBuckets(max_routes=v), "3", 0),
    "MemoryMonitor.alert_delta_mb": (lambda v: MemoryMonitor(alert_delta_mb=v), "1", -1.0),
}


@pytest.mark.parametrize("name", sorted(FACTORY_CHECKS))
def test_factories_raise_type_error_for_a_type_and_value_error_for_a_range(name: str) -> None:
    build, wrong_type, out_of_range = FACTORY_CHECKS[name]
    argument = name.rsplit(".", 1)[1]
    with pytest.raises(TypeError, match=argument) as caught:
        build(wrong_type)
    assert repr(wrong_type) in str(caught.value)
    with pytest.raises(ValueError, match=argument) as caught_range:
        build(out_of_range)
    assert repr(out_of_range) in str(caught_range.value)


def test_puts_and_stats_take_the_injected_lock(case: ContainerCase) -> None:
    # Only writes and the stats snapshot are in the contract: LRUCache reads len() lock-free.
    lock = CountingLock()
    container = case.build(2, lock=lock)
    for call in (lambda: case.put(container, 1), lambda: case.put(container, 2), container.stats):
        before = lock.enters
        call()
        assert lock.enters > before
        assert lock.depth == 0


@pytest.mark.slow
def test_threads_never_push_it_past_its_limit(case: ContainerCase) -> None:
    limit, threads_count, puts_per_thread = 16, 4, 2_000
    container = case.build(limit)
    errors: list[BaseException] = []
    oversize: list[int] = []
    done = threading.Event()
    start = threading.Barrier(threads_count + 1)

    def writer(offset: int) -> None:
        start.wait()
        try:
            for i in range(puts_per_thread):
                case.put(container, (offset * 97 + i) % (limit * 4))
        except BaseException as exc:  # reported below, in the test thread
            errors.append(exc)

    def observer() -> None:
        start.wait()
        while not done.is_set():
            size = len(container)
            if size > limit:
                oversize.append(size)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads_count)]
    watcher = threading.Thread(target=observer)
    for thread in [*workers, watcher]:
        thread.start()
    for thread in workers:
        thread.join(timeout=30)
    done.set()
    watcher.join(timeout=30)

    assert errors == []
    assert oversize == []
    stats = _check_stats(container, case, limit)
    assert stats["size"] == limit
    if not case.is_keyed:
        assert stats[case.drops_key] == threads_count * puts_per_thread - limit
