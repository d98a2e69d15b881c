"""Prometheus metric families built at scrape time from worker snapshots, labelled by pid."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from app.core.request_metrics import LATENCY_BUCKETS_SECONDS

# One worker's state as plain JSON data: "pid", "rss_bytes", RequestMetrics.snapshot()'s
# "requests" and "latency", and "caches", "tiers", "cleanup" when the worker has them.
Snapshot = dict[str, Any]


class LiveCollector(Collector):
    """Builds Prometheus families at scrape time: this worker's live state, plus its siblings'.

    `snapshot()` returns this worker's live state; `others(own_pid)` the latest published
    snapshots of the other workers of the same master (none without gunicorn). Every sample
    carries `pid`, so the series of several gunicorn workers never collide and
    `sum without (pid)` adds them up.
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        others: Callable[[int], list[Snapshot]],
    ) -> None:
        self._snapshot = snapshot
        self._others = others

    def collect(self) -> Iterator[Metric]:
        own = self._snapshot()
        yield from families([own, *self._others(int(own["pid"]))])


def families(snapshots: list[Snapshot]) -> Iterator[Metric]:
    """Prometheus metric families for one or more worker snapshots."""
    requests = CounterMetricFamily(
        "app_http_requests",
        "HTTP requests by route template",
        labels=["pid", "method", "route", "status"],
    )
    latency = HistogramMetricFamily(
        "app_http_request_duration_seconds",
        "HTTP request latency by route template",
        labels=["pid", "method", "route"],
    )
    rss = GaugeMetricFamily("app_process_rss_bytes", "Resident set size", labels=["pid"])
    cache_counters = {
        name: CounterMetricFamily(f"app_cache_{name}", f"Cache {name}", labels=["pid", "cache"])
        for name in ("hits", "misses", "evictions", "expirations")
    }
    cache_size = GaugeMetricFamily(
        "app_cache_entries", "Entries in the cache", labels=["pid", "cache"]
    )
    cache_bytes = GaugeMetricFamily(
        "app_cache_bytes", "Bytes held by the cache", labels=["pid", "cache"]
    )
    tier_counters = {
        name: CounterMetricFamily(f"app_users_{name}", f"Users cache {help_}", labels=["pid"])
        for name, help_ in (
            ("l1_hits", "per-worker tier hits"),
            ("l1_misses", "per-worker tier misses"),
            ("l2_hits", "shared (Key Value) tier hits"),
            ("l2_misses", "shared (Key Value) tier misses"),
            ("invalidations", "invalidations applied"),
        )
    }
    tier_rates = {
        name: GaugeMetricFamily(f"app_users_{name}", f"Users cache {name}", labels=["pid"])
        for name in ("l1_hit_rate", "l2_hit_rate", "degraded")
    }
    # TierStats keys of each gauge (a renamed key is a KeyError here, not a silent 0)
    tier_rate_keys = {
        "l1_hit_rate": "l1_hit_rate",
        "l2_hit_rate": "l2_hit_rate",
        "degraded": "is_degraded",
    }
    cleanup_passes = CounterMetricFamily("app_cleanup_passes", "Cleanup passes", labels=["pid"])
    cleanup_failures = CounterMetricFamily(
        "app_cleanup_failures", "Failed cleanup passes", labels=["pid"]
    )
    cleanup_full_gcs = CounterMetricFamily(
        "app_cleanup_full_gcs", "Full gc.collect() runs by the cleaner", labels=["pid"]
    )
    cleanup_level = GaugeMetricFamily(
        "app_cleanup_level", "Current cleanup level (1 for the active one)", labels=["pid", "level"]
    )
    for snap in snapshots:
        pid = str(snap["pid"])
        for method, route, status, count in snap.get("requests", []):
            requests.add_metric([pid, method, route, status], count)
        for method, route, hist in snap.get("latency", []):
            cumulative, buckets = 0.0, []
            for bound, count in zip(
                (*LATENCY_BUCKETS_SECONDS, float("inf")), hist[:-1], strict=True
            ):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            latency.add_metric([pid, method, route], buckets, hist[-1])
        rss.add_metric([pid], snap.get("rss_bytes", 0))
        for cache, stats in snap.get("caches", {}).items():
            # Keys of memsafe's CacheStats / CleanupStats, indexed: a renamed key fails loudly
            # instead of reporting 0.
            for name, family in cache_counters.items():
                family.add_metric([pid, cache], stats[name])
            cache_size.add_metric([pid, cache], stats["size"])
            cache_bytes.add_metric([pid, cache], stats["bytes"])
        tiers = snap.get("tiers")
        if tiers:
            for name, family in tier_counters.items():
                family.add_metric([pid], tiers[name])
            for name, gauge in tier_rates.items():
                gauge.add_metric([pid], float(tiers[tier_rate_keys[name]]))
        cleanup = snap.get("cleanup")
        if cleanup:
            cleanup_passes.add_metric([pid], cleanup["passes"])
            cleanup_failures.add_metric([pid], cleanup["failures"])
            cleanup_full_gcs.add_metric([pid], cleanup["full_gcs"])
            current = cleanup["level"]
            for level in ("normal", "soft", "hard", "recycle"):
                cleanup_level.add_metric([pid, level], 1.0 if level == current else 0.0)
    yield requests
    yield latency
    yield rss
    yield from cache_counters.values()
    yield cache_size
    yield cache_bytes
    yield from tier_counters.values()
    yield from tier_rates.values()
    yield cleanup_passes
    yield cleanup_failures
    yield cleanup_full_gcs
    yield cleanup_level


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)
