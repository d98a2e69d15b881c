"""Per-request memory monitoring: a pure ASGI middleware, its bounded stats and the seed's form."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, Protocol, TypedDict

from memsafe._clock import Clock
from memsafe.probes import process_rss_bytes

logger = logging.getLogger(__name__)

MIB: Final = 2**20
DEFAULT_ALERT_DELTA_MB: Final = 50.0
DEFAULT_MAX_ROUTES: Final = 200
DEFAULT_MAX_ALERTS: Final = 100
DEFAULT_ALERT_LOG_INTERVAL_SECONDS: Final = 10.0
DEFAULT_TOP_ROUTES: Final = 10
UNMATCHED_ROUTE: Final = "<unmatched>"
OVERFLOW_ROUTE: Final = "<overflow>"
RSS_HEADER: Final = b"x-memory-rss-mb"
DELTA_HEADER: Final = b"x-memory-delta-mb"
_MAX_ALERT_PATH_CHARS: Final = 200
# Methods are client-chosen strings: anything else is folded into one key so it cannot grow
# the route table.
_KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RouteMemoryStats(TypedDict):
    """Memory figures of one route template (``"GET /users/{user_id}"``)."""

    route: str
    requests: int
    errors: int
    growth_bytes: int
    mean_delta_bytes: float
    max_delta_bytes: int
    max_rss_bytes: int


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


class _RouteEntry:
    __slots__ = ("errors", "growth", "max_delta", "max_rss", "requests", "total_delta")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.total_delta = 0
        self.growth = 0
        self.max_delta = 0
        self.max_rss = 0

    def as_stats(self, route: str) -> RouteMemoryStats:
        return RouteMemoryStats(
            route=route,
            requests=self.requests,
            errors=self.errors,
            growth_bytes=self.growth,
            mean_delta_bytes=self.total_delta / self.requests if self.requests else 0.0,
            max_delta_bytes=self.max_delta,
            max_rss_bytes=self.max_rss,
        )


_mount_types: dict[type, bool] = {}


def _is_mount(route: object) -> bool:
    """True for Starlette's Mount (and subclasses), found by name: memsafe never imports it."""
    kind = type(route)
    known = _mount_types.get(kind)
    if known is None:
        known = any(base.__name__ == "Mount" for base in kind.__mro__)
        _mount_types[kind] = known
    return known


def _route_template(scope: Scope) -> str:
    """The matched route's template from ``scope["route"]``, never the raw path.

    Starlette and FastAPI routers put the matched route object in ``scope["route"]`` (the
    innermost one for mounted apps, whose prefix is then in ``scope["root_path"]``).
    """
    route = scope.get("route")
    if route is None:
        return UNMATCHED_ROUTE
    root_path = scope.get("root_path") or ""
    if _is_mount(route):
        # A Mount whose app is not a router: its own path_format ends in "/{path}".
        return root_path or "/"
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str):
        return UNMATCHED_ROUTE
    return root_path.rstrip("/") + template if root_path else template


class MemoryMonitor:
    """Holds per-request memory figures in bounded collections and raises high-memory alerts.

    Every MB here is a MiB (2**20 bytes). A request's delta is the process-wide RSS change from
    request start to response start, so concurrent requests share each other's growth. Routes
    are keyed by method and route template; once ``max_routes`` keys exist, new ones are counted
    in one ``<overflow>`` bucket, so neither a path scanner nor odd methods can grow the table.

    Thread safety: recording and stats() hold one lock for in-memory work only; alert logging
    and the ``on_response_rss`` callback run after it is released.
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
        self.alert_delta_mb = _check_threshold("alert_delta_mb", alert_delta_mb)
        self.alert_rss_mb = _check_threshold("alert_rss_mb", alert_rss_mb)
        self.add_headers = add_headers
        self._max_routes = _check_count("max_routes", max_routes)
        self._max_alerts = _check_count("max_alerts", max_alerts)
        if alert_log_interval_seconds < 0:
            msg = f"alert_log_interval_seconds must be >= 0, got {alert_log_interval_seconds!r}"
            raise ValueError(msg)
        self.on_response_rss = on_response_rss
        self.rss_probe = rss_probe
        self._log_interval = alert_log_interval_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._reset_state()

    def _reset_state(self) -> None:
        self._routes: dict[str, _RouteEntry] = {}
        self._overflow = _RouteEntry()
        self._alerts: deque[MemoryAlert] = deque(maxlen=self._max_alerts)
        self._requests = 0
        self._errors = 0
        self._alert_count = 0
        self._growth = 0
        self._last_rss = 0
        self._max_rss = 0
        self._last_log: float | None = None
        self._suppressed_logs = 0

    @property
    def max_routes(self) -> int:
        """How many route keys the table holds before new ones go to ``<overflow>``."""
        return self._max_routes

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
            self._record(scope, rss_start_bytes, rss_end_bytes, status, failed)
        except Exception:
            logger.exception("memory monitor failed to record a request")
        callback = self.on_response_rss
        if callback is not None:
            try:
                callback(rss_end_bytes)
            except Exception:
                logger.exception("on_response_rss callback failed")

    def _record(
        self, scope: Scope, rss_start: int, rss_end: int, status: int, failed: bool
    ) -> None:
        template = _route_template(scope)
        method = scope.get("method", "GET")
        if method not in _KNOWN_METHODS:
            method = "OTHER"
        key = template if template is UNMATCHED_ROUTE else f"{method} {template}"
        delta = rss_end - rss_start
        is_error = failed or status >= 500
        reasons: list[str] = []
        if self.alert_delta_mb is not None and delta >= self.alert_delta_mb * MIB:
            reasons.append("delta")
        if self.alert_rss_mb is not None and rss_end >= self.alert_rss_mb * MIB:
            reasons.append("rss")
        log_now = False
        suppressed = 0
        with self._lock:
            entry = self._routes.get(key)
            if entry is None:
                if len(self._routes) < self._max_routes:
                    entry = self._routes[key] = _RouteEntry()
                else:
                    entry = self._overflow
            entry.requests += 1
            entry.total_delta += delta
            if delta > 0:
                entry.growth += delta
                self._growth += delta
            if delta > entry.max_delta:
                entry.max_delta = delta
            if rss_end > entry.max_rss:
                entry.max_rss = rss_end
            self._requests += 1
            self._last_rss = rss_end
            if rss_end > self._max_rss:
                self._max_rss = rss_end
            if is_error:
                entry.errors += 1
                self._errors += 1
            if reasons:
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
                        path=str(scope.get("path", ""))[:_MAX_ALERT_PATH_CHARS],
                        status=status,
                        rss_bytes=rss_end,
                        delta_bytes=delta,
                        reasons=reasons,
                    )
                )
        if log_now:
            logger.warning(
                "high-memory request %s (%s): rss %.1f MiB, delta %+.1f MiB, over %s threshold;"
                " %d similar alerts not logged since the last one",
                key,
                str(scope.get("path", ""))[:_MAX_ALERT_PATH_CHARS],
                rss_end / MIB,
                delta / MIB,
                "+".join(reasons),
                suppressed,
            )

    def stats(self, top_n: int = DEFAULT_TOP_ROUTES) -> MonitorStats:
        """Totals, the ``top_n`` routes by memory growth, and recent alerts (newest first)."""
        with self._lock:
            routes = [entry.as_stats(key) for key, entry in self._routes.items()]
            if self._overflow.requests:
                routes.append(self._overflow.as_stats(OVERFLOW_ROUTE))
            alerts = [_copy_alert(alert) for alert in reversed(self._alerts)]
            totals = (
                self._requests,
                self._errors,
                self._alert_count,
                self._growth,
                self._last_rss,
                self._max_rss,
                len(self._routes),
                self._overflow.requests,
            )
        routes.sort(key=lambda r: (r["growth_bytes"], r["requests"]), reverse=True)
        requests, errors, alert_count, growth, last_rss, max_rss, n_routes, overflow = totals
        return MonitorStats(
            requests=requests,
            errors=errors,
            alerts=alert_count,
            growth_bytes=growth,
            last_rss_bytes=last_rss,
            max_rss_bytes=max_rss,
            routes=n_routes,
            max_routes=self._max_routes,
            overflow_requests=overflow,
            top_routes=routes[: max(0, top_n)],
            recent_alerts=alerts,
            alert_delta_mb=self.alert_delta_mb,
            alert_rss_mb=self.alert_rss_mb,
        )


def _copy_alert(alert: MemoryAlert) -> MemoryAlert:
    copy = alert.copy()
    copy["reasons"] = list(alert["reasons"])
    return copy


def _check_threshold(name: str, value: float | None) -> float | None:
    if value is not None and not value > 0:
        msg = f"{name} must be None (off) or > 0 MiB, got {value!r}"
        raise ValueError(msg)
    return value


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{name} must be an int >= 1, got {value!r}"
        raise ValueError(msg)
    return value


def _header_values(rss_bytes: int, delta_bytes: int) -> tuple[bytes, bytes]:
    return (f"{rss_bytes / MIB:.1f}".encode(), f"{delta_bytes / MIB:.1f}".encode())


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
                    message = {
                        **message,
                        "headers": [
                            *message.get("headers", ()),
                            (RSS_HEADER, rss_value),
                            (DELTA_HEADER, delta_value),
                        ],
                    }
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
