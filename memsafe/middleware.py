"""Per-request memory monitoring: a pure ASGI middleware, its bounded stats and the seed's form."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, Protocol, TypedDict

from memsafe._checks import (
    _check_callable,
    _check_number,
    _check_optional_number,
    _check_positive_int,
)
from memsafe._clock import Clock
from memsafe._routes import (
    DEFAULT_MAX_ROUTES,
    OVERFLOW_ROUTE,
    UNMATCHED_ROUTE,
    RouteBuckets,
    RouteTally,
    method_key,
    route_key,
)
from memsafe._routes import RouteMemoryStats as RouteMemoryStats
from memsafe.probes import process_rss_bytes

logger = logging.getLogger(__name__)

MIB: Final = 2**20
DEFAULT_ALERT_DELTA_MB: Final = 50.0
DEFAULT_MAX_ALERTS: Final = 100
DEFAULT_ALERT_LOG_INTERVAL_SECONDS: Final = 10.0
DEFAULT_TOP_ROUTES: Final = 10
RSS_HEADER: Final = b"x-memory-rss-mb"
DELTA_HEADER: Final = b"x-memory-delta-mb"
_MAX_ALERT_PATH_CHARS: Final = 200
_FOLD_EVERY: Final = 256

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class MemoryAlert(TypedDict):
    """One high-memory request: when, which route, and the figures that passed a threshold."""

    timestamp: float
    method: str
    route: str
    path: str
    status: int
    rss_bytes: int
    delta_bytes: int
    reasons: list[str]


class MonitorStats(TypedDict):
    """Snapshot of a MemoryMonitor: totals, top routes by growth, recent alerts (newest first)."""

    requests: int
    errors: int
    alerts: int
    growth_bytes: int
    last_rss_bytes: int
    max_rss_bytes: int
    routes: int
    max_routes: int
    overflow_requests: int
    top_routes: list[RouteMemoryStats]
    recent_alerts: list[MemoryAlert]
    alert_delta_mb: float | None
    alert_rss_mb: float | None


# (route object, root_path, method, delta bytes, rss bytes, is_error) of one finished request.
_Sample = tuple[object, object, object, int, int, bool]


class MemoryMonitor:
    """Holds per-request memory figures in bounded collections and raises high-memory alerts.

    Every MB here is a MiB (2**20 bytes). A request's delta is the process-wide RSS change from
    request start to response start, so concurrent requests share each other's growth. Routes
    are keyed by method and route template and bucketed by RouteBuckets: once ``max_routes`` keys
    exist, new ones are counted in one ``<overflow>`` bucket, so neither a path scanner nor odd
    methods can grow the table.

    ``on_response_rss(rss_bytes)``, when set, runs after every request with the RSS read at
    response start: the hook a worker recycler uses to check its cap after each request.

    Recording is cheap on purpose: thresholds are checked at once, but the request itself is
    appended to a short queue that is folded into the route table every 256 requests and
    whenever stats() is read.

    Thread safety: record() appends to a deque (atomic) and folds it under one lock, which
    stats() also holds; alert logging and the ``on_response_rss`` callback run outside it.
    """

    def __init__(
        self,
        *,
        alert_delta_mb: float | None = DEFAULT_ALERT_DELTA_MB,
        alert_rss_mb: float | None = None,
        add_headers: bool = False,
        max_routes: int = DEFAULT_MAX_ROUTES,
        max_alerts: int = DEFAULT_MAX_ALERTS,
        on_response_rss: Callable[[int], None] | None = None,
        rss_probe: Callable[[], int] = process_rss_bytes,
        alert_log_interval_seconds: float = DEFAULT_ALERT_LOG_INTERVAL_SECONDS,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.alert_delta_mb = alert_delta_mb
        self.alert_rss_mb = alert_rss_mb
        self.add_headers = add_headers
        self._buckets = RouteBuckets(max_routes)
        self._max_alerts = _check_positive_int("max_alerts", max_alerts)
        _check_number(
            "alert_log_interval_seconds",
            alert_log_interval_seconds,
            low=0.0,
            high=math.inf,
            low_open=False,
        )
        self.on_response_rss = _check_callable("on_response_rss", on_response_rss, optional=True)
        self.rss_probe = _check_callable("rss_probe", rss_probe)
        _check_callable("clock", clock)
        _check_callable("wall_clock", wall_clock)
        self._log_interval = alert_log_interval_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._pending: deque[_Sample] = deque()
        self._reset_state()

    def _reset_state(self) -> None:
        self._pending.clear()
        self._buckets.clear()
        self._routes: dict[str, RouteTally] = {}
        self._overflow = RouteTally()
        self._alerts: deque[MemoryAlert] = deque(maxlen=self._max_alerts)
        self._requests = 0
        self._errors = 0
        self._alert_count = 0
        self._growth = 0
        self._last_rss = 0
        self._max_rss = 0
        self._last_log: float | None = None
        self._suppressed_logs = 0
        self._has_logged_bad_route = False

    @property
    def alert_delta_mb(self) -> float | None:
        """RSS growth (MiB) during one request at or above which it is an alert; None is off."""
        return self._alert_delta_mb

    @alert_delta_mb.setter
    def alert_delta_mb(self, value: float | None) -> None:
        self._alert_delta_mb = _check_threshold("alert_delta_mb", value)
        self._alert_delta_bytes = math.inf if value is None else value * MIB

    @property
    def alert_rss_mb(self) -> float | None:
        """RSS (MiB) at response start at or above which a request is an alert; None is off."""
        return self._alert_rss_mb

    @alert_rss_mb.setter
    def alert_rss_mb(self, value: float | None) -> None:
        self._alert_rss_mb = _check_threshold("alert_rss_mb", value)
        self._alert_rss_bytes = math.inf if value is None else value * MIB

    @property
    def max_routes(self) -> int:
        """How many route keys the table holds before new ones go to ``<overflow>``."""
        return self._buckets.max_routes

    @property
    def max_alerts(self) -> int:
        """How many recent alerts are kept (older ones are dropped)."""
        return self._max_alerts

    def reset(self) -> None:
        """Forget every figure and alert (thresholds and callbacks stay)."""
        with self._lock:
            self._reset_state()

    def record(
        self,
        scope: Scope,
        rss_start_bytes: int,
        rss_end_bytes: int,
        *,
        status: int = 0,
        failed: bool = False,
    ) -> None:
        """Account one finished HTTP request; call after the app has handled ``scope``.

        ``status`` is the response status (0 when none was sent); a request counts as an error
        when ``failed`` (the app raised) or ``status >= 500``. Never raises: a failure here is
        logged so it cannot mask the app's own exception.
        """
        try:
            delta = rss_end_bytes - rss_start_bytes
            if delta >= self._alert_delta_bytes or rss_end_bytes >= self._alert_rss_bytes:
                self._alert(scope, delta, rss_end_bytes, status)
            pending = self._pending
            pending.append(
                (
                    scope.get("route"),
                    scope.get("root_path"),
                    scope.get("method"),
                    delta,
                    rss_end_bytes,
                    failed or status >= 500,
                )
            )
            if len(pending) >= _FOLD_EVERY:
                with self._lock:
                    self._fold()
        except Exception:
            logger.exception("memory monitor failed to record a request")
        callback = self.on_response_rss
        if callback is not None:
            try:
                callback(rss_end_bytes)
            except Exception:
                logger.exception("on_response_rss callback failed")

    def _key(self, route: object, root_path: object, method: object) -> str:
        try:
            return route_key(route, root_path, method)
        except Exception:
            if not self._has_logged_bad_route:
                self._has_logged_bad_route = True
                logger.exception("cannot read a template from route %r; counted unmatched", route)
            return UNMATCHED_ROUTE

    def _fold(self) -> None:
        """Move queued requests into the route table (the lock is held)."""
        pending = self._pending
        routes = self._routes
        while pending:
            route, root_path, method, delta, rss, is_error = pending.popleft()
            key = self._key(route, root_path, method)
            entry = routes.get(key)
            if entry is None:
                if self._buckets.admit(key):
                    entry = routes[key] = RouteTally()
                else:
                    entry = self._overflow
            entry.requests += 1
            entry.total_delta += delta
            if delta > 0:
                entry.growth += delta
                self._growth += delta
            if delta > entry.max_delta:
                entry.max_delta = delta
            if rss > entry.max_rss:
                entry.max_rss = rss
            self._requests += 1
            self._last_rss = rss
            if rss > self._max_rss:
                self._max_rss = rss
            if is_error:
                entry.errors += 1
                self._errors += 1

    def _alert(self, scope: Scope, delta: int, rss: int, status: int) -> None:
        reasons: list[str] = []
        if delta >= self._alert_delta_bytes:
            reasons.append("delta")
        if rss >= self._alert_rss_bytes:
            reasons.append("rss")
        method = method_key(scope.get("method"))
        key = self._key(scope.get("route"), scope.get("root_path"), method)
        path = str(scope.get("path", ""))[:_MAX_ALERT_PATH_CHARS]
        log_now = False
        suppressed = 0
        with self._lock:
            self._alert_count += 1
            now = self._clock()
            if self._last_log is None or now - self._last_log >= self._log_interval:
                log_now = True
                suppressed = self._suppressed_logs
                self._last_log = now
                self._suppressed_logs = 0
            else:
                self._suppressed_logs += 1
            self._alerts.append(
                MemoryAlert(
                    timestamp=self._wall_clock(),
                    method=method,
                    route=key,
                    path=path,
                    status=status,
                    rss_bytes=rss,
                    delta_bytes=delta,
                    reasons=reasons,
                )
            )
        if log_now:
            logger.warning(
                "high-memory request %s (%s): rss %.1f MiB, delta %+.1f MiB, over %s threshold;"
                " %d similar alerts not logged since the last one",
                key,
                path,
                rss / MIB,
                delta / MIB,
                "+".join(reasons),
                suppressed,
            )

    def stats(self, top_n: int = DEFAULT_TOP_ROUTES) -> MonitorStats:
        """Totals, the ``top_n`` routes by memory growth, and recent alerts (newest first)."""
        with self._lock:
            self._fold()
            routes = [entry.as_stats(key) for key, entry in self._routes.items()]
            if self._overflow.requests:
                routes.append(self._overflow.as_stats(OVERFLOW_ROUTE))
            result = MonitorStats(
                requests=self._requests,
                errors=self._errors,
                alerts=self._alert_count,
                growth_bytes=self._growth,
                last_rss_bytes=self._last_rss,
                max_rss_bytes=self._max_rss,
                routes=len(self._routes),
                max_routes=self._buckets.max_routes,
                overflow_requests=self._overflow.requests,
                top_routes=routes,
                recent_alerts=[_copy_alert(alert) for alert in reversed(self._alerts)],
                alert_delta_mb=self._alert_delta_mb,
                alert_rss_mb=self._alert_rss_mb,
            )
        routes.sort(key=lambda r: (r["growth_bytes"], r["requests"]), reverse=True)
        result["top_routes"] = routes[: max(0, top_n)]
        return result


def _copy_alert(alert: MemoryAlert) -> MemoryAlert:
    copy = alert.copy()
    copy["reasons"] = list(alert["reasons"])
    return copy


def _check_threshold(name: str, value: float | None) -> float | None:
    # None (off) or MiB > 0.
    return _check_optional_number(name, value, low=0.0, high=math.inf, low_open=True)


def _header_values(rss_bytes: int, delta_bytes: int) -> tuple[bytes, bytes]:
    return (b"%.1f" % (rss_bytes / MIB), b"%.1f" % (delta_bytes / MIB))


class MemoryMonitorMiddleware:
    """Pure ASGI middleware that measures RSS per HTTP request and feeds a MemoryMonitor.

    Non-HTTP scopes (websocket, lifespan) pass straight through. Per request it reads RSS twice
    (at request start and at ``http.response.start``, about 3 us each on Linux), optionally adds
    ``X-Memory-RSS-MB`` / ``X-Memory-Delta-MB`` headers, and records the request after the app
    returns or raises; an exception from the app propagates unchanged. This is the fast form:
    prefer it to ``memory_monitor`` (which runs under Starlette's BaseHTTPMiddleware).

    With no ``monitor`` and no keyword arguments it feeds ``default_monitor()``; keyword
    arguments build a new MemoryMonitor.

    Thread safety: per-request state lives in locals; shared state is in the monitor.
    """

    def __init__(
        self, app: ASGIApp, /, monitor: MemoryMonitor | None = None, **monitor_kwargs: Any
    ) -> None:
        # ``app`` is positional-only so that mypy accepts the class in Starlette's
        # ``add_middleware`` (its factory protocol takes ``app`` positional-only).
        if monitor is not None and monitor_kwargs:
            msg = f"pass monitor or MemoryMonitor keyword arguments, not both: {monitor_kwargs!r}"
            raise TypeError(msg)
        self.app = app
        if monitor is None:
            monitor = MemoryMonitor(**monitor_kwargs) if monitor_kwargs else default_monitor()
        self.monitor = monitor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        monitor = self.monitor
        probe = monitor.rss_probe
        add_headers = monitor.add_headers
        rss_start = probe()
        rss_response = 0
        status = 0

        async def send_measured(message: Message) -> None:
            nonlocal rss_response, status
            if message["type"] == "http.response.start":
                rss_response = probe()
                status = message.get("status", 0)
                if add_headers:
                    rss_value, delta_value = _header_values(rss_response, rss_response - rss_start)
                    headers = list(message.get("headers", ()))
                    headers += ((RSS_HEADER, rss_value), (DELTA_HEADER, delta_value))
                    message = {**message, "headers": headers}
            await send(message)

        failed = True
        try:
            await self.app(scope, receive, send_measured)
            failed = False
        finally:
            monitor.record(scope, rss_start, rss_response or probe(), status=status, failed=failed)


class _RequestLike(Protocol):
    """What memory_monitor needs from Starlette's Request."""

    @property
    def scope(self) -> Scope: ...


class _HeadersLike(Protocol):
    def __setitem__(self, key: str, value: str, /) -> None: ...


class _ResponseLike(Protocol):
    """What memory_monitor needs from Starlette's Response."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> _HeadersLike: ...


_default_monitor: MemoryMonitor | None = None
_default_lock = threading.Lock()


def default_monitor() -> MemoryMonitor:
    """The process-wide MemoryMonitor that ``memory_monitor`` and a bare middleware feed."""
    global _default_monitor
    monitor = _default_monitor
    if monitor is None:
        with _default_lock:
            if _default_monitor is None:
                _default_monitor = MemoryMonitor()
            monitor = _default_monitor
    return monitor


async def memory_monitor(
    request: _RequestLike, call_next: Callable[[Any], Awaitable[_ResponseLike]]
) -> _ResponseLike:
    """The seed's function form: ``app.middleware("http")(memory_monitor)``.

    Feeds ``default_monitor()`` with the same figures as MemoryMonitorMiddleware, which is the
    fast form: ``app.middleware("http")`` wraps this in Starlette's BaseHTTPMiddleware, which
    costs hundreds of microseconds per request on its own.
    """
    monitor = default_monitor()
    probe = monitor.rss_probe
    rss_start = probe()
    rss_end = 0
    status = 0
    failed = True
    try:
        response = await call_next(request)
        rss_end = probe()
        status = response.status_code
        if monitor.add_headers:
            rss_value, delta_value = _header_values(rss_end, rss_end - rss_start)
            response.headers["X-Memory-RSS-MB"] = rss_value.decode()
            response.headers["X-Memory-Delta-MB"] = delta_value.decode()
        failed = False
        return response
    finally:
        monitor.record(request.scope, rss_start, rss_end or probe(), status=status, failed=failed)
