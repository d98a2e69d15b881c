"""Settings of what watches memory: the monitor middleware, the history and the tracer."""

from __future__ import annotations

from pydantic import Field

from app.core.settings_base import _Section


class MonitorSettings(_Section):
    """The per-request memory monitor middleware."""

    enabled: bool = Field(
        default=True,
        description="Per-request memory monitor middleware (RSS before and after, per-route "
        "stats at /admin/memory and /metrics).",
    )
    add_headers: bool = Field(
        default=False,
        description="Add X-Memory-RSS-MB and X-Memory-Delta-MB to every response. They show "
        "internals to clients; /admin/memory and /metrics carry the same data.",
    )
    alert_delta_mb: float = Field(
        default=16.0,
        gt=0,
        le=65_536,
        description="Log an alert when one request grows RSS by more than this many MiB.",
    )
    alert_rss_mb: float | None = Field(
        default=None,
        gt=0,
        le=65_536,
        description="Log an alert when RSS after a request is above this many MiB (null: never).",
    )
    max_routes: int = Field(
        default=200,
        ge=1,
        le=100_000,
        description="Routes tracked, as (method, route template) pairs, for /admin/memory "
        'and the /metrics labels; requests to any further route count as "<overflow>" (memsafe.'
        "OVERFLOW_ROUTE), so label cardinality stays bounded.",
    )
    max_alerts: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="Alerts kept in memory for /admin/memory (oldest dropped).",
    )
    metrics_share_seconds: float | None = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Seconds between two publications of this worker's metrics for its sibling "
        "workers, so one /metrics scrape (which reaches a random worker) reports every worker, "
        "labelled by pid (null: each worker reports only itself). One small file per live "
        "worker in a private directory in /dev/shm (the temp directory without it), deleted "
        "when the worker stops.",
    )


class HistorySettings(_Section):
    """The per-worker memory history behind /admin/ and /admin/memory/history."""

    interval_seconds: float | None = Field(
        default=10.0,
        ge=1.0,
        le=3600.0,
        description="Seconds between two memory samples of each worker, shown at /admin/ and "
        "/admin/memory/history (null: no history). A sample holds RSS, cgroup usage, cache "
        "entries, bytes and hit rate, and the cleanup level; taking one costs ~0.2 ms.",
    )
    max_samples: int = Field(
        default=360,
        ge=2,
        le=100_000,
        description="Samples each worker keeps, oldest dropped first (~60 bytes of JSON each, "
        "in /dev/shm).",
    )
    max_events: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Events (worker start, cleanup passes that acted, recycle) each worker keeps.",
    )
    max_workers: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Workers the history shows, live and recently exited (newest first).",
    )


class TraceSettings(_Section):
    """POST /admin/memory/trace: a tracemalloc window on every worker."""

    max_seconds: float = Field(
        default=60.0,
        gt=0.0,
        le=600.0,
        description="Longest window, in seconds, POST /admin/memory/trace?seconds=N may ask for. "
        "tracemalloc runs only inside the window: it slows allocation while on.",
    )
    top_n: int = Field(
        default=15,
        ge=1,
        le=1000,
        description="Allocation sites (file:line) each worker reports, largest growth first.",
    )
