"""Settings of what watches memory: the monitor middleware, the history and the tracer."""

from __future__ import annotations

from pydantic import Field

from app.core.settings_base import _Section


class MonitorSettings(_Section):
    """The per-request memory monitor middleware."""

    enabled: bool = True
    add_headers: bool = False
    alert_delta_mb: float = Field(default=16.0, gt=0, le=65_536)
    alert_rss_mb: float | None = Field(default=None, gt=0, le=65_536)
    max_routes: int = Field(default=200, ge=1, le=100_000)
    max_alerts: int = Field(default=100, ge=1, le=100_000)
    metrics_share_seconds: float | None = Field(default=5.0, gt=0, le=300)


class HistorySettings(_Section):
    """The per-worker memory history behind /admin/ and /admin/memory/history."""

    interval_seconds: float | None = Field(
        default=10.0,
        ge=1.0,
        le=3600.0,
        description="Seconds between two samples; null: no history.",
    )
    max_samples: int = Field(default=360, ge=2, le=100_000, description="Samples kept per worker.")
    max_events: int = Field(default=100, ge=1, le=10_000, description="Events kept per worker.")
    max_workers: int = Field(
        default=16, ge=1, le=256, description="Workers shown, live and exited."
    )


class TraceSettings(_Section):
    """POST /admin/memory/trace: a tracemalloc window on every worker."""

    max_seconds: float = Field(
        default=60.0, gt=0.0, le=600.0, description="Longest trace window, s."
    )
    top_n: int = Field(
        default=15, ge=1, le=1000, description="Allocation sites reported per worker."
    )
