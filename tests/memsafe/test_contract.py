"""One contract, checked against every bounded container memsafe ships."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from memsafe.bounded import BoundedDict, BoundedList, MetricsCollector
from memsafe.cache import LRUCache
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
    "LRUCache": ContainerCase(
        build=lambda limit, lock=None: LRUCache[int, int](limit, lock=lock),
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


@pytest.mark.parametrize("bad", [1.5, "10", None])
def test_non_integer_limit_is_rejected_naming_argument_and_value(
    case: ContainerCase, bad: object
) -> None:
    # The issue allows either type; bounded.py says TypeError, cache.py says ValueError.
    with pytest.raises((TypeError, ValueError), match=case.limit_argument) as caught:
        case.build(bad)
    assert repr(bad) in str(caught.value)


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
