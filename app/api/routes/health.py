"""GET /health: Render's health check; fast, never runs gc."""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import APIRouter

from app.api.deps import AppState, StateDep
from app.version import VERSION
from memsafe.probes import container_memory, process_rss_bytes

router = APIRouter(tags=["health"])


async def coherence_checks(state: AppState) -> dict[str, dict[str, Any]]:
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


@router.get("/health")
async def health(state: StateDep) -> dict[str, Any]:
    """Status, version, uptime, pid, RSS, container memory, cleanup level and cache stats."""
    container = container_memory()
    cleanup = state.cleanup
    checks = await coherence_checks(state)
    status = "ok" if state.users is not None else "starting"
    if status == "ok" and any(check["status"] != "ok" for check in checks.values()):
        status = "degraded"
    return {
        "status": status,
        "checks": checks,
        "tiers": state.users.tier_stats() if state.users is not None else {},
        "version": VERSION,
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
