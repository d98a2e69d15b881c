"""Unit tests of BoundedList, BoundedDict and MetricsCollector."""

from __future__ import annotations

import random
import statistics
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memsafe.bounded import BoundedDict, BoundedList, MetricsCollector, MetricSummary, Policy
from tests.memsafe.fakes import CountingLock


def test_list_append_drops_oldest_when_full() -> None:
    items = BoundedList[int](3)
    for i in range(5):
        items.append(i)
    assert items.snapshot() == [2, 3, 4]
    assert items.dropped == 2
    assert items.stats() == {"size": 3, "max_size": 3, "dropped": 2}


def test_list_extend_keeps_the_last_max_size_items_and_counts_the_rest() -> None:
    items = BoundedList[int](4)
    items.extend([0, 1])
    items.extend(i for i in range(2, 9))
    assert list(items) == [5, 6, 7, 8]
    assert items.dropped == 5
    items.extend([])
    assert items.dropped == 5


def test_list_extend_below_capacity_drops_nothing() -> None:
    items = BoundedList[str](4)
    items.extend("abc")
    assert len(items) == 3
    assert items.dropped == 0


def test_list_clear_is_not_a_drop_and_returns_count() -> None:
    items = BoundedList[int](2)
    items.extend([1, 2, 3])
    assert items.clear() == 2
    assert len(items) == 0
    assert items.stats() == {"size": 0, "max_size": 2, "dropped": 1}


def test_list_iteration_walks_a_snapshot() -> None:
    items = BoundedList[int](3)
    items.extend([1, 2, 3])
    seen = []
    for value in items:
        items.append(value * 10)  # would raise on a live deque iterator
        seen.append(value)
    assert seen == [1, 2, 3]
    assert items.snapshot() == [10, 20, 30]


def test_list_repr_and_max_size() -> None:
    items = BoundedList[int](7)
    items.append(1)
    assert items.max_size == 7
    assert repr(items) == "BoundedList(max_size=7, size=1)"


# ---------------------------------------------------------------- BoundedDict


def test_lru_dict_evicts_least_recently_used() -> None:
    d = BoundedDict[str, int](2)
    d["a"] = 1
    d["b"] = 2
    assert d["a"] == 1  # refresh a
    d["c"] = 3
    assert "b" not in d
    assert list(d) == ["a", "c"]
    assert d.dropped == 1


def test_lru_get_refreshes_recency() -> None:
    d = BoundedDict[str, int](2, "lru")
    d["a"] = 1
    d["b"] = 2
    assert d.get("a") == 1
    d["c"] = 3
    assert list(d.keys()) == ["a", "c"]


def test_lru_overwrite_refreshes_recency() -> None:
    d = BoundedDict[str, int](2, "lru")
    d["a"] = 1
    d["b"] = 2
    d["a"] = 10
    d["c"] = 3
    assert dict(d.items()) == {"a": 10, "c": 3}
    assert d.dropped == 1


def test_fifo_dict_ignores_reads_and_overwrites() -> None:
    d = BoundedDict[str, int](2, "fifo")
    d["a"] = 1
    d["b"] = 2
    assert d["a"] == 1
    assert d.get("a") == 1
    d["a"] = 10  # keeps its first-insertion place
    d["c"] = 3
    assert list(d.items()) == [("b", 2), ("c", 3)]
    assert d.dropped == 1


def test_contains_does_not_refresh_recency() -> None:
    d = BoundedDict[str, int](2)
    d["a"] = 1
    d["b"] = 2
    assert "a" in d
    d["c"] = 3
    assert "a" not in d


def test_get_missing_returns_default_without_side_effects() -> None:
    d = BoundedDict[str, int](2)
    assert d.get("x") is None
    assert d.get("x", 5) == 5
    assert d.get("x", "fallback") == "fallback"
    assert len(d) == 0


def test_getitem_missing_raises_key_error() -> None:
    d = BoundedDict[str, int](2)
    with pytest.raises(KeyError):
        d["missing"]


def test_delete_pop_and_clear_are_not_drops() -> None:
    d = BoundedDict[str, int](3)
    d.update({"a": 1, "b": 2, "c": 3})
    del d["a"]
    assert d.pop("b") == 2
    assert d.pop("zz", -1) == -1
    d.clear()
    assert len(d) == 0
    assert d.stats() == {"size": 0, "max_size": 3, "dropped": 0, "policy": "lru"}
    with pytest.raises(KeyError):
        del d["a"]


def test_pop_missing_without_default_raises_key_error() -> None:
    d = BoundedDict[str, int](2)
    with pytest.raises(KeyError):
        d.pop("missing")


def test_popitem_removes_the_entry_evicted_next() -> None:
    d = BoundedDict[str, int](3, "lru")
    d.update(a=1, b=2, c=3)
    d.get("a")
    assert d.popitem() == ("b", 2)
    assert d.popitem() == ("c", 3)
    assert d.popitem() == ("a", 1)
    with pytest.raises(KeyError, match="BoundedDict is empty"):
        d.popitem()
    assert d.dropped == 0


def test_setdefault_on_a_present_key_refreshes_it_under_lru() -> None:
    d = BoundedDict[str, int](2, "lru")
    d.update(a=1, b=2)
    assert d.setdefault("a", 100) == 1
    d["c"] = 3
    assert list(d) == ["a", "c"]


def test_setdefault_without_default_stores_none() -> None:
    d = BoundedDict[str, int | None](2)
    assert d.setdefault("a") is None
    assert d == {"a": None}


def test_mutable_mapping_mixins_respect_the_bound() -> None:
    d = BoundedDict[int, int](3, "fifo")
    d.update((i, i) for i in range(10))
    assert d.setdefault(9, 0) == 9
    assert d.setdefault(42, 0) == 0
    assert list(d) == [8, 9, 42]
    assert d.dropped == 8
    assert d == {8: 8, 9: 9, 42: 0}


def test_views_are_snapshots() -> None:
    d = BoundedDict[str, int](4)
    d.update(a=1, b=2)
    items, keys, values = d.items(), d.keys(), d.values()
    d["c"] = 3
    assert list(items) == [("a", 1), ("b", 2)]
    assert list(keys) == ["a", "b"]
    assert list(values) == [1, 2]
    for key in d:
        d[key + "!"] = 0  # iteration over a snapshot tolerates writes
    assert len(d) == 4


def test_dict_properties_and_repr() -> None:
    d = BoundedDict[str, int](5, policy="fifo")
    assert (d.max_size, d.policy) == (5, "fifo")
    assert repr(d) == "BoundedDict(max_size=5, policy='fifo', size=0)"


def test_bad_policy_names_argument_value_and_allowed() -> None:
    with pytest.raises(ValueError, match=r"policy must be one of \('lru', 'fifo'\), got 'lfu'"):
        BoundedDict[str, int](3, policy="lfu")  # type: ignore[arg-type]  # deliberately invalid


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("factory", "argument"),
    [
        (lambda v: BoundedList[int](v), "max_size"),
        (lambda v: BoundedDict[int, int](v), "max_size"),
        (lambda v: MetricsCollector(max_samples_per_metric=v), "max_samples_per_metric"),
        (lambda v: MetricsCollector(max_metrics=v), "max_metrics"),
    ],
)
@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), ("3", TypeError)],
)
def test_bad_sizes_are_rejected_naming_argument_and_value(
    factory: Callable[[Any], object], argument: str, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=rf"^{argument} must be .*got {value!r}"):
        factory(value)


# ---------------------------------------------------------------- MetricsCollector


def test_summary_of_known_samples() -> None:
    metrics = MetricsCollector()
    for value in range(1, 101):
        metrics.record("latency_ms", value)
    summary = metrics.summary("latency_ms")
    assert summary == MetricSummary(
        count=100, min=1.0, max=100.0, mean=50.5, p50=50.5, p95=95.05, p99=99.01
    )


def test_summary_of_one_sample_is_that_sample() -> None:
    metrics = MetricsCollector()
    metrics.record("x", 7)
    assert metrics.summary("x") == MetricSummary(1, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0)


def test_summary_of_unknown_metric_is_none() -> None:
    assert MetricsCollector().summary("nope") is None


def test_summary_is_frozen() -> None:
    metrics = MetricsCollector()
    metrics.record("x", 1)
    summary = metrics.summary("x")
    assert summary is not None
    with pytest.raises(AttributeError):
        summary.count = 2  # type: ignore[misc]  # frozen dataclass: assignment must fail


@given(st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=2, max_size=200))
def test_percentiles_match_statistics_inclusive_quantiles(values: list[float]) -> None:
    metrics = MetricsCollector(max_samples_per_metric=len(values))
    for value in values:
        metrics.record("m", value)
    summary = metrics.summary("m")
    assert summary is not None
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    assert summary.count == len(values)
    assert (summary.min, summary.max) == (min(values), max(values))
    assert summary.mean == pytest.approx(statistics.fmean(values), rel=1e-9, abs=1e-6)
    for got, want in ((summary.p50, cuts[49]), (summary.p95, cuts[94]), (summary.p99, cuts[98])):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-6)


def test_samples_are_a_ring_of_the_latest_values() -> None:
    metrics = MetricsCollector(max_samples_per_metric=3)
    for value in (100, 1, 2, 3):
        metrics.record("m", value)
    summary = metrics.summary("m")
    assert summary is not None
    assert (summary.count, summary.min, summary.max) == (3, 1.0, 3.0)
    assert metrics.stats()["dropped_samples"] == 1
    assert metrics.stats()["samples"] == 3


def test_new_metric_at_capacity_evicts_least_recently_recorded() -> None:
    metrics = MetricsCollector(max_samples_per_metric=10, max_metrics=2)
    metrics.record("a", 1)
    metrics.record("a", 2)
    metrics.record("b", 1)
    metrics.record("a", 3)  # a is now the most recently recorded
    metrics.summary("b")  # reading does not count as recording
    metrics.record("c", 1)
    assert metrics.names() == ["a", "c"]
    assert metrics.summary("b") is None
    assert metrics.stats() == {
        "size": 2,
        "max_size": 2,
        "dropped": 1,
        "samples": 4,
        "max_samples_per_metric": 10,
        "dropped_samples": 1,
    }


def test_summaries_cover_every_metric() -> None:
    metrics = MetricsCollector()
    metrics.record("a", 1)
    metrics.record("b", 2)
    assert list(metrics.summaries()) == ["a", "b"]
    assert metrics.summaries()["b"].mean == 2.0


def test_summaries_skip_a_metric_evicted_while_summarising() -> None:
    class Racy(MetricsCollector):
        def names(self) -> list[str]:
            return [*super().names(), "gone"]

    metrics = Racy()
    metrics.record("a", 1)
    assert list(metrics.summaries()) == ["a"]


def test_metrics_clear_len_repr_and_properties() -> None:
    metrics = MetricsCollector(max_samples_per_metric=4, max_metrics=5)
    metrics.record("a", 1)
    metrics.record("b", 1)
    assert len(metrics) == 2
    assert (metrics.max_samples_per_metric, metrics.max_metrics) == (4, 5)
    assert repr(metrics) == "MetricsCollector(max_samples_per_metric=4, max_metrics=5, metrics=2)"
    assert metrics.clear() == 2
    assert metrics.names() == []
    assert metrics.stats()["dropped"] == 0


@pytest.mark.parametrize(
    ("name", "value", "error", "pattern"),
    [
        (1, 1.0, TypeError, r"name must be a str, got 1 \(int\)"),
        ("m", "1", TypeError, r"value must be an int or float, got '1' \(str\)"),
        ("m", None, TypeError, r"value must be an int or float, got None"),
        ("m", float("nan"), ValueError, r"value must be finite .*got nan for metric 'm'"),
        ("m", float("inf"), ValueError, r"value must be finite .*got inf"),
    ],
)
def test_record_rejects_bad_input(
    name: object, value: object, error: type[Exception], pattern: str
) -> None:
    metrics = MetricsCollector()
    with pytest.raises(error, match=pattern):
        metrics.record(name, value)  # type: ignore[arg-type]  # deliberately invalid
    assert metrics.names() == []


# ---------------------------------------------------------------- locking


def _calls(container: object) -> list[Callable[[], object]]:
    if isinstance(container, BoundedList):
        return [
            lambda: container.append(1),
            lambda: container.extend([2, 3]),
            container.snapshot,
            container.stats,
            container.clear,
            lambda: len(container),
            lambda: list(container),
            lambda: container.dropped,
        ]
    if isinstance(container, BoundedDict):
        return [
            lambda: container.__setitem__("k", 1),
            lambda: container["k"],
            lambda: container.get("k"),
            lambda: container.get("absent"),
            lambda: "k" in container,
            lambda: len(container),
            lambda: list(container),
            container.keys,
            container.values,
            container.items,
            container.stats,
            lambda: container.dropped,
            lambda: container.setdefault("k", 2),
            lambda: container.pop("k"),
            lambda: container.pop("k", None),
            lambda: container.__setitem__("j", 1),
            container.popitem,
            container.clear,
        ]
    assert isinstance(container, MetricsCollector)
    return [
        lambda: container.record("m", 1),
        lambda: container.summary("m"),
        container.names,
        container.stats,
        lambda: len(container),
        container.clear,
    ]


@pytest.mark.parametrize(
    "build",
    [
        lambda lock: BoundedList[int](2, lock=lock),
        lambda lock: BoundedDict[str, int](2, "lru", lock=lock),
        lambda lock: BoundedDict[str, int](2, "fifo", lock=lock),
        lambda lock: MetricsCollector(lock=lock),
    ],
    ids=["list", "dict-lru", "dict-fifo", "metrics"],
)
def test_every_public_method_takes_the_injected_lock(build: Callable[[CountingLock], Any]) -> None:
    lock = CountingLock()
    container = build(lock)
    for call in _calls(container):
        before = lock.enters
        call()
        assert lock.enters > before, call
        assert lock.depth == 0


# ---------------------------------------------------------------- real threads


def _run_threads(target: Callable[[int], None], count: int = 4) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def guarded(n: int) -> None:
        barrier.wait()
        try:
            target(n)
        except BaseException as exc:  # reported by the caller, in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return errors


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["lru", "fifo"])
def test_dict_survives_mixed_operations_from_threads(policy: Policy) -> None:
    d = BoundedDict[int, int](32, policy)
    oversize: list[int] = []

    def work(n: int) -> None:
        rng = random.Random(n)
        for _ in range(3_000):
            key = rng.randrange(64)
            op = rng.randrange(7)
            if op < 3:
                d[key] = n
            elif op == 3:
                d.get(key)
            elif op == 4:
                d.pop(key, None)
            elif op == 5:
                d.setdefault(key, n)
            else:
                for k, _ in d.items():
                    d.get(k)
            if len(d) > 32:
                oversize.append(len(d))

    assert _run_threads(work) == []
    assert oversize == []
    stats = d.stats()
    assert stats["size"] == len(d) <= 32
    assert stats["dropped"] > 0


@pytest.mark.slow
def test_metrics_record_and_summarise_from_threads() -> None:
    metrics = MetricsCollector(max_samples_per_metric=50, max_metrics=8)

    def work(n: int) -> None:
        for i in range(3_000):
            metrics.record(f"m{(n + i) % 12}", float(i))
            if i % 100 == 0:
                metrics.summaries()

    assert _run_threads(work) == []
    stats = metrics.stats()
    assert stats["size"] == len(metrics.names()) <= 8
    assert stats["samples"] <= 8 * 50
    # every sample recorded is either held or counted as dropped
    assert stats["samples"] + stats["dropped_samples"] == 4 * 3_000


@pytest.mark.slow
def test_list_counts_every_append_from_threads() -> None:
    items = BoundedList[int](100)

    def work(n: int) -> None:
        for i in range(5_000):
            items.append(i)
            if i % 500 == 0:
                items.extend(range(10))

    assert _run_threads(work) == []
    assert items.stats() == {"size": 100, "max_size": 100, "dropped": 4 * (5_000 + 100) - 100}
