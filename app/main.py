"""The FastAPI app: create_app(settings), and a lifespan that sets up and tears down a worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from app.api.deps import AppState
from app.api.errors import add_error_handlers
from app.api.routes import admin, docs, health, metrics, payload, users
from app.core.actions import worker_actions
from app.core.commands import CommandBus
from app.core.config import MIB, Settings, get_settings, log_settings
from app.core.history import WorkerHistory
from app.core.logging import RequestIdMiddleware, configure_logging
from app.core.metrics import (
    LiveCollector,
    RequestMetrics,
    RequestMetricsMiddleware,
    SharedSnapshots,
    Snapshot,
    UnsafeDirectoryError,
    shared_snapshot_dir,
)
from app.core.startup import guard_startup
from app.services.users import UserDataService
from app.store import UserStore, ensure_seeded
from app.version import VERSION
from memsafe import (
    CacheManager,
    CleanupConfig,
    MemoryCleanupService,
    MemoryMonitor,
    MemoryMonitorMiddleware,
    is_exit_requested,
    is_gunicorn_worker,
    process_rss_bytes,
    recycle_worker,
)

logger = logging.getLogger(__name__)

USERS_CACHE = "users"


def cleanup_config(settings: Settings) -> CleanupConfig:
    """The MemoryCleanupService configuration for these settings."""
    mem = settings.memory
    return CleanupConfig(
        interval_seconds=mem.interval_seconds,
        soft_limit_mb=mem.soft_limit_mb,
        hard_limit_mb=mem.hard_limit_mb,
        recycle_limit_mb=mem.recycle_limit_mb,
        soft_fraction=mem.soft_fraction,
        hard_fraction=mem.hard_fraction,
        recycle_fraction=mem.recycle_fraction,
        hysteresis_mb=mem.hysteresis_mb,
        min_full_gc_gap_seconds=mem.min_full_gc_gap_seconds,
        periodic_gc_seconds=mem.periodic_gc_seconds,
        shrink_fraction=mem.shrink_fraction,
        shutdown_timeout_seconds=min(5.0, settings.server.graceful_timeout_seconds),
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Per worker: caches, store, cleanup service up; all of it down again on shutdown."""
    state: AppState = app.state.runtime
    settings = state.settings
    store_settings = settings.store
    # Seeding takes ~0.1 s once per fresh clone; under gunicorn on_starting has done it already.
    # Inline, not in the threadpool: nothing is served before start-up ends, and a threadpool
    # thread left behind by a failed start-up kept the worker process alive (issue 10).
    ensure_seeded(store_settings.path, store_settings.seed_users)
    budget_mb = settings.caches.total_budget_mb
    manager = CacheManager(max_total_bytes=budget_mb * MIB if budget_mb is not None else None)
    cache_settings = settings.caches.users
    cache = manager.create_cache(
        USERS_CACHE,
        max_size=cache_settings.max_size,
        ttl_seconds=cache_settings.ttl_seconds,
        max_bytes=cache_settings.max_bytes,
        policy=cache_settings.policy,
    )
    store = UserStore(store_settings.path)
    # recycle_worker: through gunicorn.conf.py's RSSRecycler (drain, then a fresh worker);
    # without gunicorn (TestClient, uvicorn --reload) it only logs.
    cleanup = MemoryCleanupService(
        cleanup_config(settings), manager=manager, recycle=recycle_worker
    )
    state.manager, state.store = manager, store
    state.users = UserDataService(store, cache, offload_reads=store_settings.offload_reads)
    cleanup.start()
    state.cleanup = cleanup
    publisher = _start_publisher(state)
    if settings.history.interval_seconds is not None:  # memory history for /admin/
        state.history = WorkerHistory(settings, state)
        state.history.start()
    state.commands = CommandBus(state.shared, worker_actions(state))  # admin on every worker
    state.commands.start()
    logger.info(
        "worker ready: %d users in %s, cache %r max_size=%d, rss %.1f MiB",
        store_settings.seed_users,
        store_settings.path,
        USERS_CACHE,
        cache_settings.max_size,
        process_rss_bytes() / MIB,
    )
    try:
        yield
    finally:
        state.users = None
        if state.history is not None:  # an exit request means this worker is recycled
            await state.history.stop(is_recycle=is_exit_requested())
            state.history = None
        if state.commands is not None:
            await state.commands.stop()
            state.commands = None
        if publisher is not None:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
        if state.shared is not None:
            state.shared.remove(os.getpid())
            state.shared = None
        await cleanup.stop()
        state.cleanup = None
        manager.reset()
        store.close()
        state.store = None
        logger.info("worker stopped: cleanup, caches and store closed")


def _start_publisher(state: AppState) -> asyncio.Task[None] | None:
    """Under gunicorn, publish this worker's metrics for its siblings every interval."""
    interval = state.settings.monitor.metrics_share_seconds
    if interval is None or not is_gunicorn_worker():
        return None
    shared = SharedSnapshots(shared_snapshot_dir(os.getppid()), max_age_seconds=3 * interval + 5)
    try:
        shared.ensure_directory()
    except OSError as exc:
        logger.warning("%s; serving per-worker metrics only", exc)
        return None
    state.shared = shared
    return asyncio.get_running_loop().create_task(_publish_forever(state, interval))


async def _publish_forever(state: AppState, interval: float) -> None:
    while True:
        shared = state.shared
        if shared is not None:
            try:
                shared.publish(_snapshot(state))
            except UnsafeDirectoryError as exc:
                logger.warning("%s; serving per-worker metrics only from now on", exc)
                state.shared = None
                return
            except OSError:
                logger.exception("publishing metrics for sibling workers failed")
        await asyncio.sleep(interval)


def _others(state: AppState, own_pid: int) -> list[Snapshot]:
    shared = state.shared
    return shared.others(own_pid) if shared is not None else []


def _snapshot(state: AppState) -> Snapshot:
    snap: Snapshot = state.request_metrics.snapshot()
    snap["pid"] = os.getpid()
    snap["rss_bytes"] = process_rss_bytes()
    if state.manager is not None:
        snap["caches"] = state.manager.get_cache_stats()["caches"]
    if state.cleanup is not None:
        stats = state.cleanup.stats()
        snap["cleanup"] = {
            "level": stats["level"],
            "passes": stats["passes"],
            "failures": stats["failures"],
            "full_gcs": stats["full_gcs"],
        }
    return snap


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service wired from `settings` (default: get_settings(), from $APP_CONFIG and env)."""
    if settings is None:
        settings = get_settings()
    configure_logging(settings.logging.level)
    log_settings(settings)
    app = FastAPI(
        title="Render memsafe FastAPI template",
        version=VERSION,
        lifespan=guard_startup(lifespan),
        # Served by app/api/routes/docs.py when the docs.* keys say so (off on Render).
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    add_error_handlers(app, settings)
    monitor_settings = settings.monitor
    monitor = MemoryMonitor(
        alert_delta_mb=monitor_settings.alert_delta_mb,
        alert_rss_mb=monitor_settings.alert_rss_mb,
        add_headers=monitor_settings.add_headers,
        max_routes=monitor_settings.max_routes,
        max_alerts=monitor_settings.max_alerts,
    )
    state = AppState(
        settings=settings,
        started_at=time.monotonic(),
        request_metrics=RequestMetrics(max_routes=monitor_settings.max_routes),
        monitor=monitor if monitor_settings.enabled else None,
    )
    app.state.runtime = state
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LiveCollector(lambda: _snapshot(state), lambda pid: _others(state, pid)))
    app.state.prometheus_registry = registry

    app.include_router(docs.build_router(settings.docs))
    app.include_router(health.router)
    app.include_router(users.router)
    app.include_router(payload.build_router(settings.payload.max_size_kib))
    app.include_router(metrics.router)
    if settings.admin.token is not None:
        app.include_router(admin.router)
    else:
        logger.info("admin routes not mounted: set ADMIN_TOKEN to enable /admin/*")

    # add_middleware wraps: the last added runs first (request id, then metrics, then memory).
    if monitor_settings.enabled:
        app.add_middleware(MemoryMonitorMiddleware, monitor=monitor)
    # Under gunicorn, config/gunicorn.conf.py's memsafe RSSRecycler wraps this whole app in
    # memsafe's DrainMiddleware (RSS check before the headers, Connection: close on recycle).
    app.add_middleware(RequestMetricsMiddleware, metrics=state.request_metrics)
    app.add_middleware(RequestIdMiddleware, access_log=settings.logging.access_log)
    return app


def lazy_app_getattr(module_name: str, factory: Callable[[], FastAPI]) -> Callable[[str], Any]:
    """A module `__getattr__` that builds `app` with `factory` on first access, then keeps it.

    `gunicorn module:app` then reads settings when it loads the app, not at import; a module
    exposes its app with `__getattr__ = lazy_app_getattr(__name__, factory)`.
    """
    built: list[FastAPI] = []

    def module_getattr(name: str) -> Any:
        if name != "app":
            msg = f"module {module_name!r} has no attribute {name!r}"
            raise AttributeError(msg)
        if not built:
            built.append(factory())
        return built[0]

    return module_getattr


__getattr__ = lazy_app_getattr(__name__, create_app)
