"""Settings of how the service runs: gunicorn (config/gunicorn.conf.py) and logging."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.core.settings_base import _Section

MAX_WORKERS = 32  # also the bound of WEB_CONCURRENCY, checked before gunicorn reads it


class ServerSettings(_Section):
    """How gunicorn serves the app (read by config/gunicorn.conf.py)."""

    workers: int = Field(
        default=1,
        ge=1,
        le=MAX_WORKERS,
        description="Gunicorn worker processes. WEB_CONCURRENCY (set by Render) also sets it; "
        "APP_SERVER__WORKERS wins when both are set. Never derived from os.cpu_count(): that "
        "ignores cgroup CPU quotas and over-spawns.",
    )
    worker_class: Literal["guarded", "asgi", "uvicorn"] = Field(
        default="guarded",
        description='Gunicorn worker class. "guarded": gunicorn\'s asgi worker plus '
        "app/server/worker.py: request-head deadline, connection cap, rate-limited refusal "
        'log; "asgi": gunicorn\'s worker as is (no head deadline, no cap); "uvicorn": '
        "uvicorn_worker.UvicornWorker (neither). Only guarded kept /health up under "
        "benchmarks/bench_slowloris.py (100 % vs 6 %).",
    )
    timeout_seconds: int = Field(
        default=30,
        ge=5,
        le=600,
        description="Seconds a worker may stay silent before the master kills and replaces it.",
    )
    graceful_timeout_seconds: int = Field(
        default=20,
        ge=1,
        le=300,
        description="Seconds a stopping worker gets to finish in-flight requests after SIGTERM. "
        "Keep it below Render's shutdown delay (render.yaml maxShutdownDelaySeconds).",
    )
    keepalive_seconds: int = Field(
        default=5,
        ge=0,
        le=300,
        description="Seconds an idle keep-alive connection stays open (0 disables keep-alive).",
    )
    max_requests: int = Field(
        default=0,
        ge=0,
        le=10_000_000,
        description="Requests after which a worker restarts (0 = never): a slow-leak safety net "
        "on top of recycling on RSS.",
    )
    max_requests_jitter: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description="Random 0..N added to max_requests per worker, so workers do not restart "
        "together. Must be below server.max_requests when that is set.",
    )
    max_worker_rss_mb: int | None = Field(
        default=None,
        ge=32,
        le=65_536,
        description="RSS (MiB) above which a worker finishes its in-flight requests and is "
        "replaced (null: never). Must be above every memory.*_limit_mb that is set.",
    )
    rss_check_interval_seconds: float = Field(
        default=1.0,
        gt=0.0,
        le=600.0,
        description="Seconds between two RSS checks of the watchdog thread (RSS is also checked "
        "before every response's headers, by memsafe's DrainMiddleware). A check reads "
        "/proc/self/statm (~3 us), so the cadence only bounds reaction time.",
    )
    recycle_overlap_max_workers: int = Field(
        default=1,
        ge=0,
        le=32,
        description="Up to this many workers, a recycled worker's replacement serves before it "
        "drains (0: never overlap). The worker to recycle asks the master for its replacement "
        "(SIGTTIN) and drains only once that one serves: no request waits for a boot, and two "
        "workers recycling at once never leave none serving.",
    )
    preload: bool = Field(
        default=True,
        description="Load the app in the master, gc.freeze() it, then fork: workers share its "
        "pages (saves ~20-30 MiB per worker, see benchmarks/bench_http.py).",
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        json_schema_extra={"allowed": 'addresses, comma-separated, or "*"'},
        description="Proxy addresses trusted for X-Forwarded-* headers.",
    )
    head_timeout_seconds: float = Field(
        default=10.0,
        gt=0.0,
        le=300.0,
        description="Seconds from accept until the whole request head (request line + headers) "
        "must have arrived: total time, not per byte. Past it: 408 and close. Applied by the "
        "guarded worker.",
    )
    max_connections: int = Field(
        default=768,
        ge=1,
        le=1_000_000,
        description="Open connections per worker (guarded worker). At start-up the worker raises "
        "its soft RLIMIT_NOFILE toward the hard limit to fit it plus 160 fds (kept for the "
        "worker and one accept burst); when the hard limit is too low, the cap is lowered to "
        "fit, with a warning. "
        "At the cap the connection idle or waiting for its head the longest is closed to admit "
        "the new one; only when all are mid-request is the new one refused. Each open "
        "connection costs ~8 KiB (measured).",
    )
    refusal_log_interval_seconds: float = Field(
        default=10.0,
        ge=1.0,
        le=3600.0,
        description="Seconds between two log lines counting refused and shed connections, head "
        "timeouts and accept() errors; nothing is logged per event (unguarded, an attack "
        "logged ~4,400 lines/s, measured).",
    )


class LoggingSettings(_Section):
    """Log level and access log of the app (stdout, one line per event)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description="Log level of the app. INFO logs start-up and events.",
    )
    access_log: bool = Field(
        default=False,
        description="One stdout line per request (method, path, status, ms, request id).",
    )
    repeat_interval_seconds: float = Field(
        default=10.0,
        gt=0.0,
        le=3600.0,
        description="Seconds between two log lines about one repeated failure (e.g. a store "
        "that cannot answer, so every request fails); the lines in between are counted into "
        "the next one.",
    )
