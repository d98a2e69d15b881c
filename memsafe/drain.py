"""Keep-alive drain before a worker exits: announce `Connection: close`, then stop the worker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SETTLE_SECONDS: Final = 0.05
MAX_DRAIN_SECONDS: Final = 5.0
CONNECTION_CLOSE: Final = (b"connection", b"close")


class WorkerDrain:
    """Drains a worker's keep-alive connections before asking the server to stop it.

    A server stopping a worker (gunicorn's asgi worker once ``worker.alive`` turns False,
    uvicorn on SIGTERM) closes each connection after its current response, even when that
    response promised keep-alive: a client that sends its next request on it then fails
    ("server disconnected") unless it retries. So :meth:`request_exit` first switches the
    worker to draining, where every response carries ``Connection: close`` (clients
    reconnect, to a sibling or the replacement worker); only when the requests that started
    before the switch have finished (or after ``max_drain_seconds``) does it call
    ``exit_request`` (memsafe's :func:`~memsafe.recycle.request_worker_exit`).

    :class:`DrainMiddleware` counts the requests and binds the event loop; without it (no
    loop known) :meth:`request_exit` exits at once.

    Thread safety: ``request_exit`` may be called from any thread (the RSS watchdog); the rest
    runs on the event loop thread the middleware bound.
    """

    def __init__(
        self,
        exit_request: Callable[[str], None],
        *,
        settle_seconds: float = SETTLE_SECONDS,
        max_drain_seconds: float = MAX_DRAIN_SECONDS,
    ) -> None:
        if not callable(exit_request):
            msg = f"exit_request must be callable, got {exit_request!r}"
            raise TypeError(msg)
        self._exit_request = exit_request
        self.settle_seconds = settle_seconds
        self.max_drain_seconds = max_drain_seconds
        self.reset()

    def reset(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Forget any drain; bind to ``loop`` (the worker's event loop) when given."""
        self._loop = loop
        self.is_draining = False
        self.inflight = 0
        self._pending_before_drain = 0
        self._reason: str | None = None
        self._is_exit_requested = False

    def bind_running_loop(self) -> None:
        """Bind the running loop unless an open one is bound (cheap: called per request)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._loop = asyncio.get_running_loop()

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
                # let the server finish this connection's loop iteration first
                self._loop.call_later(self.settle_seconds, self._finish)

    def _finish(self) -> None:
        if self._is_exit_requested or self._reason is None:
            return
        self._is_exit_requested = True
        self._exit_request(self._reason)


class DrainMiddleware:
    """Pure ASGI: checks RSS before each response's headers; adds ``Connection: close`` while
    the worker drains.

    ``check_rss`` runs before the headers of every HTTP response (RSSRecycler.check), so a
    worker that crosses its cap announces the close on this very response. ``on_ready`` is
    called once, when the app has sent ``lifespan.startup.complete`` or, for an app without
    a lifespan, on its first request (RSSRecycler uses it to tell a worker waiting for its
    replacement that this worker now serves). RSSRecycler's ``post_worker_init`` wraps the
    worker's app in one; an app may also add it itself.

    Thread safety: per-request state stays in locals; the drain's counters are touched on the
    event loop only.
    """

    def __init__(
        self,
        app: ASGIApp,
        drain: WorkerDrain,
        check_rss: Callable[[], object] | None = None,
        on_ready: Callable[[], object] | None = None,
    ) -> None:
        self.app = app
        self.drain = drain
        self.check_rss = check_rss
        self._on_ready = on_ready

    def _ready(self) -> None:
        on_ready, self._on_ready = self._on_ready, None
        if on_ready is not None:
            on_ready()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                self.drain.bind_running_loop()
                await self.app(scope, receive, self._lifespan_send(send))
            else:
                await self.app(scope, receive, send)
            return
        drain = self.drain
        drain.bind_running_loop()
        if self._on_ready is not None:
            self._ready()
        check_rss = self.check_rss
        started_before_drain = drain.request_started()

        async def send_announcing_close(message: Message) -> None:
            if message["type"] == "http.response.start":
                if check_rss is not None:
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

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                self._ready()

        return lifespan_send
