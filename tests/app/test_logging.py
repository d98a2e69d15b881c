"""Request ids: honoured or generated, echoed back, on every log line of the request."""

from __future__ import annotations

import asyncio
import logging

import pytest
from starlette.types import Message, Receive, Scope, Send

from app.core.logging import (
    OneLineFormatter,
    RequestIdFilter,
    RequestIdMiddleware,
    configure_logging,
    request_id_var,
)
from tests.app.conftest import TestClient


def test_request_id_is_generated_and_echoed(client: TestClient) -> None:
    first = client.get("/health").headers["x-request-id"]
    second = client.get("/health").headers["x-request-id"]
    assert len(first) == 32
    assert first != second


def test_request_id_from_the_client_is_honoured(client: TestClient) -> None:
    response = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


@pytest.mark.parametrize("raw", ["", "x" * 129])
def test_unusable_request_id_is_replaced(client: TestClient, raw: str) -> None:
    response = client.get("/health", headers={"X-Request-ID": raw})
    assert response.headers["x-request-id"] != raw
    assert len(response.headers["x-request-id"]) == 32


def test_access_log_is_one_line_with_status_and_id(caplog: pytest.LogCaptureFixture) -> None:

    captured: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        logging.getLogger("app.inner").info("inside")
        captured.append(request_id_var.get())

    middleware = RequestIdMiddleware(app, access_log=True)

    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "headers": [(b"x-request-id", b"r1")],
    }
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO):
        asyncio.run(middleware(scope, _never_receive, _never_send))
    assert captured == ["r1"]
    by_name = {r.name: r for r in caplog.records}
    assert getattr(by_name["app.inner"], "request_id", None) == "r1"
    access = by_name["app.access"]
    assert getattr(access, "request_id", None) == "r1"
    assert access.getMessage().startswith('"GET /x" 500 ')
    assert "\n" not in access.getMessage()
    assert request_id_var.get() == "-"


def test_configure_logging_adds_one_stdout_handler() -> None:
    root = logging.getLogger()
    configure_logging("INFO")
    configure_logging("INFO")
    names = [h.get_name() for h in root.handlers]
    assert names.count("app-stdout") == 1


def test_non_http_scopes_pass_through() -> None:

    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    middleware = RequestIdMiddleware(app)
    asyncio.run(middleware({"type": "lifespan"}, _never_receive, _never_send))
    assert seen == ["lifespan"]


async def _never_receive() -> Message:
    raise AssertionError("receive called")


async def _never_send(message: Message) -> None:
    raise AssertionError("send called")


def test_tracebacks_stay_on_one_line() -> None:
    formatter = OneLineFormatter("%(message)s")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed\nhere", None, None)
        import sys

        record.exc_info = sys.exc_info()
    line = formatter.format(record)
    assert "\n" not in line
    assert "failed\\nhere" in line
    assert "ValueError: boom" in line
