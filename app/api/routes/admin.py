"""/admin/*: cache stats and clear, a cleanup pass now, a detailed memory report (bearer token)."""

from __future__ import annotations

import dataclasses
import gc
import os
import threading
from typing import Annotated, Any, Literal

import psutil
from fastapi import APIRouter, Depends, HTTPException, Query, status
from starlette.concurrency import run_in_threadpool

from app.api.deps import AppState, ManagerDep, StateDep, require_admin
from memsafe.probes import container_memory, process_rss_bytes

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


def _as_dict(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


@router.get("/caches")
async def cache_stats(manager: ManagerDep) -> dict[str, Any]:
    """Stats of every cache and the totals against the shared byte budget."""
    return dict(manager.get_cache_stats())


@router.post("/caches/clear")
async def clear_caches(
    manager: ManagerDep,
    name: Annotated[str | None, Query(description="Clear only this cache")] = None,
) -> dict[str, Any]:
    """Drop every entry of every cache (or of the cache `name`)."""
    if name is None:
        return {"cleared": manager.clear_all()}
    cache = manager.get_cache(name)
    if cache is None:
        names = ", ".join(manager.names())
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no cache named {name!r}; allowed: {names}")
    return {"cleared": cache.clear(), "cache": name}


@router.post("/cleanup")
async def run_cleanup(
    state: StateDep,
    level: Annotated[
        Literal["soft", "hard"] | None,
        Query(description="Force this level; default: the level memory is at"),
    ] = None,
) -> dict[str, Any]:
    """Run one cleanup pass now (gc and malloc_trim run off the event loop)."""
    if state.cleanup is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "cleanup service is not running")
    event = await state.cleanup.run_once(force_level=level)
    return {"event": _as_dict(event), "level": state.cleanup.level}


def _memory_report(state: AppState) -> dict[str, Any]:
    process = psutil.Process()
    full = process.memory_full_info()
    return {
        "pid": os.getpid(),
        "rss_bytes": process_rss_bytes(),
        "uss_bytes": getattr(full, "uss", None),
        "pss_bytes": getattr(full, "pss", None),
        "swap_bytes": getattr(full, "swap", None),
        "threads": threading.active_count(),
        "container": dataclasses.asdict(container_memory()),
        "gc": {
            "counts": gc.get_count(),
            "thresholds": gc.get_threshold(),
            "frozen_objects": gc.get_freeze_count(),
            "generations": gc.get_stats(),
        },
        "caches": state.manager.get_cache_stats() if state.manager is not None else None,
        "cleanup": state.cleanup.stats() if state.cleanup is not None else None,
        "monitor": state.monitor.stats() if state.monitor is not None else None,
        "store_connections": state.store.connections if state.store is not None else 0,
        "invalidation": state.listener.stats() if state.listener is not None else None,
        "shared_cache": state.shared_tier.stats() if state.shared_tier is not None else None,
    }


@router.get("/memory")
async def memory_report(state: StateDep) -> dict[str, Any]:
    """RSS, USS/PSS, container limit, gc state, caches, cleanup events and per-route memory."""
    # memory_full_info reads /proc/self/smaps (a few ms): keep it off the event loop.
    return await run_in_threadpool(_memory_report, state)
