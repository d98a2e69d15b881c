"""The FastAPI app: create_app(settings), and a lifespan that sets up and tears down a worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from app.api.deps import AppState
from app.api.errors import add_error_handlers
from app.api.routes import admin, docs, health, metrics, payload, users
from app.core.actions import worker_actions
from app.core.commands import CommandBus
from app.core.config import Settings, get_settings, log_settings
from app.core.history import WorkerHistory
from app.core.logging import RequestIdMiddleware, configure_logging
from app.core.memory_settings import MIB
from app.core.prometheus import LiveCollector, Snapshot
from app.core.request_metrics import RequestMetrics, RequestMetricsMiddleware
from app.core.shared_snapshots import SharedSnapshots, UnsafeDirectoryError, shared_snapshot_dir
from app.core.startup import guard_startup
from app.services.users import UserDataService
from app.store import StoreBackend, StoreUnavailableError, ensure_seeded
from app.version import VERSION
from memsafe import (
    CacheManager,
    CleanupConfig,
    InvalidationListener,
    MemoryCleanupService,
    MemoryMonitor,
    MemoryMonitorMiddleware,
    is_exit_requested,
    is_gunicorn_worker,
    process_rss_bytes,
    recycle_worker,
)

if TYPE_CHECKING:
    from app.cache_redis import RedisTier

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
    store = await open_store(settings)
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
    # recycle_worker: through gunicorn.conf.py's RSSRecycler (drain, then a fresh worker);
    # without gunicorn (TestClient, uvicorn --reload) it only logs.
    cleanup = MemoryCleanupService(
        cleanup_config(settings), manager=manager, recycle=recycle_worker
    )
    state.manager, state.store = manager, store
    coherence = settings.coherence
    state.shared_tier = shared_tier(settings)
    users_service = UserDataService(
        store,
        cache,
        shared=state.shared_tier,
        degraded_ttl_seconds=coherence.degraded_ttl_seconds,
        fence_max_keys=coherence.fence_max_keys,
        fence_ttl_seconds=coherence.fence_ttl_seconds,
    )
    tiers = users_service.tiers
    listener = InvalidationListener(
        store.subscribe,
        tiers.apply,
        on_up=lambda: tiers.set_degraded(False),
        on_down=lambda: tiers.set_degraded(True),
        reconnect_min_seconds=coherence.reconnect_min_seconds,
        reconnect_max_seconds=coherence.reconnect_max_seconds,
        name=f"{store.kind} invalidation",
    )
    listener.start()
    state.listener = listener
    state.users = users_service
    cleanup.start()
    state.cleanup = cleanup
    publisher = _start_publisher(state)
    if settings.history.interval_seconds is not None:  # memory history for /admin/
        state.history = WorkerHistory(settings, state)
        state.history.start()
    state.commands = CommandBus(state.shared, worker_actions(state))  # admin on every worker
    state.commands.start()
    logger.info(
        "worker ready: %s store, cache %r max_size=%d, key value %s, rss %.1f MiB",
        store.kind,
        USERS_CACHE,
        cache_settings.max_size,
        "on" if state.shared_tier is not None else "off",
        process_rss_bytes() / MIB,
    )
    try:
        yield
    finally:
        state.users = None
        if state.history is not None:  # an exit request means this worker is recycled
            await state.history.stop(is_recycle=is_exit_requested())
            state.history = None
        if publisher is not None:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
        if state.shared is not None:
            state.shared.remove(os.getpid())  # first: a command sent from now on omits this pid
            state.shared = None
        if state.commands is not None:  # answers what was sent before, windows cut short
            await state.commands.stop()
            state.commands = None
        await listener.stop()
        state.listener = None
        await cleanup.stop()
        state.cleanup = None
        manager.reset()
        if state.shared_tier is not None:
            await state.shared_tier.close()
            state.shared_tier = None
        await store.close()
        state.store = None
        logger.info("worker stopped: cleanup, caches and store closed")


async def open_store(settings: Settings) -> StoreBackend:
    """PostgreSQL when store.database_url (DATABASE_URL) is set, else the SQLite file.

    Migrating and seeding take ~0.1 s once; under gunicorn on_starting has done it already
    and this is a no-op check. Both run inline, not in the threadpool: nothing is served before
    start-up ends, and a threadpool thread left behind by a failed start-up kept the worker
    process alive (issue 10).
    """
    conf = settings.store
    backend: StoreBackend
    if conf.database_url is not None:
        from app.store_pg import PostgresStore, migrate_and_seed

        url = conf.database_url.get_secret_value()
        try:
            migrate_and_seed(
                url,
                schema=conf.database_schema,
                seed_users=conf.seed_users,
                connect_timeout_seconds=conf.connect_timeout_seconds,
            )
        except StoreUnavailableError as exc:
            if not is_gunicorn_worker():
                raise
            # The master migrated before forking (on_starting), so a worker that boots while
            # the database is briefly down (a recycle during a restart) serves 503s until it
            # is back rather than failing start-up, which would halt the whole server.
            logger.warning("worker starts with the database unavailable: %s", exc)
        backend = PostgresStore(
            url,
            schema=conf.database_schema,
            pool_min_size=conf.pool_min_size,
            pool_max_size=conf.pool_max_size,
            pool_timeout_seconds=conf.pool_timeout_seconds,
            connect_timeout_seconds=conf.connect_timeout_seconds,
            statement_timeout_ms=conf.statement_timeout_ms,
        )
    else:
        from app.store_sqlite import SQLiteStore

        ensure_seeded(conf.path, conf.seed_users)
        backend = SQLiteStore(
            conf.path,
            offload_reads=conf.offload_reads,
            poll_interval_seconds=conf.poll_interval_seconds,
            change_log_rows=conf.change_log_rows,
        )
    await backend.open()
    return backend


def shared_tier(settings: Settings) -> RedisTier | None:
    """The Key Value second tier when coherence.redis_url (REDIS_URL) is set."""
    conf = settings.coherence
    if conf.redis_url is None:
        return None
    # Imported only when used: redis-py adds ~6 MiB to every worker that never needs it.
    from app.cache_redis import RedisTier

    return RedisTier(
        conf.redis_url.get_secret_value(),
        prefix=conf.key_prefix,
        ttl_seconds=conf.shared_ttl_seconds,
        timeout_seconds=conf.redis_timeout_seconds,
        max_connections=conf.redis_max_connections,
        max_pending=conf.redis_max_pending_writes,
        retry_min_seconds=conf.reconnect_min_seconds,
        retry_max_seconds=conf.reconnect_max_seconds,
    )


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
    if state.users is not None:
        snap["tiers"] = dict(state.users.tier_stats())
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
