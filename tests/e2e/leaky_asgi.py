"""A plain ASGI app that leaks on purpose: each request keeps LEAK_KIB more in a global list."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from memsafe.probes import process_rss_bytes
from memsafe.recycle import check_worker_rss

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LEAK_KIB = int(os.environ.get("E2E_LEAK_KIB", "2048"))
# UvicornWorker calls no gunicorn request hook: the app checks after each response instead,
# as MemoryMonitor(on_response_rss=check_worker_rss) does in the real service.
IS_APP_CHECK = os.environ.get("E2E_APP_CHECK") == "1"

_leak: list[bytes] = []


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Leak LEAK_KIB per request (bytes written, so resident) and answer pid and RSS."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    _leak.append(b"\x01" * (LEAK_KIB * 1024))
    rss = process_rss_bytes()
    body = json.dumps({"pid": os.getpid(), "rss_bytes": rss, "leaked": len(_leak)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
    if IS_APP_CHECK:
        check_worker_rss(rss)
