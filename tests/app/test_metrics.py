"""GET /metrics: Prometheus text from live state, per route template, labelled by pid."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

import app.main as main_module
from app.core.config import Settings, load_settings
from app.core.request_metrics import RequestMetrics, RequestMetricsMiddleware
from app.core.shared_snapshots import SharedSnapshots
from app.main import create_app
from memsafe import OVERFLOW_ROUTE, UNMATCHED_ROUTE
from tests.app.conftest import ADMIN_TOKEN, ProfileWriter, TestClient


def _samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _get(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    labels.setdefault("pid", str(os.getpid()))
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_is_prometheus_text(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")


def test_requests_are_counted_per_route_template(client: TestClient) -> None:
    for user_id in (1, 2, 3):
        client.get(f"/users/{user_id}")
    client.get("/users/999999")
    samples = _samples(client)
    route = "/users/{user_id}"
    assert _get(samples, "app_http_requests_total", method="GET", route=route, status="200") == 3
    assert _get(samples, "app_http_requests_total", method="GET", route=route, status="404") == 1
    count = _get(samples, "app_http_request_duration_seconds_count", method="GET", route=route)
    assert count == 4
    inf = _get(
        samples, "app_http_request_duration_seconds_bucket", method="GET", route=route, le="+Inf"
    )
    assert inf == 4


def test_unmatched_paths_share_one_label(client: TestClient) -> None:
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")
    samples = _samples(client)
    assert (
        _get(samples, "app_http_requests_total", method="GET", route=UNMATCHED_ROUTE, status="404")
        == 2
    )


def test_cache_rss_and_cleanup_metrics_are_exported(client: TestClient) -> None:
    client.get("/users/1")
    client.get("/users/1")
    samples = _samples(client)
    assert _get(samples, "app_cache_hits_total", cache="users") == 1
    assert _get(samples, "app_cache_misses_total", cache="users") == 1
    assert _get(samples, "app_cache_entries", cache="users") == 1
    assert _get(samples, "app_cache_evictions_total", cache="users") == 0
    assert _get(samples, "app_process_rss_bytes") > 0
    assert _get(samples, "app_cleanup_level", level="normal") == 1


def test_cleanup_passes_counter_counts_a_forced_pass(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    before = _get(_samples(client), "app_cleanup_passes_total")
    response = client.post("/admin/cleanup", params={"level": "soft"}, headers=admin_headers)
    assert response.status_code == 200
    # >= rather than ==: the background loop may also run a pass meanwhile
    assert _get(_samples(client), "app_cleanup_passes_total") >= before + 1


def test_route_labels_are_bounded() -> None:
    metrics = RequestMetrics(max_routes=2)
    for index in range(5):
        metrics.observe("GET", f"/r{index}", 200, 0.001)
    metrics.observe("GET", "/r0", 200, 0.001)  # a route with a label keeps it
    rows = {(row[1], row[3]) for row in metrics.snapshot()["requests"]}
    assert rows == {("/r0", 2), ("/r1", 1), (OVERFLOW_ROUTE, 3)}


def test_route_labels_are_bounded_per_method_and_template_like_memsafe() -> None:
    # memsafe's route keys: each (method, template) takes a slot; unmatched is one key.
    metrics = RequestMetrics(max_routes=3)
    for method, template in [
        ("GET", "/r"),
        ("POST", "/r"),
        ("GET", None),
        ("PUT", None),
        ("PUT", "/r"),
    ]:
        metrics.observe(method, template, 200, 0.001)
    labels = sorted(tuple(row[:2]) for row in metrics.snapshot()["requests"])
    assert labels == [
        ("GET", "/r"),
        ("GET", UNMATCHED_ROUTE),
        ("POST", "/r"),
        ("PUT", OVERFLOW_ROUTE),
        ("PUT", UNMATCHED_ROUTE),
    ]


def test_metrics_and_the_memory_monitor_share_one_overflow_label(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", ADMIN_TOKEN)
    settings = load_settings(write_profile({"monitor": {"max_routes": 2}}))
    with TestClient(create_app(settings)) as c:
        c.get("/no/such/path")  # key 1: unmatched
        c.get("/users/1")  # key 2: GET /users/{user_id}
        c.get("/health")  # over max_routes
        c.get("/payload", params={"size_kib": 1})  # over max_routes
        samples = _samples(c)  # GET /metrics: over max_routes too
        memory = c.get("/admin/memory", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    requests = {
        labels["route"]: value
        for (name, label_items), value in samples.items()
        if name == "app_http_requests_total" and (labels := dict(label_items))
    }
    # /metrics counted itself only after this scrape; the monitor has counted it since.
    assert requests == {UNMATCHED_ROUTE: 1, "/users/{user_id}": 1, OVERFLOW_ROUTE: 2}
    monitor_routes = {r["route"]: r["requests"] for r in memory.json()["monitor"]["top_routes"]}
    assert monitor_routes == {UNMATCHED_ROUTE: 1, "GET /users/{user_id}": 1, OVERFLOW_ROUTE: 3}


def test_max_routes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_routes"):
        RequestMetrics(max_routes=0)


def _snap(pid: int, count: int = 1) -> dict[str, object]:
    return {"pid": pid, "requests": [["GET", "/x", "200", count]], "latency": [], "rss_bytes": 1}


def test_workers_under_gunicorn_publish_and_report_siblings(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(main_module, "is_gunicorn_worker", lambda: True)
    monkeypatch.setattr(main_module, "shared_snapshot_dir", lambda master_pid: tmp_path / "m")
    sibling = SharedSnapshots(tmp_path / "m", max_age_seconds=60)
    sibling.publish(_snap(os.getppid(), 7))
    with TestClient(create_app(settings)) as c:
        c.get("/users/1")
        deadline = time.monotonic() + 5
        own_file = tmp_path / "m" / f"worker-{os.getpid()}.json"
        while not own_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert own_file.exists()
        text = c.get("/metrics").text
        assert f'pid="{os.getppid()}"' in text
        assert f'pid="{os.getpid()}"' in text
    assert not own_file.exists()  # removed at shutdown


def test_custom_methods_do_not_grow_series(client: TestClient) -> None:
    for index in range(2000):
        client.request(f"X{index:05d}", "/health")
    client.get("/health")
    metrics = client.app.state.runtime.request_metrics  # type: ignore[attr-defined]  # FastAPI app
    methods = {row[0] for row in metrics.snapshot()["requests"]}
    assert methods <= {"GET", "OTHER"}
    assert len(metrics.snapshot()["latency"]) <= 4
    text = client.get("/metrics").text
    assert 'method="X0' not in text
    samples = _samples(client)
    assert (
        _get(samples, "app_http_requests_total", method="OTHER", route="/health", status="405")
        == 2000
    )


def test_unknown_method_is_recorded_as_other() -> None:
    metrics = RequestMetrics(max_routes=2)
    metrics.observe("BREW", "/r", 200, 0.001)
    metrics.observe("GET", "/r", 200, 0.001)
    assert {row[0] for row in metrics.snapshot()["requests"]} == {"OTHER", "GET"}


def test_worker_with_unsafe_shared_directory_serves_own_metrics(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = tmp_path / "victim"
    target.mkdir()
    (tmp_path / "m").symlink_to(target)
    monkeypatch.setattr(main_module, "is_gunicorn_worker", lambda: True)
    monkeypatch.setattr(main_module, "shared_snapshot_dir", lambda master_pid: tmp_path / "m")
    with caplog.at_level(logging.WARNING, logger="app.main"), TestClient(create_app(settings)) as c:
        c.get("/users/1")
        text = c.get("/metrics").text
        assert f'pid="{os.getpid()}"' in text
        assert c.app.state.runtime.shared is None  # type: ignore[attr-defined]  # FastAPI app
    assert list(target.iterdir()) == []
    assert any("per-worker" in record.getMessage() for record in caplog.records)


def test_a_mounted_app_is_labelled_by_its_full_template() -> None:
    # The old copy of the rule read route.path and lost the mount's prefix.
    inner = FastAPI()

    @inner.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    outer = FastAPI()
    outer.mount("/v1", inner)
    metrics = RequestMetrics(max_routes=200)
    outer.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    with TestClient(outer) as client:
        assert client.get("/v1/items/3").status_code == 200
        assert client.get("/nowhere").status_code == 404
    routes = {row[1] for row in metrics.snapshot()["requests"]}
    assert routes == {"/v1/items/{item_id}", UNMATCHED_ROUTE}
