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

from app.api.deps import TOKEN_RESPONSES, AppState, ErrorBody, ManagerDep, StateDep, require_admin
from app.api.routes import admin_page
from app.core.commands import BusyError, CommandBus, UnknownWorkerError
from memsafe.probes import container_memory, process_rss_bytes

# Everything here needs the bearer header; admin_page adds the browser page and its login.
_bearer = APIRouter(dependencies=[Depends(require_admin)], responses=TOKEN_RESPONSES)


def _as_dict(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


@_bearer.get("/caches")
async def cache_stats(manager: ManagerDep) -> dict[str, Any]:
    """Stats of every cache and the totals against the shared byte budget."""
    return dict(manager.get_cache_stats())


@_bearer.post(
    "/caches/clear",
    responses={404: {"model": ErrorBody, "description": "No cache with this name"}},
)
async def clear_caches(
    state: StateDep,
    manager: ManagerDep,
    name: Annotated[str | None, Query(description="Clear only this cache")] = None,
) -> dict[str, Any]:
    """Drop every entry of every cache (or of the cache `name`) on every worker."""
    if name is not None and manager.get_cache(name) is None:
        names = ", ".join(manager.names())
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no cache named {name!r}; allowed: {names}")
    workers = await _commands(state).run("clear", {"name": name})
    body: dict[str, Any] = {"cleared": sum(w.get("cleared", 0) for w in workers)}
    if name is not None:
        body["cache"] = name
    body["workers"] = workers
    return body


@_bearer.post(
    "/cleanup",
    responses={503: {"model": ErrorBody, "description": "The cleanup service is not running"}},
)
async def run_cleanup(
    state: StateDep,
    level: Annotated[
        Literal["soft", "hard"] | None,
        Query(description="Force this level; default: the level memory is at"),
    ] = None,
) -> dict[str, Any]:
    """Run one cleanup pass now on every worker (gc and malloc_trim run off the event loop).

    `event` and `level` are those of the worker that answered; `workers` has every worker's.
    """
    if state.cleanup is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "cleanup service is not running")
    workers = await _commands(state).run("cleanup", {"level": level})
    own = workers[0]
    return {"event": own.get("event"), "level": own.get("level"), "workers": workers}


@_bearer.post("/memory/trace")
async def trace_memory(
    state: StateDep,
    seconds: Annotated[float, Query(gt=0, description="Trace window in seconds")],
    pid: Annotated[int | None, Query(description="Only this worker (default: every one)")] = None,
) -> dict[str, Any]:
    """Trace allocations for `seconds` on every worker (or `pid`): top lines and routes by growth.

    tracemalloc is on only inside the window, which ends at the same instant on every worker.
    A worker recycled during it answers with its window so far (`is_cut_short`); one forked
    during it traces the rest and answers too. A second trace while one runs is refused (409).
    """
    limit = state.settings.trace.max_seconds
    if seconds > limit:
        msg = f"seconds={seconds:g} is above trace.max_seconds={limit:g}; allowed: (0, {limit:g}]"
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, msg)
    try:
        workers = await _commands(state).run("trace", {}, pid=pid, seconds=seconds, exclusive=True)
    except BusyError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except UnknownWorkerError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return {"seconds": seconds, "workers": workers}


def _commands(state: AppState) -> CommandBus:
    if state.commands is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "admin actions are not ready")
    return state.commands


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


@_bearer.get("/settings")
async def effective_settings(state: StateDep) -> dict[str, Any]:
    """The effective settings (profile + env), secrets masked: what start-up logged."""
    return state.settings.masked()


@_bearer.get("/memory")
async def memory_report(state: StateDep) -> dict[str, Any]:
    """RSS, USS/PSS, container limit, gc state, caches, cleanup events and per-route memory."""
    # memory_full_info reads /proc/self/smaps (a few ms): keep it off the event loop.
    return await run_in_threadpool(_memory_report, state)


router = APIRouter(prefix="/admin", tags=["admin"])
router.include_router(_bearer)
router.include_router(admin_page.router)
