"""WorkerDrain: announce Connection: close, then exit once pre-drain requests are done."""

from __future__ import annotations

import asyncio
import threading

import pytest

from memsafe.drain import DrainMiddleware, Message, Receive, Scope, Send, WorkerDrain


def _drain(exits: list[str]) -> WorkerDrain:
    return WorkerDrain(exits.append, settle_seconds=0.0, max_drain_seconds=5.0)


def test_without_a_loop_exit_is_immediate() -> None:
    exits: list[str] = []
    _drain(exits).request_exit("now")
    assert exits == ["now"]


def test_idle_worker_exits_after_settling() -> None:
    exits: list[str] = []

    async def scenario() -> None:
        drain = _drain(exits)
        drain.bind_running_loop()
        drain.request_exit("rss")
        assert drain.is_draining
        assert exits == []
        await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert exits == ["rss"]


def test_exit_waits_for_requests_started_before_the_drain() -> None:
    exits: list[str] = []

    async def scenario() -> None:
        drain = _drain(exits)
        drain.bind_running_loop()
        before = drain.request_started()
        drain.request_exit("rss")
        after = drain.request_started()
        assert (before, after) == (True, False)
        drain.request_finished(after)
        await asyncio.sleep(0.01)
        assert exits == []  # the pre-drain request is still running
        drain.request_finished(before)
        await asyncio.sleep(0.01)
        drain.request_exit("again")  # ignored: already draining
        await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert exits == ["rss"]


def test_exit_is_forced_after_max_drain_seconds() -> None:
    exits: list[str] = []

    async def scenario() -> None:
        drain = WorkerDrain(exits.append, settle_seconds=0.0, max_drain_seconds=0.01)
        drain.bind_running_loop()
        drain.request_started()  # never finishes
        drain.request_exit("stuck")
        await asyncio.sleep(0.05)

    asyncio.run(scenario())
    assert exits == ["stuck"]


def test_request_exit_from_another_thread_is_scheduled_on_the_loop() -> None:
    exits: list[str] = []

    async def scenario() -> None:
        drain = _drain(exits)
        drain.bind_running_loop()
        thread = threading.Thread(target=drain.request_exit, args=("watchdog",))
        thread.start()
        thread.join()
        await asyncio.sleep(0.02)
        assert drain.is_draining

    asyncio.run(scenario())
    assert exits == ["watchdog"]


def test_reset_forgets_the_drain() -> None:
    exits: list[str] = []

    async def scenario() -> None:
        drain = _drain(exits)
        drain.bind_running_loop()
        drain.request_exit("rss")
        drain.reset()
        await asyncio.sleep(0.01)
        assert not drain.is_draining

    asyncio.run(scenario())
    assert exits == []


async def _ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"connection", b"keep-alive")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def _run(middleware: DrainMiddleware) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    async def scenario() -> None:
        middleware.drain.bind_running_loop()
        scope: Scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
        await middleware(scope, receive, send)
        await asyncio.sleep(0.01)

    asyncio.run(scenario())
    return sent


def test_middleware_announces_close_once_draining() -> None:
    exits: list[str] = []
    drain = _drain(exits)
    middleware = DrainMiddleware(_ok_app, drain, check_rss=lambda: drain.request_exit("rss"))
    headers = _run(middleware)[0]["headers"]
    assert headers == [(b"connection", b"close")]
    assert drain.inflight == 0
    assert exits == ["rss"]


def test_middleware_leaves_headers_alone_normally() -> None:
    checks: list[int] = []
    drain = _drain([])
    middleware = DrainMiddleware(_ok_app, drain, check_rss=lambda: checks.append(1))
    assert _run(middleware)[0]["headers"] == [(b"connection", b"keep-alive")]
    assert checks == [1]


def test_middleware_passes_other_scopes_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def never_receive() -> Message:
        raise AssertionError

    async def never_send(message: Message) -> None:
        raise AssertionError

    middleware = DrainMiddleware(app, _drain([]))
    asyncio.run(middleware({"type": "websocket"}, never_receive, never_send))
    assert seen == ["websocket"]


def test_lifespan_startup_complete_reports_ready_once_and_binds_the_loop() -> None:
    ready: list[int] = []
    drain = _drain([])

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

    sent: list[Message] = []

    async def record(message: Message) -> None:
        sent.append(message)

    async def nothing() -> Message:
        return {}

    middleware = DrainMiddleware(app, drain, on_ready=lambda: ready.append(1))

    async def scenario() -> None:
        await middleware({"type": "lifespan"}, nothing, record)
        assert drain._loop is asyncio.get_running_loop()

    asyncio.run(scenario())
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert ready == [1]
    _run(middleware)  # a request later does not report again
    assert ready == [1]


def test_first_request_reports_ready_without_a_lifespan() -> None:
    ready: list[int] = []
    middleware = DrainMiddleware(_ok_app, _drain([]), on_ready=lambda: ready.append(1))
    _run(middleware)
    _run(middleware)
    assert ready == [1]


def test_exit_request_must_be_callable() -> None:
    with pytest.raises(TypeError, match="exit_request must be callable, got 3"):
        WorkerDrain(3)  # type: ignore[arg-type]  # deliberately wrong
