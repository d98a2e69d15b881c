"""Per-route request metrics and a Prometheus collector that reads live state, labelled by pid."""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from memsafe import method_key, route_template

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
UNMATCHED_ROUTE = "<unmatched>"
OTHER_ROUTE = "<other>"

Snapshot = dict[str, Any]
SHARED_DIR_MODE = 0o700  # only this user: the directory sits in world-writable /dev/shm


class UnsafeDirectoryError(PermissionError):
    """The shared metrics directory is a symlink, not a directory, or not private to this user."""


class RequestMetrics:
    """Request counts and latency histograms per (method, route template), bounded in routes.

    Route labels are templates (`/users/{user_id}`), never raw paths, and at most `max_routes`
    distinct ones are kept; the rest count under `<other>`. Methods outside the standard HTTP
    set count under `OTHER`. So label cardinality stays bounded.
    Thread safety: one lock around a few dict updates per request.
    """

    def __init__(self, max_routes: int = 200) -> None:
        if max_routes < 1:
            msg = f"max_routes must be >= 1, got {max_routes!r}"
            raise ValueError(msg)
        self.max_routes = max_routes
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}
        self._latency: dict[tuple[str, str], list[float]] = {}
        self._routes: set[str] = set()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        bucket = bisect.bisect_left(LATENCY_BUCKETS_SECONDS, seconds)
        # Methods are client-chosen: memsafe's rule folds non-standard ones into "OTHER".
        method = method_key(method)
        with self._lock:
            if route not in self._routes:
                if len(self._routes) >= self.max_routes:
                    route = OTHER_ROUTE
                self._routes.add(route)
            key = (method, route, str(status))
            self._counts[key] = self._counts.get(key, 0) + 1
            hist = self._latency.get((method, route))
            if hist is None:
                # per-bucket counts, then +Inf bucket, then the sum of seconds
                hist = [0.0] * (len(LATENCY_BUCKETS_SECONDS) + 2)
                self._latency[(method, route)] = hist
            hist[bucket] += 1
            hist[-1] += seconds

    def snapshot(self) -> Snapshot:
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
            self.metrics.observe(scope["method"], template or UNMATCHED_ROUTE, status, elapsed)


class LiveCollector(Collector):
    """Builds Prometheus families at scrape time: this worker's live state, plus its siblings'.

    `snapshot()` returns this worker's live state; `others()` (optional) the latest published
    snapshots of the other workers of the same master. Every sample carries `pid`, so the
    series of several gunicorn workers never collide and `sum without (pid)` adds them up.
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        others: Callable[[int], list[Snapshot]] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._others = others

    def collect(self) -> Iterator[Metric]:
        own = self._snapshot()
        snapshots = [own]
        if self._others is not None:
            snapshots.extend(self._others(int(own["pid"])))
        yield from families(snapshots)


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


class SharedSnapshots:
    """Each gunicorn worker's metrics snapshot in one small file, so any worker can report all.

    A scrape through Render's proxy reaches one worker at random; without sharing it would see
    only that worker's counters. prometheus_client's multiprocess mode solves this with mmap
    files per pid that are never deleted (they pile up in memory-backed tmpfs with every
    recycled worker). Here each live worker owns exactly one JSON file, rewritten atomically
    every interval and deleted when the worker stops; the reader deletes files of dead pids.
    The directory therefore holds at most one file per live worker (a few KiB each).

    Thread safety: each worker writes only its own file (os.replace is atomic); readers
    tolerate files vanishing or half-written by skipping them.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_age_seconds: float,
        prefix: str = "worker",
        keep_exited: bool = False,
    ) -> None:
        # prefix: one kind of file per prefix in the same directory ("worker" metrics,
        # "history"). keep_exited: an exited worker's file stays until max_age_seconds (a
        # recycled worker's memory history is the interesting one); readers see "is_alive".
        self.directory = directory
        self.max_age_seconds = max_age_seconds
        self.prefix = prefix
        self.keep_exited = keep_exited

    def _path(self, pid: int) -> Path:
        return self.directory / f"{self.prefix}-{pid}.json"

    def ensure_directory(self) -> None:
        """Create the directory (mode 0o700) if missing and check that it is safe to use.

        The base is world-writable /dev/shm, so anyone could create the name first, as a
        symlink or as their own directory. It must be a real directory (not followed through a
        symlink), owned by this user and writable by no one else.

        Raises:
            UnsafeDirectoryError: when it is not; OSError when it cannot be created.
        """
        with contextlib.suppress(FileExistsError):
            self.directory.mkdir(mode=SHARED_DIR_MODE, parents=True)
        info = os.lstat(self.directory)
        problem = None
        if stat.S_ISLNK(info.st_mode):
            problem = "is a symlink"
        elif not stat.S_ISDIR(info.st_mode):
            problem = "is not a directory"
        elif info.st_uid != os.getuid():
            problem = f"is owned by uid {info.st_uid}, not {os.getuid()}"
        elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            problem = f"is writable by others (mode {stat.S_IMODE(info.st_mode):o})"
        if problem is not None:
            msg = (
                f"shared metrics directory {str(self.directory)!r} {problem}; allowed: a "
                f"directory owned by uid {os.getuid()}, not writable by group or others"
            )
            raise UnsafeDirectoryError(msg)

    def publish(self, snapshot: Snapshot) -> None:
        """Write this worker's snapshot (atomic replace) into the checked directory."""
        self.ensure_directory()
        pid = int(snapshot["pid"])
        tmp = self.directory / f".{self.prefix}-{pid}.tmp"
        data = json.dumps(snapshot, separators=(",", ":")).encode()
        # O_NOFOLLOW: never write through a link planted under the temporary name.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, self._path(pid))

    def remove(self, pid: int) -> None:
        """Delete the snapshot of `pid` (its worker is stopping)."""
        with contextlib.suppress(FileNotFoundError):
            self._path(pid).unlink()

    def others(self, own_pid: int, max_files: int | None = None) -> list[Snapshot]:
        """Fresh snapshots of the other live workers; stale or dead workers' files are removed.

        With `keep_exited`, dead workers' files are kept (until stale) and each snapshot gets
        `is_alive`; with `max_files`, only the newest that many are read, older ones removed.
        """
        snapshots: list[Snapshot] = []
        if not self._is_existing_directory_safe():
            return snapshots  # missing, or not ours: read nothing planted by someone else
        try:
            paths = list(self.directory.glob(f"{self.prefix}-*.json"))
        except OSError:
            return snapshots
        now = time.time()
        found: list[tuple[float, int, Path]] = []
        for path in paths:
            try:
                pid = int(path.stem.removeprefix(f"{self.prefix}-"))
                mtime = path.stat().st_mtime
            except (ValueError, OSError):
                continue
            if pid != own_pid:
                found.append((mtime, pid, path))
        found.sort(reverse=True)
        for index, (mtime, pid, path) in enumerate(found):
            try:
                is_alive = _is_alive(pid)
                is_stale = now - mtime > self.max_age_seconds
                is_extra = max_files is not None and index >= max_files
                if is_stale or is_extra or not (is_alive or self.keep_exited):
                    path.unlink()
                    continue
                snapshot = json.loads(path.read_text(encoding="utf-8"))
                if self.keep_exited:
                    snapshot["is_alive"] = is_alive
                snapshots.append(snapshot)
            except (OSError, ValueError):
                continue  # vanished or being replaced: the next scrape sees it
        return snapshots

    def _is_existing_directory_safe(self) -> bool:
        try:
            info = os.lstat(self.directory)
        except OSError:
            return False
        return (
            stat.S_ISDIR(info.st_mode)
            and info.st_uid == os.getuid()
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        )


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def shared_snapshot_dir(master_pid: int) -> Path:
    """Where the workers of the gunicorn master `master_pid` share snapshots (tmpfs if any)."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return base / f"app-metrics-{master_pid}"
