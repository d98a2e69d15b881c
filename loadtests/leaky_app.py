"""A deliberately leaking server: the real app plus a middleware that keeps memory it never frees.

It exists to prove the memory guard can fail: `python -m loadtests.run --app
loadtests.leaky_app:app` must end in FAIL. Two knobs, read from the environment of each worker:

- LEAKY_APP_KIB_PER_REQUEST (default 64): KiB kept per HTTP request (a load-driven leak).
- LEAKY_APP_BYTES_PER_SECOND (default 0): bytes kept per second by each worker, whatever the
  load (a slow, time-driven leak). The whole tree leaks workers x this rate: 2 MB/min over two
  workers is 2 * 1024 * 1024 / 60 / 2 = 17476 bytes per second per worker.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from app.main import create_app as _create_real_app
from app.main import lazy_app_getattr

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Receive, Scope, Send

    from app.core.config import Settings

DEFAULT_KIB_PER_REQUEST = 64
DEFAULT_BYTES_PER_SECOND = 0
LEAKED: list[bytes] = []  # module-level and never cleared: this is the leak


def _leak(size: int) -> None:
    # b"L" * n writes every byte, so the pages are resident (bytes(n) may stay untouched).
    LEAKED.append(b"L" * size)


class LeakMiddleware:
    """Pure ASGI middleware that keeps kib_per_request KiB per request and bytes_per_second.

    The per-second leak runs on one daemon thread per worker process, started by the worker's
    first request (a thread started in the preloading master would not survive the fork).
    Thread safety: list.append is atomic under the GIL; each worker process leaks on its own.
    """

    def __init__(
        self,
        app: ASGIApp,
        kib_per_request: int = DEFAULT_KIB_PER_REQUEST,
        bytes_per_second: int = DEFAULT_BYTES_PER_SECOND,
    ) -> None:
        if kib_per_request < 0:
            msg = f"kib_per_request must be >= 0, got {kib_per_request!r}"
            raise ValueError(msg)
        if bytes_per_second < 0:
            msg = f"bytes_per_second must be >= 0, got {bytes_per_second!r}"
            raise ValueError(msg)
        self.app = app
        self.size_bytes = kib_per_request * 1024
        self.bytes_per_second = bytes_per_second
        self._thread_pid: int | None = None

    def _ensure_timed_leak(self) -> None:
        if self.bytes_per_second == 0 or self._thread_pid == os.getpid():
            return
        self._thread_pid = os.getpid()
        threading.Thread(target=self._leak_every_second, name="timed-leak", daemon=True).start()

    def _leak_every_second(self) -> None:
        while True:
            time.sleep(1.0)
            _leak(self.bytes_per_second)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self._ensure_timed_leak()
            if self.size_bytes:
                _leak(self.size_bytes)
        await self.app(scope, receive, send)


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, str(default))
    try:
        return int(text)
    except ValueError:
        msg = f"{name} must be a whole number of bytes/KiB >= 0, got {text!r}"
        raise ValueError(msg) from None


def create_app(settings: Settings | None = None) -> FastAPI:
    """The real app from app.main.create_app, wrapped in LeakMiddleware."""
    app = _create_real_app(settings)
    app.add_middleware(
        LeakMiddleware,
        kib_per_request=_env_int("LEAKY_APP_KIB_PER_REQUEST", DEFAULT_KIB_PER_REQUEST),
        bytes_per_second=_env_int("LEAKY_APP_BYTES_PER_SECOND", DEFAULT_BYTES_PER_SECOND),
    )
    return app


# `gunicorn loadtests.leaky_app:app` reads `app`: built on first access, like app.main's.
__getattr__ = lazy_app_getattr(__name__, create_app)
