"""GET /health: Render's health check; fast, never runs gc."""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import APIRouter

from app.api.deps import StateDep
from app.version import VERSION
from memsafe.probes import container_memory, process_rss_bytes

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(state: StateDep) -> dict[str, Any]:
    """Status, version, uptime, pid, RSS, container memory, cleanup level and cache stats."""
    container = container_memory()
    cleanup = state.cleanup
    return {
        "status": "ok" if state.users is not None else "starting",
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
