"""Tests for memsafe.middleware: the pure ASGI monitor, its bounded stats and the seed's form."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient

from memsafe import OVERFLOW_ROUTE, UNMATCHED_ROUTE, middleware
from memsafe.middleware import (
    MemoryMonitor,
    MemoryMonitorMiddleware,
    Message,
    Receive,
    Scope,
    Send,
    default_monitor,
    memory_monitor,
)

MIB = 2**20


class FakeRSS:
    """An RSS probe that grows by ``step`` bytes on every read."""

    def __init__(self, start: int = 100 * MIB, step: int = MIB) -> None:
        self.value = start
        self.step = step
        self.calls = 0

    def __call__(self) -> int:
        value = self.value
        self.value += self.step
        self.calls += 1
        return value


class Route:
    """Stands in for a router's route object: only ``path_format`` is read."""

    def __init__(self, path_format: str) -> None:
        self.path_format = path_format


class Mount(Route):
    """Named like Starlette's Mount, which the monitor recognises by class name."""


def http_scope(path: str = "/", method: str = "GET", **extra: Any) -> Scope:
    return {"type": "http", "method": method, "path": path, "root_path": "", **extra}


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def make_app(
    status: int = 200,
    *,
    route: object = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    error: BaseException | None = None,
    error_after_start: bool = False,
) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if route is not None:
            scope["route"] = route
        if error is not None and not error_after_start:
            raise error
        await send(
            {"type": "http.response.start", "status": status, "headers": list(headers or [])}
        )
        if error is not None:
            raise error
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def call(mw: MemoryMonitorMiddleware, scope: Scope | None = None) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(mw(scope if scope is not None else http_scope(), _receive, send))
    return sent


@pytest.fixture
def fake_default(monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryMonitor]:
    monitor = MemoryMonitor(rss_probe=FakeRSS())
    monkeypatch.setattr(middleware, "_default_monitor", monitor)
    yield monitor


# --- bare ASGI, no framework ----------------------------------------------------------------


def test_records_rss_at_request_start_and_response_start() -> None:
    probe = FakeRSS(start=100 * MIB, step=5 * MIB)
    monitor = MemoryMonitor(rss_probe=probe)
    call(MemoryMonitorMiddleware(make_app(route=Route("/items/{id}")), monitor))
    stats = monitor.stats()
    assert probe.calls == 2
    assert stats["requests"] == 1
    assert stats["last_rss_bytes"] == 105 * MIB
    (route,) = stats["top_routes"]
    assert route["route"] == "GET /items/{id}"
    assert route["growth_bytes"] == 5 * MIB
    assert route["max_delta_bytes"] == 5 * MIB
    assert route["mean_delta_bytes"] == 5 * MIB


def test_headers_are_off_by_default() -> None:
    monitor = MemoryMonitor(rss_probe=FakeRSS())
    sent = call(MemoryMonitorMiddleware(make_app(headers=[(b"a", b"1")]), monitor))
    assert sent[0]["headers"] == [(b"a", b"1")]


def test_headers_added_when_asked_without_mutating_the_apps_message() -> None:
    app_headers = [(b"content-type", b"text/plain")]
    monitor = MemoryMonitor(rss_probe=FakeRSS(start=64 * MIB, step=MIB // 2), add_headers=True)
    sent = call(MemoryMonitorMiddleware(make_app(headers=app_headers), monitor))
    assert sent[0]["headers"] == [
        (b"content-type", b"text/plain"),
        (b"x-memory-rss-mb", b"64.5"),
        (b"x-memory-delta-mb", b"0.5"),
    ]
    assert sent[1] == {"type": "http.response.body", "body": b"ok"}


@pytest.mark.parametrize("scope_type", ["websocket", "lifespan"])
def test_non_http_scopes_pass_straight_through(scope_type: str) -> None:
    seen: list[tuple[Scope, Receive, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope, receive, send))

    async def send(message: Message) -> None:
        raise AssertionError("not called")

    probe = FakeRSS()
    monitor = MemoryMonitor(rss_probe=probe)
    scope: Scope = {"type": scope_type}
    asyncio.run(MemoryMonitorMiddleware(app, monitor)(scope, _receive, send))
    assert seen == [(scope, _receive, send)]
    assert probe.calls == 0
    assert monitor.stats()["requests"] == 0


def test_exception_before_response_propagates_and_is_recorded() -> None:
    error = RuntimeError("boom")
    monitor = MemoryMonitor(rss_probe=FakeRSS())
    with pytest.raises(RuntimeError) as raised:
        call(MemoryMonitorMiddleware(make_app(error=error, route=Route("/x")), monitor))
    assert raised.value is error
    stats = monitor.stats()
    assert stats["requests"] == 1
    assert stats["errors"] == 1
    assert stats["top_routes"][0]["route"] == "GET /x"
    assert stats["top_routes"][0]["errors"] == 1


def test_exception_after_response_start_is_recorded_with_its_status() -> None:
    error = ValueError("late")
    monitor = MemoryMonitor(rss_probe=FakeRSS(), alert_delta_mb=0.5)
    with pytest.raises(ValueError, match="late"):
        call(MemoryMonitorMiddleware(make_app(error=error, error_after_start=True), monitor))
    stats = monitor.stats()
    assert stats["errors"] == 1
    assert stats["recent_alerts"][0]["status"] == 200


def test_cancellation_is_recorded_and_propagates() -> None:
    monitor = MemoryMonitor(rss_probe=FakeRSS())
    with pytest.raises(asyncio.CancelledError):
        call(MemoryMonitorMiddleware(make_app(error=asyncio.CancelledError()), monitor))
    assert monitor.stats()["errors"] == 1


def test_server_error_status_counts_as_error() -> None:
    monitor = MemoryMonitor(rss_probe=FakeRSS())
    mw = MemoryMonitorMiddleware(make_app(status=503), monitor)
    call(mw)
    call(MemoryMonitorMiddleware(make_app(status=404), monitor))
    assert monitor.stats()["errors"] == 1


def test_unmatched_requests_share_one_bucket() -> None:
    monitor = MemoryMonitor(rss_probe=FakeRSS(), max_routes=10)
    mw = MemoryMonitorMiddleware(make_app(status=404), monitor)
    for i in range(1000):
        call(mw, http_scope(f"/scan/{i}.php"))
    stats = monitor.stats()
    assert stats["routes"] == 1
    assert [r["route"] for r in stats["top_routes"]] == [UNMATCHED_ROUTE]
    assert stats["top_routes"][0]["requests"] == 1000


def test_route_table_never_grows_past_max_routes() -> None:
    monitor = MemoryMonitor(rss_probe=FakeRSS(), max_routes=5)
    for i in range(50):
        call(MemoryMonitorMiddleware(make_app(route=Route(f"/t{i}")), monitor))
    stats = monitor.stats(top_n=100)
    assert stats["routes"] == 5
    assert stats["overflow_requests"] == 45
    assert len(stats["top_routes"]) == 6
    assert OVERFLOW_ROUTE in {r["route"] for r in stats["top_routes"]}
    assert stats["requests"] == 50


def test_unknown_methods_fold_into_one_key() -> None:
    monitor = MemoryMonitor(rss_probe=FakeRSS())
    mw = MemoryMonitorMiddleware(make_app(route=Route("/a")), monitor)
    for method in ["GET", "BREW", "PROPFIND", "X" * 50, "POST"]:
        call(mw, http_scope("/a", method=method))
    keys = sorted(r["route"] for r in monitor.stats()["top_routes"])
    assert keys == ["GET /a", "OTHER /a", "POST /a"]


@pytest.mark.parametrize(
    ("route", "root_path", "expected"),
    [
        (Route("/p/{q}"), "/sub", "GET /sub/p/{q}"),
        (Route("/p/{q}"), "/sub/", "GET /sub/p/{q}"),
        (Mount("/files/{path}"), "/files", "GET /files"),
        (Mount("/{path}"), "", "GET /"),
        (object(), "", UNMATCHED_ROUTE),
    ],
    ids=["mounted", "mounted-trailing-slash", "mount-of-plain-app", "root-mount", "no-template"],
)
def test_route_template_comes_from_the_matched_route(
    route: object, root_path: str, expected: str
) -> None:
    monitor = MemoryMonitor(rss_probe=FakeRSS())

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = route
        scope["root_path"] = root_path  # routers set both in the shared scope
        await send({"type": "http.response.start", "status": 200, "headers": []})

    call(MemoryMonitorMiddleware(app, monitor))
    assert monitor.stats()["top_routes"][0]["route"] == expected


def test_route_with_only_a_path_attribute() -> None:
    class PathOnly:
        path = "/legacy/{id}"

    monitor = MemoryMonitor(rss_probe=FakeRSS())
    call(MemoryMonitorMiddleware(make_app(route=PathOnly()), monitor))
    assert monitor.stats()["top_routes"][0]["route"] == "GET /legacy/{id}"


def test_alert_on_delta_is_kept_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    monitor = MemoryMonitor(
        rss_probe=FakeRSS(start=200 * MIB, step=80 * MIB), wall_clock=lambda: 1234.5
    )
    with caplog.at_level(logging.WARNING, logger="memsafe.middleware"):
        call(MemoryMonitorMiddleware(make_app(route=Route("/big")), monitor), http_scope("/big"))
    (alert,) = monitor.stats()["recent_alerts"]
    assert alert == {
        "timestamp": 1234.5,
        "method": "GET",
        "route": "GET /big",
        "path": "/big",
        "status": 200,
        "rss_bytes": 280 * MIB,
        "delta_bytes": 80 * MIB,
        "reasons": ["delta"],
    }
    assert "high-memory request GET /big (/big)" in caplog.text
    assert "+80.0 MiB" in caplog.text


def test_alert_on_absolute_rss_and_both_reasons() -> None:
    monitor = MemoryMonitor(
        rss_probe=FakeRSS(start=300 * MIB, step=60 * MIB), alert_rss_mb=350, alert_delta_mb=50
    )
    call(MemoryMonitorMiddleware(make_app(), monitor))
    monitor_rss_only = MemoryMonitor(
        rss_probe=FakeRSS(start=400 * MIB, step=0), alert_rss_mb=350, alert_delta_mb=None
    )
    call(MemoryMonitorMiddleware(make_app(), monitor_rss_only))
    assert monitor.stats()["recent_alerts"][0]["reasons"] == ["delta", "rss"]
    assert monitor_rss_only.stats()["recent_alerts"][0]["reasons"] == ["rss"]


def test_no_alert_below_thresholds() -> None:
    monitor = MemoryMonitor(rss_probe=FakeRSS(step=MIB), alert_delta_mb=2, alert_rss_mb=1000)
    call(MemoryMonitorMiddleware(make_app(), monitor))
    assert monitor.stats()["alerts"] == 0
    assert monitor.stats()["recent_alerts"] == []


def test_alert_list_is_bounded_newest_first() -> None:
    monitor = MemoryMonitor(rss_probe=FakeRSS(step=MIB), alert_delta_mb=1, max_alerts=3)
    mw = MemoryMonitorMiddleware(make_app(), monitor)
    for i in range(10):
        call(mw, http_scope(f"/n{i}"))
    stats = monitor.stats()
    assert stats["alerts"] == 10
    assert [a["path"] for a in stats["recent_alerts"]] == ["/n9", "/n8", "/n7"]


def test_alert_path_is_truncated() -> None:
    monitor = MemoryMonitor(rss_probe=FakeRSS(step=MIB), alert_delta_mb=1)
    call(MemoryMonitorMiddleware(make_app(), monitor), http_scope("/" + "a" * 5000))
    assert len(monitor.stats()["recent_alerts"][0]["path"]) == 200


def test_alert_logging_is_rate_limited(caplog: pytest.LogCaptureFixture, fake_clock: Any) -> None:
    monitor = MemoryMonitor(
        rss_probe=FakeRSS(step=MIB),
        alert_delta_mb=1,
        alert_log_interval_seconds=10,
        clock=fake_clock,
    )
    mw = MemoryMonitorMiddleware(make_app(), monitor)
    with caplog.at_level(logging.WARNING, logger="memsafe.middleware"):
        for _ in range(3):
            call(mw)
        fake_clock.advance(10)
        call(mw)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[1].endswith("2 similar alerts not logged since the last one")
    assert monitor.stats()["alerts"] == 4


def test_stats_sort_top_routes_by_growth_and_limit_them() -> None:
    monitor = MemoryMonitor(rss_probe=FakeRSS(step=0), alert_delta_mb=None)
    for growth, name in [(1, "/small"), (9, "/big"), (4, "/mid")]:
        monitor.rss_probe = FakeRSS(step=growth * MIB)
        call(MemoryMonitorMiddleware(make_app(route=Route(name)), monitor))
    monitor.rss_probe = FakeRSS(step=-MIB)
    call(MemoryMonitorMiddleware(make_app(route=Route("/shrinks")), monitor))
    stats = monitor.stats(top_n=2)
    assert [r["route"] for r in stats["top_routes"]] == ["GET /big", "GET /mid"]
    assert stats["growth_bytes"] == 14 * MIB
    assert monitor.stats(top_n=0)["top_routes"] == []
    shrinks = [r for r in monitor.stats()["top_routes"] if r["route"] == "GET /shrinks"]
    assert shrinks[0]["growth_bytes"] == 0
    assert shrinks[0]["mean_delta_bytes"] == -MIB


def test_on_response_rss_is_called_with_the_rss_and_failures_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[int] = []
    monitor = MemoryMonitor(
        rss_probe=FakeRSS(start=10 * MIB, step=MIB), on_response_rss=seen.append
    )
    call(MemoryMonitorMiddleware(make_app(), monitor))
    assert seen == [11 * MIB]

    def broken(rss: int) -> None:
        raise RuntimeError("recycler bug")

    monitor.on_response_rss = broken
    with caplog.at_level(logging.ERROR, logger="memsafe.middleware"):
        sent = call(MemoryMonitorMiddleware(make_app(), monitor))
    assert sent[0]["status"] == 200
    assert "on_response_rss callback failed" in caplog.text
    assert monitor.stats()["requests"] == 2


def test_a_route_without_readable_template_counts_as_unmatched(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenRoute:
        @property
        def path_format(self) -> str:
            raise RuntimeError("odd route")

    monitor = MemoryMonitor(rss_probe=FakeRSS())
    mw = MemoryMonitorMiddleware(make_app(route=BrokenRoute()), monitor)
    with caplog.at_level(logging.ERROR, logger="memsafe.middleware"):
        sent = call(mw)
        call(mw)
        routes = monitor.stats()["top_routes"]
    assert sent[0]["status"] == 200
    assert [(r["route"], r["requests"]) for r in routes] == [(UNMATCHED_ROUTE, 2)]
    assert caplog.text.count("cannot read a template") == 1


def test_a_failure_while_recording_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenScope(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            raise KeyError(key)

    seen: list[int] = []
    monitor = MemoryMonitor(rss_probe=FakeRSS(), on_response_rss=seen.append)
    with caplog.at_level(logging.ERROR, logger="memsafe.middleware"):
        monitor.record(BrokenScope(), 1, 2, status=200)
    assert "failed to record a request" in caplog.text
    assert seen == [2]  # the recycler still hears about the request


def test_requests_are_folded_in_batches_and_on_stats() -> None:
    monitor = MemoryMonitor(rss_probe=FakeRSS(step=0))
    mw = MemoryMonitorMiddleware(make_app(route=Route("/a")), monitor)
    for _ in range(middleware._FOLD_EVERY + 3):
        call(mw)
    assert len(monitor._pending) == 3
    assert monitor.stats()["requests"] == middleware._FOLD_EVERY + 3
    assert len(monitor._pending) == 0


def test_thresholds_can_be_changed_and_are_validated() -> None:
    monitor = MemoryMonitor(rss_probe=FakeRSS(step=MIB), alert_delta_mb=None)
    call(MemoryMonitorMiddleware(make_app(), monitor))
    monitor.alert_delta_mb = 1
    call(MemoryMonitorMiddleware(make_app(), monitor))
    assert monitor.stats()["alerts"] == 1
    assert (monitor.alert_delta_mb, monitor.alert_rss_mb) == (1, None)
    with pytest.raises(ValueError, match="alert_rss_mb must be None"):
        monitor.alert_rss_mb = 0


def test_reset_forgets_figures_and_alerts() -> None:
    monitor = MemoryMonitor(rss_probe=FakeRSS(step=MIB), alert_delta_mb=1)
    call(MemoryMonitorMiddleware(make_app(), monitor))
    monitor.reset()
    stats = monitor.stats()
    assert (stats["requests"], stats["alerts"], stats["routes"]) == (0, 0, 0)
    assert stats["max_routes"] == monitor.max_routes == 200
    assert monitor.max_alerts == 100


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"alert_delta_mb": 0}, ValueError, "alert_delta_mb must be None or a number > 0"),
        ({"alert_rss_mb": -5.0}, ValueError, "alert_rss_mb must be None or a number > 0"),
        ({"alert_rss_mb": "5"}, TypeError, "alert_rss_mb must be None or a number > 0"),
        ({"max_routes": 0}, ValueError, "max_routes must be an int >= 1, got 0"),
        ({"max_alerts": True}, TypeError, "max_alerts must be an int >= 1"),
        ({"max_alerts": 2.5}, TypeError, "max_alerts must be an int >= 1"),
        ({"alert_log_interval_seconds": -1}, ValueError, "must be a number >= 0"),
        ({"rss_probe": 3}, TypeError, "rss_probe must be callable, got 3"),
    ],
)
def test_invalid_settings_are_rejected(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        MemoryMonitor(**kwargs)


def test_middleware_builds_its_own_monitor_from_keywords() -> None:
    mw = MemoryMonitorMiddleware(make_app(), max_routes=7, rss_probe=FakeRSS())
    assert mw.monitor is not default_monitor()
    assert mw.monitor.max_routes == 7


def test_middleware_without_arguments_feeds_the_default_monitor(
    fake_default: MemoryMonitor,
) -> None:
    mw = MemoryMonitorMiddleware(make_app())
    assert mw.monitor is fake_default
    call(mw)
    assert fake_default.stats()["requests"] == 1


def test_middleware_rejects_monitor_and_keywords_together() -> None:
    with pytest.raises(TypeError, match="not both"):
        MemoryMonitorMiddleware(make_app(), MemoryMonitor(), max_routes=3)


def test_default_monitor_is_created_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(middleware, "_default_monitor", None)
    first = default_monitor()
    assert default_monitor() is first


def test_default_monitor_reads_real_rss() -> None:
    monitor = MemoryMonitor()
    call(MemoryMonitorMiddleware(make_app(), monitor))
    assert monitor.stats()["last_rss_bytes"] > MIB


# --- FastAPI ---------------------------------------------------------------------------------


def build_app(monitor: MemoryMonitor | None = None, *, function_form: bool = False) -> FastAPI:
    app = FastAPI()

    @app.get("/users/{user_id}")
    def get_user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("handler failed")

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    sub = FastAPI()

    @sub.get("/items/{item_id}")
    def get_item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    app.mount("/sub", sub)
    if function_form:
        app.middleware("http")(memory_monitor)
    else:
        app.add_middleware(MemoryMonitorMiddleware, monitor=monitor)
    return app


@pytest.fixture
def monitor() -> MemoryMonitor:
    return MemoryMonitor(rss_probe=FakeRSS())


def test_fastapi_stats_keyed_by_route_template(monitor: MemoryMonitor) -> None:
    with TestClient(build_app(monitor)) as client:
        for user_id in ("1", "2", "abc"):
            client.get(f"/users/{user_id}")
        client.get("/sub/items/x1")
    routes = {r["route"]: r["requests"] for r in monitor.stats()["top_routes"]}
    assert routes == {"GET /users/{user_id}": 3, "GET /sub/items/{item_id}": 1}


def test_fastapi_scanner_of_unique_404_paths_does_not_grow_the_table() -> None:
    monitor = MemoryMonitor(rss_probe=FakeRSS(), max_routes=8)
    app = build_app(monitor)

    async def scan() -> list[int]:
        statuses: list[int] = []

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        for i in range(1000):
            scope = http_scope(f"/wp-admin/{i}/x.php", headers=[], query_string=b"")
            await app(scope, _receive, send)
        return statuses

    assert set(asyncio.run(scan())) == {404}
    stats = monitor.stats()
    assert stats["routes"] == 1
    assert stats["top_routes"][0] == {**stats["top_routes"][0], "route": UNMATCHED_ROUTE}
    assert stats["top_routes"][0]["requests"] == 1000


def test_fastapi_headers_off_by_default_on_when_asked(monitor: MemoryMonitor) -> None:
    with TestClient(build_app(monitor)) as client:
        assert "x-memory-rss-mb" not in client.get("/users/1").headers
        monitor.add_headers = True
        response = client.get("/users/1")
    assert float(response.headers["x-memory-rss-mb"]) > 0
    assert response.headers["x-memory-delta-mb"] == "1.0"


def test_fastapi_exception_propagates_and_is_recorded(monitor: MemoryMonitor) -> None:
    with TestClient(build_app(monitor)) as client, pytest.raises(RuntimeError, match="handler"):
        client.get("/boom")
    stats = monitor.stats()
    assert stats["errors"] == 1
    assert stats["top_routes"][0]["route"] == "GET /boom"


def test_fastapi_websocket_and_lifespan_pass_through(monitor: MemoryMonitor) -> None:
    with TestClient(build_app(monitor)) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "hi"
    assert monitor.stats()["requests"] == 0


def test_function_form_feeds_the_default_monitor(fake_default: MemoryMonitor) -> None:
    with TestClient(build_app(function_form=True)) as client:
        client.get("/users/7")
        client.get("/users/8")
        client.get("/nothing-here")
        assert "x-memory-rss-mb" not in client.get("/users/9").headers
        fake_default.add_headers = True
        response = client.get("/users/10")
        with pytest.raises(RuntimeError, match="handler"):
            client.get("/boom")
    assert response.headers["x-memory-delta-mb"] == "1.0"
    routes = {r["route"]: r["requests"] for r in fake_default.stats()["top_routes"]}
    assert routes == {"GET /users/{user_id}": 4, UNMATCHED_ROUTE: 1, "GET /boom": 1}
    assert fake_default.stats()["errors"] == 1
