"""RouteBuckets: the first max_routes route keys keep a bucket, the rest share <overflow>."""

from __future__ import annotations

import pytest

from memsafe import OVERFLOW_ROUTE, UNMATCHED_ROUTE, MemoryMonitor, RouteBuckets


def test_the_first_max_routes_keys_get_buckets_and_keep_them() -> None:
    buckets = RouteBuckets(max_routes=2)
    assert [buckets.admit(key) for key in ("GET /a", "GET /b", "GET /c", "GET /a")] == [
        True,
        True,
        False,
        True,
    ]
    assert len(buckets) == 2
    assert buckets.max_routes == 2


def test_refused_keys_are_not_remembered() -> None:
    buckets = RouteBuckets(max_routes=1)
    buckets.admit("GET /a")
    for index in range(1000):
        assert not buckets.admit(f"GET /scan/{index}")
    assert len(buckets) == 1


def test_labels_keep_method_and_template_apart_under_the_same_bound() -> None:
    buckets = RouteBuckets(max_routes=3)
    assert buckets.labels("GET", "/users/{user_id}") == ("GET", "/users/{user_id}")
    assert buckets.labels("POST", "/users/{user_id}") == ("POST", "/users/{user_id}")
    assert buckets.labels("BREW", None) == ("OTHER", UNMATCHED_ROUTE)
    # Unmatched is one key whatever the method: it took one slot, and keeps it.
    assert buckets.labels("GET", None) == ("GET", UNMATCHED_ROUTE)
    assert buckets.labels("PUT", "/users/{user_id}") == ("PUT", OVERFLOW_ROUTE)
    assert buckets.labels("BREW", "/users/{user_id}") == ("OTHER", OVERFLOW_ROUTE)
    assert len(buckets) == 3


def test_labels_and_admit_share_the_route_keys() -> None:
    buckets = RouteBuckets(max_routes=1)
    assert buckets.admit("GET /a")
    assert buckets.labels("GET", "/a") == ("GET", "/a")
    assert buckets.labels("GET", None) == ("GET", OVERFLOW_ROUTE)
    assert not buckets.admit(UNMATCHED_ROUTE)


def test_clear_frees_every_bucket() -> None:
    buckets = RouteBuckets(max_routes=1)
    buckets.admit("GET /a")
    buckets.clear()
    assert len(buckets) == 0
    assert buckets.admit("GET /b")
    assert not buckets.admit("GET /a")


def test_the_labels_are_distinct_from_any_route_key() -> None:
    assert OVERFLOW_ROUTE == "<overflow>"
    assert UNMATCHED_ROUTE == "<unmatched>"
    assert not OVERFLOW_ROUTE.startswith("/")
    assert " " not in OVERFLOW_ROUTE  # route keys of matched routes are "METHOD template"


@pytest.mark.parametrize("bad", [0, -1])
def test_max_routes_below_one_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="max_routes"):
        RouteBuckets(bad)


def test_monitor_reset_frees_its_route_buckets() -> None:
    monitor = MemoryMonitor(max_routes=1, rss_probe=lambda: 0)
    monitor.record({"type": "http", "method": "GET", "path": "/x"}, 0, 0)
    monitor.reset()
    route = type("Route", (), {"path_format": "/a"})()
    monitor.record({"type": "http", "method": "GET", "path": "/a", "route": route}, 0, 0)
    assert [r["route"] for r in monitor.stats()["top_routes"]] == ["GET /a"]
