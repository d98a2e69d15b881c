"""Graceful worker recycling: announce `Connection: close` first, stop the worker after."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from memsafe.recycle import check_worker_rss, request_worker_exit

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

SETTLE_SECONDS = 0.05
MAX_DRAIN_SECONDS = 5.0
CONNECTION_CLOSE = (b"connection", b"close")


class WorkerDrain:
    """Drains a worker's keep-alive connections before asking gunicorn to stop it.

    gunicorn's asgi worker, once `worker.alive` turns False, closes each connection right
    after its current response, even when that response already promised keep-alive: the
    client's next request on it then fails ("server disconnected"). So a recycle request
    first switches the worker to draining, where every response carries `Connection: close`
    and clients reconnect (to a sibling worker); only when the requests that started before
    the switch have finished does it call `exit_request` (memsafe's request_worker_exit).

    Thread safety: `request_exit` may be called from any thread (the RSS watchdog); the rest
    runs on the event loop thread bound by `bind_loop`.
    """

    def __init__(
        self,
        exit_request: Callable[[str], None] = request_worker_exit,
        *,
        settle_seconds: float = SETTLE_SECONDS,
        max_drain_seconds: float = MAX_DRAIN_SECONDS,
    ) -> None:
        self._exit_request = exit_request
        self.settle_seconds = settle_seconds
        self.max_drain_seconds = max_drain_seconds
        self.reset()

    def reset(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Forget any drain; bind to `loop` (the worker's event loop) when given."""
        self._loop = loop
        self.is_draining = False
        self.inflight = 0
        self._pending_before_drain = 0
        self._reason: str | None = None
        self._is_exit_requested = False

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Use `loop` for scheduling (called by the lifespan in each worker)."""
        self.reset(loop)

    def request_exit(self, reason: str) -> None:
        """Start draining, then exit; safe from any thread. Without a loop, exits at once."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._exit_request(reason)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._begin(reason)
        else:
            loop.call_soon_threadsafe(self._begin, reason)

    def _begin(self, reason: str) -> None:
        if self.is_draining:
            return
        self.is_draining = True
        self._reason = reason
        self._pending_before_drain = self.inflight
        logger.warning(
            "draining worker before exit (%s): %d request(s) in flight", reason, self.inflight
        )
        loop = self._loop
        if loop is None:  # reset() ran in between: the worker is stopping anyway
            return
        loop.call_later(self.max_drain_seconds, self._finish)
        if self._pending_before_drain == 0:
            loop.call_later(self.settle_seconds, self._finish)

    def request_started(self) -> bool:
        """Count a request in; returns True when it started before any drain."""
        self.inflight += 1
        return not self.is_draining

    def request_finished(self, started_before_drain: bool) -> None:
        """Count a request out; the last pre-drain request lets the worker exit."""
        self.inflight -= 1
        if self.is_draining and started_before_drain:
            self._pending_before_drain -= 1
            if self._pending_before_drain <= 0 and self._loop is not None:
                # let gunicorn finish this connection's loop iteration first
                self._loop.call_later(self.settle_seconds, self._finish)

    def _finish(self) -> None:
        if self._is_exit_requested or self._reason is None:
            return
        self._is_exit_requested = True
        self._exit_request(self._reason)


worker_drain = WorkerDrain()
"""This process's drain (one per gunicorn worker; gunicorn.conf.py hands it to RSSRecycler)."""


class DrainMiddleware:
    """Pure ASGI: checks RSS before each response's headers and adds `Connection: close` while
    the worker drains. The RSS check is memsafe's check_worker_rss (a no-op without an
    RSSRecycler in this process); running it before the headers lets this very response
    announce the close.
    """

    def __init__(
        self,
        app: ASGIApp,
        drain: WorkerDrain = worker_drain,
        check_rss: Callable[[], object] = check_worker_rss,
    ) -> None:
        self.app = app
        self.drain = drain
        self.check_rss = check_rss

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        drain = self.drain
        check_rss = self.check_rss
        started_before_drain = drain.request_started()

        async def send_announcing_close(message: Message) -> None:
            if message["type"] == "http.response.start":
                check_rss()
                if drain.is_draining:
                    headers = [
                        (name, value)
                        for name, value in message.get("headers", [])
                        if name.lower() != b"connection"
                    ]
                    headers.append(CONNECTION_CLOSE)
                    message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_announcing_close)
        finally:
            drain.request_finished(started_before_drain)
