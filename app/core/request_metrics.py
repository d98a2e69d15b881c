"""Request counts and latency histograms per method and route template, and their middleware."""

from __future__ import annotations

import bisect
import threading
import time
from typing import TYPE_CHECKING, Any

from memsafe import RouteBuckets, route_template

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class RequestMetrics:
    """Request counts and latency histograms per (method, route template), bounded in routes.

    Labels follow memsafe's rules, the same as its MemoryMonitor's route keys: route labels
    are templates (`/users/{user_id}`), never raw paths; a request no route matched is
    `memsafe.UNMATCHED_ROUTE`; once `max_routes` (method, template) keys exist, new ones count
    under `memsafe.OVERFLOW_ROUTE` (`memsafe.RouteBuckets`); methods outside the standard
    HTTP set count under `OTHER`. So label cardinality stays bounded.
    Thread safety: one lock around a few dict updates per request.
    """

    def __init__(self, max_routes: int) -> None:
        self._lock = threading.Lock()
        self._buckets = RouteBuckets(max_routes)
        self._counts: dict[tuple[str, str, str], int] = {}
        self._latency: dict[tuple[str, str], list[float]] = {}

    def observe(self, method: str, template: str | None, status: int, seconds: float) -> None:
        """Count one finished request and its latency; `template` None: no route matched."""
        bucket = bisect.bisect_left(LATENCY_BUCKETS_SECONDS, seconds)
        with self._lock:
            method, route = self._buckets.labels(method, template)
            key = (method, route, str(status))
            self._counts[key] = self._counts.get(key, 0) + 1
            hist = self._latency.get((method, route))
            if hist is None:
                # per-bucket counts, then +Inf bucket, then the sum of seconds
                hist = [0.0] * (len(LATENCY_BUCKETS_SECONDS) + 2)
                self._latency[(method, route)] = hist
            hist[bucket] += 1
            hist[-1] += seconds

    def snapshot(self) -> dict[str, Any]:
        """Plain data: request counts and histograms, copied under the lock."""
        with self._lock:
            return {
                "requests": [[*key, count] for key, count in self._counts.items()],
                "latency": [[*key, list(hist)] for key, hist in self._latency.items()],
            }


class RequestMetricsMiddleware:
    """Pure ASGI: times each HTTP request and records it under its route template."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The same template rule as memsafe's monitor (mounted apps included).
            template = route_template(scope.get("route"), scope.get("root_path"))
            elapsed = time.perf_counter() - started
            self.metrics.observe(scope["method"], template, status, elapsed)
