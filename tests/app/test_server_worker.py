"""GuardedASGIWorker's event-loop hooks: accept() errors are counted, never logged one by one."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from typing import Any

import pytest

from app.server.guard import ACCEPT_ERROR, ConnectionGuard
from app.server.worker import ACCEPT_FAILED_MESSAGE, GuardedASGIWorker


def _worker() -> GuardedASGIWorker:
    worker: GuardedASGIWorker = object.__new__(GuardedASGIWorker)
    worker.guard = ConnectionGuard(cap=1, head_timeout_seconds=1.0)
    return worker


def test_accept_errors_go_to_the_guard_count(caplog: pytest.LogCaptureFixture) -> None:
    worker = _worker()
    loop = asyncio.new_event_loop()
    try:
        context = {"message": ACCEPT_FAILED_MESSAGE, "exception": OSError(24, "EMFILE")}
        with caplog.at_level(logging.DEBUG):
            for _ in range(10_000):
                worker._on_loop_exception(loop, context)
    finally:
        loop.close()
    assert worker.guard.totals[ACCEPT_ERROR] == 10_000
    assert caplog.records == []


def test_other_loop_errors_still_reach_asyncio_default_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = _worker()
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            worker._on_loop_exception(loop, {"message": "something else broke"})
    finally:
        loop.close()
    assert [r.getMessage() for r in caplog.records] == ["something else broke"]
    assert worker.guard.totals[ACCEPT_ERROR] == 0


class _FakeWorker:
    """What gunicorn's ASGIProtocol reads from its worker, on a real event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        from gunicorn.config import Config
        from gunicorn.glogging import Logger

        self.cfg = Config()
        self.cfg.set("asgi_disconnect_grace_period", 0)
        self.log = Logger(self.cfg)
        self.asgi = None  # no request ever completes its head here
        self.loop = loop
        self.nr_conns = 0
        self.alive = True
        self.nr = 0
        self.max_requests = 1 << 30
        self.guard = ConnectionGuard(cap=1000, head_timeout_seconds=60.0)


async def _slow_clients_come_and_go(protocol: type[Any], count: int) -> _FakeWorker:
    loop = asyncio.get_running_loop()
    worker = _FakeWorker(loop)
    server = await loop.create_server(lambda: protocol(worker), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # Plain blocking sockets: asyncio client transports would be cycles of their own here.
    clients = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        clients.append(client)
    await asyncio.sleep(0.2)
    for client in clients:
        client.close()
    while worker.nr_conns:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # the connection tasks end
    server.close()
    await server.wait_closed()
    return worker


@pytest.mark.slow
@pytest.mark.parametrize(("guarded", "is_cyclic"), [(True, False), (False, True)])
def test_closed_connections_leave_no_reference_cycles(guarded: bool, is_cyclic: bool) -> None:
    """Slow connections live into gc's oldest generation: as cycles they stay until a full gc.

    The unguarded protocol is the failing twin: the same run leaves its connections in cycles.
    """
    from gunicorn.asgi.protocol import ASGIProtocol

    from app.server.worker import GuardedProtocol

    protocol = GuardedProtocol if guarded else ASGIProtocol
    gc.collect()
    gc.disable()
    try:
        asyncio.run(_slow_clients_come_and_go(protocol, 50))
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        leftovers = [o for o in gc.garbage if isinstance(o, (ASGIProtocol, asyncio.BaseTransport))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert (len(leftovers) >= 50) is is_cyclic
    assert bool(leftovers) is is_cyclic
