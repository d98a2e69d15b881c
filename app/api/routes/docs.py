"""/openapi.json, /docs and /redoc as real API routes, each switched by a docs.* key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from app.core.access_settings import DocsSettings

OPENAPI_URL = "/openapi.json"


def build_router(docs: DocsSettings) -> APIRouter:
    """The documentation routes the settings turn on (none by default).

    FastAPI's own docs routes are plain Starlette routes, so the metrics saw them as
    `<unmatched>`; these are API routes (left out of the schema) with a route template.
    """
    router = APIRouter(include_in_schema=False)
    if docs.openapi:

        @router.get(OPENAPI_URL)
        async def openapi(request: Request) -> JSONResponse:
            schema: dict[str, Any] = request.app.openapi()
            return JSONResponse(schema)

    if docs.swagger_ui:

        @router.get("/docs")
        async def swagger_ui(request: Request) -> HTMLResponse:
            return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=request.app.title)

    if docs.redoc:

        @router.get("/redoc")
        async def redoc(request: Request) -> HTMLResponse:
            return get_redoc_html(openapi_url=OPENAPI_URL, title=request.app.title)

    return router
