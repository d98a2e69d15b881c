"""Request ids: honoured or generated, echoed back, on every log line of the request."""

from __future__ import annotations

import asyncio
import logging

import pytest
from starlette.types import Message, Receive, Scope, Send

from app.core.logging import (
    OneLineFormatter,
    RepeatedLog,
    RequestIdFilter,
    RequestIdMiddleware,
    configure_logging,
    printable,
    request_id_var,
)
from tests.app.conftest import TestClient
from tests.conftest import FakeClock as FakeClockLike


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


def test_access_log_escapes_control_characters_from_the_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    middleware = RequestIdMiddleware(app, access_log=True)
    # What a server hands over for GET /x%0dFAKE%1b[31m: the path, percent-decoded.
    scope: Scope = {"type": "http", "method": "GET", "path": "/x\rFAKE\x1b[31m", "headers": []}
    with caplog.at_level(logging.INFO, logger="app.access"):
        asyncio.run(middleware(scope, _never_receive, _never_send))
    (record,) = [r for r in caplog.records if r.name == "app.access"]
    message = record.getMessage()
    assert "\r" not in message
    assert "\x1b" not in message
    assert message.startswith('"GET /x\\rFAKE\\x1b[31m" ')


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("/plain/path", "/plain/path"),
        ("a\rb", "a\\rb"),
        ("a\nb", "a\\nb"),
        ("\x1b[31m", "\\x1b[31m"),
        ("\x00\x7f\x85", "\\x00\\x7f\\x85"),
        ("tab\tkept", "tab\tkept"),
        ("line\u2028sep", "line\\u2028sep"),
        ("ünïcødé", "ünïcødé"),
    ],
)
def test_printable_escapes_control_characters_only(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_formatter_escapes_control_characters_in_any_message() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "a\rFAKE %s", ("\x1b[2J",), None)
    line = OneLineFormatter("%(message)s").format(record)
    assert line == "a\\rFAKE \\x1b[2J"


def test_repeated_log_logs_once_per_interval_with_a_count(
    fake_clock: FakeClockLike, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("test.repeated")
    repeated = RepeatedLog(log, 10.0, clock=fake_clock)
    with caplog.at_level(logging.WARNING, logger="test.repeated"):
        assert repeated.warning("store down: %s", "a")
        for _ in range(50):
            assert not repeated.warning("store down: %s", "b")
        fake_clock.advance(10.0)
        assert repeated.warning("store down: %s", "c")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "store down: a",
        "store down: c (50 more like it in the last 10s, not logged)",
    ]


def test_repeated_log_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_seconds must be > 0, got 0"):
        RepeatedLog(logging.getLogger("x"), 0)
