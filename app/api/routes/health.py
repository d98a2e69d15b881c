"""GET /health: Render's health check; fast, never runs gc, internals only when allowed."""

from __future__ import annotations

import os
import time
from typing import Any, Literal

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

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
        # SQLite: a fresh connection and one indexed read (~0.2 ms); PostgreSQL: SELECT 1 on
        # a pooled connection, bounded by store.pool_timeout_seconds.
        await store.check()
    except StoreUnavailableError as exc:
        check: dict[str, Any] = {"status": "failing", "error": STORE_UNAVAILABLE}
        if details:
            check["detail"] = str(exc)
        return check
    return {"status": "ok"}


async def _coherence_checks(state: AppState) -> dict[str, dict[str, Any]]:
    """The invalidation channel and the Key Value tier: "ok", or "degraded" while down."""
    checks: dict[str, dict[str, Any]] = {}
    if state.listener is not None and state.store is not None:
        # Public: state only. Error texts (hosts, ports) stay in the log and /admin.
        stats = state.listener.stats()
        checks["invalidation"] = {
            "status": "ok" if stats["is_connected"] else "degraded",
            "channel": state.store.kind,
            "down_seconds": stats["down_seconds"],
        }
    if state.shared_tier is not None:
        is_up = await state.shared_tier.ping()
        checks["shared_cache"] = {"status": "ok" if is_up else "degraded", "engine": "key value"}
    return checks


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
        "tiers": state.users.tier_stats() if state.users is not None else {},
    }


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "A check is failing"}},
)
async def health(state: StateDep, request: Request) -> JSONResponse:
    """Status, version and checks (503 when one fails); internals with details or admin token.

    A down invalidation channel or Key Value tier makes the status "degraded" (still 200:
    reads go on with short TTLs); a failing store makes it "failing" (503).
    Internals (uptime, pid, RSS, container memory, cleanup level, caches, both tiers' hit
    rates) are shown when
    `health.details` is true or the request carries `Authorization: Bearer <ADMIN_TOKEN>`.
    """
    details = state.settings.health.details or has_admin_token(request)
    checks = {"store": await _store_check(state, details=details)}
    checks.update(await _coherence_checks(state))
    statuses = {check["status"] for check in checks.values()}
    overall: CheckStatus = (
        "failing" if "failing" in statuses else "degraded" if "degraded" in statuses else "ok"
    )
    body: dict[str, Any] = {"status": overall, "version": VERSION, "checks": checks}
    if details:
        body.update(_details(state))
    code = status.HTTP_503_SERVICE_UNAVAILABLE if overall == "failing" else status.HTTP_200_OK
    return JSONResponse(body, status_code=code)
