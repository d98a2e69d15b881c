"""memsafe.MemoryHistory: bounded samples and events, per-interval hit rates, cleanup events."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from memsafe import CacheManager, ContainerMemory, MemoryHistory

MIB = 1024 * 1024


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class _Cleanup:
    def __init__(self) -> None:
        self.level = "normal"
        self.events: list[dict[str, Any]] = []

    def stats(self) -> Mapping[str, Any]:
        return {"events": list(self.events)}


def _history(**kwargs: Any) -> MemoryHistory:
    rss = iter(range(100 * MIB, 10_000 * MIB, MIB))
    return MemoryHistory(
        rss_probe=lambda: next(rss),
        container_probe=lambda: ContainerMemory(512 * MIB, 300 * MIB, 2, "/"),
        wall_clock=_Clock(),
        **kwargs,
    )


def test_samples_never_exceed_max_samples_and_drops_are_counted() -> None:
    history = _history(max_samples=5)
    for _ in range(12):
        history.record()
    data = history.as_dict()
    assert len(history) == 5 and len(data["rss_bytes"]) == 5 == len(data["wall_time"])
    assert data["dropped_samples"] == 7
    assert data["rss_bytes"][-1] == 111 * MIB  # the newest are kept
    assert data["container_usage_bytes"] == [300 * MIB] * 5
    assert data["container_limit_bytes"] == 512 * MIB


def test_events_are_bounded_and_details_cut() -> None:
    history = _history(max_events=3)
    for index in range(5):
        history.add_event("start", "x" * 500 if index == 4 else str(index))
    data = history.as_dict()
    assert [e["detail"][:1] for e in data["events"]] == ["2", "3", "x"]
    assert len(data["events"][-1]["detail"]) == 200
    assert data["dropped_events"] == 2


def test_hit_rate_is_per_interval_not_lifetime() -> None:
    manager = CacheManager()
    cache = manager.create_cache("users", max_size=100)
    history = _history()
    history.record(manager)  # no lookups yet: no rate
    cache.set(1, "a")
    for _ in range(9):
        cache.get(1)
    cache.get(2)
    history.record(manager)  # 9 hits, 1 miss
    for key in range(3, 13):
        cache.get(key)
    history.record(manager)  # 10 misses: a cold scan shows as 0, not as 0.45
    series = history.as_dict()["caches"]["users"]
    assert series["hit_rate"] == [None, 0.9, 0.0]
    assert series["entries"] == [0, 1, 1]
    assert (series["bytes"][1] or 0) > 0


def test_a_cache_that_appears_later_has_gaps_before() -> None:
    manager = CacheManager()
    history = _history()
    history.record(manager)
    manager.create_cache("late", max_size=10)
    history.record(manager)
    assert history.as_dict()["caches"]["late"]["entries"] == [None, 0]


def test_only_max_caches_are_sampled() -> None:
    manager = CacheManager()
    for name in ("c", "a", "b"):
        manager.create_cache(name, max_size=10)
    history = _history(max_caches=2)
    history.record(manager)
    assert sorted(history.as_dict()["caches"]) == ["a", "b"]


def test_cleanup_passes_that_acted_become_events_once() -> None:
    cleanup = _Cleanup()
    history = _history()
    cleanup.events = [
        {"wall_time": 5.0, "level": "normal", "actions": [], "freed_bytes": 0},
        {"wall_time": 6.0, "level": "soft", "actions": ["gc"], "freed_bytes": 2 * MIB},
    ]
    cleanup.level = "soft"
    history.record(cleanup=cleanup)
    history.record(cleanup=cleanup)  # the same passes again: no new event
    cleanup.events.append(
        {"wall_time": 7.0, "level": "normal", "actions": [], "freed_bytes": 0, "error": "boom"}
    )
    history.record(cleanup=cleanup)
    data = history.as_dict()
    assert [(e["kind"], e["detail"]) for e in data["events"]] == [
        ("cleanup", "soft: freed 2.0 MiB"),
        ("cleanup", "normal: freed 0.0 MiB, error boom"),
    ]
    assert data["level"] == ["soft", "soft", "soft"]


@pytest.mark.parametrize("name", ["max_samples", "max_events", "max_caches"])
@pytest.mark.parametrize("value", [0, -1, True, 1.5, 2_000_000])
def test_bounds_must_be_positive_ints(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name):
        MemoryHistory(**{name: value})


def test_defaults_read_the_real_probes() -> None:
    history = MemoryHistory()
    history.record()
    assert history.as_dict()["rss_bytes"][0] > 10 * MIB
