"""gunicorn's asgi worker with a request-head deadline and a per-worker connection cap.

gunicorn 27's `asgi` worker (and uvicorn's) gives a request head unlimited time and accepts
connections until accept() fails with EMFILE, which asyncio then logs once per failed call.
`GuardedASGIWorker` (server.worker_class "guarded") adds, on its event loop:

- a deadline for the whole request head, counted from accept (total time, not per byte):
  past it the client gets 408 and the connection is closed;
- the keep-alive timeout as gunicorn applies it (armed when a response ends, not reset by
  bytes of the next head, so idle time plus the next head never exceed it);
- a cap on open connections (server.max_connections, lowered below RLIMIT_NOFILE): at the
  cap the longest-waiting idle connection is shed for the new one (see ConnectionGuard);
- one log line per interval with the counts of refusals, shed connections, head timeouts
  and accept errors, instead of one line (with a traceback) per event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from gunicorn.asgi.protocol import ASGIProtocol
from gunicorn.workers import gasgi

from app.core.check import settings_warnings_muted
from app.core.config import load_settings
from app.server.guard import ACCEPT_ERROR, HEAD_TIMEOUT, ConnectionGuard, connection_cap

logger = logging.getLogger(__name__)

# The message asyncio's selector loop reports for EMFILE/ENFILE/ENOBUFS/ENOMEM in accept().
# Ref: https://github.com/python/cpython/blob/3.11/Lib/asyncio/selector_events.py
ACCEPT_FAILED_MESSAGE: Final = "socket.accept() out of system resource"
REQUEST_TIMEOUT_RESPONSE: Final = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)


class GuardedProtocol(ASGIProtocol):  # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn's HTTP/1 protocol, registered with the worker's guard and a head deadline.

    Thread safety: none needed; each instance lives on its worker's event loop thread.
    """

    _task: asyncio.Task[None] | None  # gunicorn's connection task (set in connection_made)

    def __init__(self, worker: GuardedASGIWorker) -> None:
        super().__init__(worker)
        self._guard: ConnectionGuard = worker.guard
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._task is not None:
            self._task.add_done_callback(self._release)
        if not self._guard.admit(self):
            self.shed()
            return
        if self._callback_parser is not None:  # HTTP/1 (not h2 over ALPN, not uwsgi)
            self._head_timer = self.worker.loop.call_later(
                self._guard.head_timeout_seconds, self._head_timed_out
            )
            self._guard.waiting(self)

    def _on_headers_complete(self) -> Any:
        self._cancel_head_timer()
        self._guard.busy(self)
        return super()._on_headers_complete()

    def _arm_keepalive_timer(self) -> None:
        # The connection is idle from here until the next head: sheddable first at the cap.
        super()._arm_keepalive_timer()
        if not self._closed:
            self._guard.waiting(self)

    def connection_lost(self, exc: Exception | None) -> None:
        idle_task: asyncio.Task[None] | None = None
        if self._current_request is None and not self._finishing_calls:
            # No application call runs on this connection: end its task now. gunicorn would
            # cancel it after asgi_disconnect_grace_period (3 s) with a timer that holds the
            # whole connection meanwhile: measured, 2 MiB more RSS after a 1,200-client burst.
            idle_task, self._task = self._task, None
        super().connection_lost(exc)
        if idle_task is not None:
            self._task = idle_task
            self._wake()
        self._cancel_head_timer()
        self._guard.forget(self)
        # asyncio's socket transport keeps a bound method of itself (_read_ready_cb): a cycle
        # that outlives the socket until a full gc pass. Reading has stopped for good here.
        # Ref: https://github.com/python/cpython/blob/3.11/Lib/asyncio/selector_events.py
        if getattr(self.transport, "_read_ready_cb", None) is not None:
            self.transport._read_ready_cb = None

    def _release(self, task: asyncio.Task[None]) -> None:
        # The parser holds bound methods of this protocol and the body receiver holds the
        # protocol: reference cycles that only a full gc pass frees. A slow connection lives
        # long enough to reach gc's oldest generation, and an idle worker runs no gc at all,
        # so such connections kept +26 MiB of RSS after 7,700 of them (bench_slowloris). Cutting
        # the cycles here lets reference counting free the connection at once.
        self._callback_parser = None
        self._body_receiver = None
        self._current_request = None

    def shed(self) -> None:
        """Close now (the guard needs the slot): no response, the fd is freed this tick."""
        self._cancel_head_timer()
        self._guard.forget(self)
        if self.transport is not None and not self._closed:
            self.transport.abort()
        self._wake()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._closed:
            return
        self._guard.count(HEAD_TIMEOUT)
        self._guard.forget(self)
        self._safe_write(REQUEST_TIMEOUT_RESPONSE)
        self._close_transport()
        self._wake()

    def _wake(self) -> None:
        # _handle_connection waits on this event; woken, it sees the connection closed and ends
        # now, instead of at the cancellation connection_lost schedules after a grace period.
        if self._request_ready is not None:
            self._request_ready.set()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


class GuardedASGIWorker(gasgi.ASGIWorker):  # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn's ASGIWorker serving connections through GuardedProtocol.

    Reads server.max_connections, server.head_timeout_seconds and
    server.refusal_log_interval_seconds from the same settings as config/gunicorn.conf.py.
    Thread safety: one instance per worker process; the guard is used on its loop only.
    """

    guard: ConnectionGuard

    def init_process(self) -> None:
        with settings_warnings_muted():  # the app's own load logs them once
            server = load_settings().server
        cap, lowered = connection_cap(server.max_connections)
        if lowered is not None:
            logger.warning("%s", lowered)
        self.guard = ConnectionGuard(cap, server.head_timeout_seconds)
        self._log_interval_seconds = server.refusal_log_interval_seconds
        # ASGIWorker._serve builds every connection's protocol from this module-level name.
        # A worker process runs exactly one worker, so the swap stays inside this process.
        gasgi.ASGIProtocol = GuardedProtocol
        super().init_process()

    def _setup_event_loop(self) -> None:
        super()._setup_event_loop()
        self.loop.set_exception_handler(self._on_loop_exception)
        self.loop.call_later(self._log_interval_seconds, self._flush_counts)

    def _flush_counts(self) -> None:
        self.guard.flush()
        if not self.loop.is_closed():
            self.loop.call_later(self._log_interval_seconds, self._flush_counts)

    def _on_loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # asyncio reports each failed accept() with a traceback; count it into the guard's one
        # line per interval instead (issue 10 measured 21,000 lines/s, 380 MB of log).
        if context.get("message") == ACCEPT_FAILED_MESSAGE:
            self.guard.count(ACCEPT_ERROR)
            return
        loop.default_exception_handler(context)

    async def _shutdown(self) -> None:
        await super()._shutdown()
        self.guard.flush()
