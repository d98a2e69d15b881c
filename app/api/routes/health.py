"""GET /health: Render's health check; fast, never runs gc, internals only when allowed."""

from __future__ import annotations

import os
import time
from typing import Any, Literal

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from app.api.deps import AppState, StateDep, has_admin_token
from app.api.errors import STORE_UNAVAILABLE
from app.store import StoreUnavailableError
from app.version import VERSION
from memsafe.probes import container_memory, process_rss_bytes

router = APIRouter(tags=["health"])

CheckStatus = Literal["ok", "degraded", "failing"]


class Check(BaseModel):
    """One dependency's state; `error` names what failed, `detail` says why (details only)."""

    model_config = ConfigDict(extra="allow")

    status: CheckStatus
    error: str | None = None


class Health(BaseModel):
    """Status, version and per-dependency checks; worker internals only when allowed."""

    model_config = ConfigDict(extra="allow")

    status: CheckStatus
    version: str
    checks: dict[str, Check]


async def _store_check(state: AppState, *, details: bool) -> dict[str, Any]:
    store = state.store
    if store is None or state.users is None:
        return {"status": "failing", "error": "store_not_open"}
    try:
        if state.settings.store.offload_reads:
            await run_in_threadpool(store.check)
        else:
            store.check()  # a fresh SQLite connection and one indexed read: ~0.2 ms
    except StoreUnavailableError as exc:
        check: dict[str, Any] = {"status": "failing", "error": STORE_UNAVAILABLE}
        if details:
            check["detail"] = str(exc)
        return check
    return {"status": "ok"}


def _details(state: AppState) -> dict[str, Any]:
    container = container_memory()
    cleanup = state.cleanup
    return {
        "uptime_seconds": round(time.monotonic() - state.started_at, 3),
        "pid": os.getpid(),
        "rss_bytes": process_rss_bytes(),
        "container": {
            "limit_bytes": container.limit_bytes,
            "usage_bytes": container.usage_bytes,
            "cgroup_version": container.cgroup_version,
        },
        "cleanup_level": cleanup.level if cleanup is not None else "off",
        "caches": state.manager.get_cache_stats() if state.manager is not None else {},
    }


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "A check is failing"}},
)
async def health(state: StateDep, request: Request) -> JSONResponse:
    """Status, version and checks (503 when one fails); internals with details or admin token.

    Internals (uptime, pid, RSS, container memory, cleanup level, caches) are shown when
    `health.details` is true or the request carries `Authorization: Bearer <ADMIN_TOKEN>`.
    """
    details = state.settings.health.details or has_admin_token(request)
    checks = {"store": await _store_check(state, details=details)}
    statuses = {check["status"] for check in checks.values()}
    overall: CheckStatus = (
        "failing" if "failing" in statuses else "degraded" if "degraded" in statuses else "ok"
    )
    body: dict[str, Any] = {"status": overall, "version": VERSION, "checks": checks}
    if details:
        body.update(_details(state))
    code = status.HTTP_503_SERVICE_UNAVAILABLE if overall == "failing" else status.HTTP_200_OK
    return JSONResponse(body, status_code=code)
