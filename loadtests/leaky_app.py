"""A deliberately leaking server: the real app plus a middleware that keeps ~N KiB per request.

It exists to prove the memory guard can fail: `python -m loadtests.run --app
loadtests.leaky_app:app` must end in FAIL. LEAKY_APP_KIB_PER_REQUEST sets the leak (default 64).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from app.main import create_app as _create_real_app
from app.main import lazy_app_getattr

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Receive, Scope, Send

    from app.core.config import Settings

DEFAULT_KIB_PER_REQUEST = 64
LEAKED: list[bytes] = []  # module-level and never cleared: this is the leak


class LeakMiddleware:
    """Pure ASGI middleware that appends kib_per_request KiB to LEAKED per HTTP request.

    Thread safety: list.append is atomic under the GIL; each worker process leaks on its own.
    """

    def __init__(self, app: ASGIApp, kib_per_request: int = DEFAULT_KIB_PER_REQUEST) -> None:
        if kib_per_request < 0:
            msg = f"kib_per_request must be >= 0, got {kib_per_request!r}"
            raise ValueError(msg)
        self.app = app
        self.size_bytes = kib_per_request * 1024

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # b"L" * n writes every byte, so the pages are resident (bytes(n) may stay untouched).
            LEAKED.append(b"L" * self.size_bytes)
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The real app from app.main.create_app, wrapped in LeakMiddleware."""
    app = _create_real_app(settings)
    kib = int(os.environ.get("LEAKY_APP_KIB_PER_REQUEST", str(DEFAULT_KIB_PER_REQUEST)))
    app.add_middleware(LeakMiddleware, kib_per_request=kib)
    return app


# `gunicorn loadtests.leaky_app:app` reads `app`: built on first access, like app.main's.
__getattr__ = lazy_app_getattr(__name__, create_app)
