"""What each worker does when an admin action reaches it: clear caches, a cleanup pass, a trace."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.commands import Handler, Window
from memsafe import AllocationTracer

if TYPE_CHECKING:
    from app.api.deps import AppState

ROOT = Path(__file__).resolve().parents[2]
MAX_TRACE_ROUTES = 10
_PREFIXES = sorted({str(ROOT) + os.sep, *(p + os.sep for p in sys.path if p)}, key=len)


def short_path(filename: str) -> str:
    """A source path as people read it: relative to the project or to its import root."""
    for prefix in reversed(_PREFIXES):  # longest first
        if filename.startswith(prefix):
            return filename[len(prefix) :]
    return filename


def _route_totals(state: AppState) -> dict[str, tuple[int, int]]:
    monitor = state.monitor
    if monitor is None:
        return {}
    stats = monitor.stats(top_n=monitor.stats(top_n=0)["max_routes"] + 1)
    return {r["route"]: (r["requests"], r["growth_bytes"]) for r in stats["top_routes"]}


def route_growth(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> list[dict[str, Any]]:
    """Routes that served requests between two monitor readings, most RSS growth first."""
    rows = []
    for route, (requests, growth) in after.items():
        old_requests, old_growth = before.get(route, (0, 0))
        if requests > old_requests:
            rows.append(
                {
                    "route": route,
                    "requests": requests - old_requests,
                    "rss_growth_bytes": growth - old_growth,
                }
            )
    rows.sort(key=lambda r: (r["rss_growth_bytes"], r["requests"]), reverse=True)
    return rows[:MAX_TRACE_ROUTES]


def worker_actions(state: AppState) -> dict[str, Handler]:
    """The admin actions of this worker, by name, for app.core.commands.CommandBus."""
    tracer = AllocationTracer(top_n=state.settings.trace.top_n)

    async def clear(params: dict[str, Any], window: Window) -> dict[str, Any]:
        manager = state.manager
        if manager is None:
            return {"cleared": 0, "error": "caches are not built"}
        name = params.get("name")
        if name is None:
            return {"cleared": manager.clear_all()}
        cache = manager.get_cache(str(name))
        return {"cleared": cache.clear() if cache is not None else 0}

    async def cleanup(params: dict[str, Any], window: Window) -> dict[str, Any]:
        service = state.cleanup
        if service is None:
            return {"error": "cleanup service is not running"}
        event = await service.run_once(force_level=params.get("level"))
        return {"event": dataclasses.asdict(event), "level": service.level}

    async def trace(params: dict[str, Any], window: Window) -> dict[str, Any]:
        # The window, not a fixed length: it ends with every other worker's, or when this
        # worker stops (recycled mid-window, it still reports what it traced so far).
        before = _route_totals(state)
        tracer.start()
        try:
            await window.wait()
        finally:
            report = tracer.stop()
        after = _route_totals(state)
        top = [
            {
                **site,
                "file": short_path(site["file"]),
                "site": f"{short_path(site['file'])}:{site['line']}",
            }
            for site in report["top"]
        ]
        routes = route_growth(before, after)
        return {**report, "top": top, "routes": routes, "is_cut_short": window.is_cut_short}

    return {"clear": clear, "cleanup": cleanup, "trace": trace}
