"""Exception handlers: a store that cannot answer is a 503 with a JSON body, never a 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.core.config import Settings
from app.core.logging import RepeatedLog
from app.store import StoreUnavailableError

logger = logging.getLogger(__name__)

STORE_UNAVAILABLE = "store_unavailable"
# The cause (a file path, a database host) goes to the log, not to an anonymous client.
STORE_UNAVAILABLE_DETAIL = "the user store is unavailable; retry shortly"
# Seconds a client should wait before retrying: a restored file or a restarted server
# answers within a few seconds, and Render's health check polls at about this pace.
RETRY_AFTER_SECONDS = 5


class StoreUnavailableBody(BaseModel):
    """The 503 answer of a route whose store cannot answer."""

    detail: str
    error: str = STORE_UNAVAILABLE


def add_error_handlers(app: FastAPI, settings: Settings) -> None:
    """Map StoreUnavailableError to 503 and log it at most once per logging interval."""
    repeated = RepeatedLog(logger, settings.logging.repeat_interval_seconds)

    async def on_store_unavailable(request: Request, exc: Exception) -> JSONResponse:
        repeated.warning("%s %s: 503, %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": STORE_UNAVAILABLE_DETAIL, "error": STORE_UNAVAILABLE},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    app.add_exception_handler(StoreUnavailableError, on_store_unavailable)
