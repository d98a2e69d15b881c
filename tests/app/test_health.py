"""GET /health: fast, no gc, the memory and cache picture of this worker."""

from __future__ import annotations

import gc
import os
import time

import pytest

from tests.app.conftest import TestClient


def test_health_reports_status_memory_and_caches(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["version"] == "0.1.0"
    assert body["pid"] == os.getpid()
    assert body["rss_bytes"] > 10 * 1024 * 1024
    assert 0 < body["uptime_seconds"] < 600
    assert set(body["container"]) == {"limit_bytes", "usage_bytes", "cgroup_version"}
    assert body["cleanup_level"] == "normal"
    assert "users" in body["caches"]["caches"]


def test_health_uptime_grows_with_the_monotonic_clock(client: TestClient) -> None:
    first = client.get("/health").json()["uptime_seconds"]
    started = time.monotonic()
    time.sleep(0.05)
    second = client.get("/health").json()["uptime_seconds"]
    elapsed = time.monotonic() - started
    assert 0.05 - 0.001 <= second - first <= elapsed + 0.5


def test_health_shows_cache_hits_of_user_reads(client: TestClient) -> None:
    client.get("/users/1")
    client.get("/users/1")
    users = client.get("/health").json()["caches"]["caches"]["users"]
    assert users["hits"] == 1
    assert users["misses"] == 1
    assert users["size"] == 1


def test_health_never_runs_gc(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> int:
        raise AssertionError("gc.collect called by /health")

    monkeypatch.setattr(gc, "collect", forbidden)
    assert client.get("/health").status_code == 200
