"""Stdout logging, one line per event, tagged with the request id of the current request."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOG_FORMAT = "%(asctime)s %(levelname)s pid=%(process)d rid=%(request_id)s %(name)s: %(message)s"
REQUEST_ID_HEADER = b"x-request-id"
MAX_REQUEST_ID_CHARS = 128

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
access_logger = logging.getLogger("app.access")

HANDLER_NAME = "app-stdout"


class RequestIdFilter(logging.Filter):
    """Adds `request_id` from the context to every record (a ContextVar read, ~50 ns)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


# Control characters (C0 but tab, DEL, C1) as visible escapes: a client-chosen path such as
# /x%0dFAKE%1b[31m must not move the cursor, colour the terminal or forge a log line.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0)) if code != 0x09}
_ESCAPES |= {0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def printable(text: str) -> str:
    """`text` with control characters escaped (`\\r`, `\\n`, `\\x1b`); unchanged when clean."""
    return text if text.isprintable() else text.translate(_ESCAPES)


class OneLineFormatter(logging.Formatter):
    """One event, one line: newlines and other control characters are escaped (`\\n`, `\\x1b`).

    Log collectors (Render's included) split on newlines; a multi-line traceback would arrive
    as many unrelated events without the request id, and a raw CR or ESC from a request
    could forge or hide a line.
    """

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


class RepeatedLog:
    """Logs a repeated failure at most once per interval, with how many it held back.

    A failing dependency under load fails every request; one line per request would flood
    the log (issue 10 measured 21,000 lines/s). The first occurrence is logged at once, the
    next ones are counted and reported with the first occurrence after the interval.
    Thread safety: one lock guards the counter and the timestamp; logging runs outside it.
    """

    def __init__(
        self,
        log: logging.Logger,
        interval_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_seconds <= 0:
            msg = f"interval_seconds must be > 0, got {interval_seconds!r}"
            raise ValueError(msg)
        self._log = log
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self._held_back = 0

    def warning(self, message: str, *args: object) -> bool:
        """Log `message % args` unless one was logged within the interval; True when logged."""
        now = self._clock()
        with self._lock:
            if self._last is not None and now - self._last < self.interval_seconds:
                self._held_back += 1
                return False
            held_back, self._held_back, self._last = self._held_back, 0, now
        if held_back:
            message += " (%d more like it in the last %.0fs, not logged)"
            args = (*args, held_back, self.interval_seconds)
        self._log.warning(message, *args)
        return True


def configure_logging(level: str) -> None:
    """Send every log record to stdout, one line each; idempotent across app factories."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:
        if handler.get_name() == HANDLER_NAME:
            return
    handler = logging.StreamHandler(sys.stdout)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(OneLineFormatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)


def _clean_request_id(raw: bytes) -> str | None:
    text = raw.decode("latin-1").strip()
    if not text or len(text) > MAX_REQUEST_ID_CHARS or not text.isprintable():
        return None
    return text


class RequestIdMiddleware:
    """Pure ASGI: honours or generates X-Request-ID, exposes it to logs and echoes it back.

    Per-request state stays in locals and one ContextVar; an optional access line is logged.
    """

    def __init__(self, app: ASGIApp, *, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id: str | None = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                request_id = _clean_request_id(value)
                break
        if request_id is None:
            request_id = uuid.UUID(bytes=os.urandom(16), version=4).hex
        header_value = request_id.encode("latin-1")
        token = request_id_var.set(request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, header_value))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log:
                access_logger.info(
                    '"%s %s" %d %.1fms',
                    printable(scope["method"]),
                    printable(scope["path"]),
                    status,
                    (time.perf_counter() - started) * 1000.0,
                )
            request_id_var.reset(token)


def log_config(level: str, server: str) -> dict[str, Any]:
    """logging.dictConfig for a server's own lines in the app's one-line format, on stdout.

    `server` is the logger prefix ("gunicorn" or "uvicorn"): its error lines propagate to the
    root handler and its access log is off, because the app logs each request itself, with
    its request id (logging.access_log). The handler's name matches configure_logging's, so
    create_app does not add a second one.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "app.core.logging.RequestIdFilter"}},
        "formatters": {"app": {"()": "app.core.logging.OneLineFormatter", "format": LOG_FORMAT}},
        "handlers": {
            HANDLER_NAME: {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "app",
                "filters": ["request_id"],
            }
        },
        "root": {"level": level, "handlers": [HANDLER_NAME]},
        "loggers": {
            server: {"level": level, "handlers": [], "propagate": True},
            f"{server}.error": {"level": level, "handlers": [], "propagate": True},
            f"{server}.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
    }
