"""Cache prefill: fill every worker's users cache to its bound before the measured load starts.

A short run otherwise spends its post-warm-up window with caches still filling towards their
bound, and that legitimate growth reads as an RSS slope. The prefill sweeps GET /users/{id}
over the store's id range on keep-alive connections. Each connection is served by one worker,
so a connection first asks /health which worker (pid) it reached and how full that worker's
users cache is; a connection on a full worker is dropped and reopened (a new connection lands
on a random worker), so the sweep spends its requests only on workers that still fill.
It stops when every live worker reports size >= max_size, after `max_passes` sweeps of the id
range, on a time cap, or when the server fails, whichever comes first.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.core.config import Settings
from loadtests.launcher import HOST, REPO_ROOT

CACHE_NAME = "users"  # the cache /health reports under caches.caches.<name>
DEFAULT_CONCURRENCY = 8  # keep-alive connections: enough to keep 2 workers busy, few enough
DEFAULT_MAX_PASSES = 3
DEFAULT_MAX_SECONDS = 90.0
CHECK_EVERY_REQUESTS = 100  # a connection re-reads its worker's fill after this many requests
MAX_RECONNECTS = 50  # per connection: gives up when new connections keep reaching full workers
REQUEST_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class WorkerFill:
    """One worker's users cache as its /health reported it."""

    size: int
    max_size: int

    @property
    def is_full(self) -> bool:
        """True when the cache holds its bound (or more, which a bounded cache never does)."""
        return self.size >= self.max_size


def parse_health(data: Mapping[str, Any]) -> tuple[int, WorkerFill] | None:
    """(pid, users cache fill) from a /health body, or None when it lacks either."""
    cache = ((data.get("caches") or {}).get("caches") or {}).get(CACHE_NAME)
    if "pid" not in data or not isinstance(cache, Mapping) or "max_size" not in cache:
        return None
    try:
        return int(data["pid"]), WorkerFill(int(cache.get("size", 0)), int(cache["max_size"]))
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class PrefillResult:
    """What the prefill did: requests, time, why it stopped and each worker's last fill."""

    requests: int
    seconds: float
    passes: float  # ids requested / ids in the store
    stop_reason: str
    fills: dict[int, WorkerFill] = field(default_factory=dict)
    errors: int = 0

    def fill_text(self) -> str:
        """`pid 12: 5000/5000 (100%), pid 13: ...` or `none`."""
        parts = [
            f"pid {pid}: {f.size}/{f.max_size} ({f.size / f.max_size:.0%})"
            for pid, f in sorted(self.fills.items())
            if f.max_size
        ]
        return ", ".join(parts) or "none"

    def as_summary(self) -> dict[str, Any]:
        """summary.json's `prefill` entry."""
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 2),
            "passes": round(self.passes, 2),
            "stop_reason": self.stop_reason,
            "errors": self.errors,
            "fill": {str(pid): {"size": f.size, "max_size": f.max_size}
                     for pid, f in sorted(self.fills.items())},
        }  # fmt: skip


class FillTracker:
    """Latest users-cache fill per worker pid, and the prefill's stop decision.

    Thread safety: every method holds one lock; the sweep's connections share one tracker.
    """

    def __init__(
        self,
        *,
        user_ids: int,
        max_passes: int,
        max_seconds: float,
        worker_pids: Callable[[], Collection[int]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if user_ids < 1:
            msg = f"user_ids must be >= 1, got {user_ids!r}"
            raise ValueError(msg)
        self._lock = threading.Lock()
        self._user_ids = user_ids
        self._max_requests = max_passes * user_ids
        self._max_seconds = max_seconds
        self._worker_pids = worker_pids
        self._clock = clock
        self._started = clock()
        self._next_id = 0
        self.requests = 0
        self.errors = 0
        self.fills: dict[int, WorkerFill] = {}
        self.stop_reason: str | None = None

    def record(self, pid: int, fill: WorkerFill) -> None:
        """Note what a /health answer said about its worker."""
        with self._lock:
            self.fills[pid] = fill

    def is_worker_full(self, pid: int) -> bool:
        """True when pid's last report was full."""
        with self._lock:
            fill = self.fills.get(pid)
            return fill is not None and fill.is_full

    def next_id(self) -> int | None:
        """The next user id of the sweep (1..user_ids, cycling), or None once it must stop."""
        with self._lock:
            if self._should_stop_locked() is not None:
                return None
            self._next_id += 1
            self.requests += 1
            return (self._next_id - 1) % self._user_ids + 1

    def count_error(self) -> None:
        """Note a non-200 answer to a sweep request."""
        with self._lock:
            self.errors += 1

    def stop(self, reason: str) -> None:
        """Stop the sweep for reason (the first reason given wins)."""
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason

    def check(self) -> str | None:
        """Why the sweep must stop now, or None to go on."""
        with self._lock:
            return self._should_stop_locked()

    def _should_stop_locked(self) -> str | None:
        if self.stop_reason is not None:
            return self.stop_reason
        expected = set(self._worker_pids()) or set(self.fills)
        if expected and all(p in self.fills and self.fills[p].is_full for p in expected):
            self.stop_reason = "full"
        elif self.requests >= self._max_requests:
            self.stop_reason = f"{self._max_requests // self._user_ids} passes"
        elif self._clock() - self._started >= self._max_seconds:
            self.stop_reason = f"time cap {self._max_seconds:g} s"
        return self.stop_reason

    def result(self) -> PrefillResult:
        """The figures so far."""
        with self._lock:
            return PrefillResult(
                requests=self.requests,
                seconds=self._clock() - self._started,
                passes=self.requests / self._user_ids,
                stop_reason=self.stop_reason or "running",
                fills=dict(self.fills),
                errors=self.errors,
            )


class _Connection:
    """One keep-alive connection and the worker that serves it."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._conn: http.client.HTTPConnection | None = None
        self.pid: int | None = None

    def get(self, path: str) -> tuple[int, bytes]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(
                HOST, self._port, timeout=REQUEST_TIMEOUT_SECONDS
            )
        try:
            self._conn.request("GET", path)
            response = self._conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if response.will_close:
            self.close()  # the worker is draining (recycle): the next request reconnects
        return response.status, body

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self.pid = None, None


def _health(conn: _Connection, tracker: FillTracker) -> tuple[int, WorkerFill] | None:
    status, body = conn.get("/health")
    if status != 200:
        return None
    try:
        parsed = parse_health(json.loads(body))
    except ValueError:
        return None
    if parsed is not None:
        tracker.record(*parsed)
    return parsed


def _attach(conn: _Connection, tracker: FillTracker) -> bool:
    """Reconnect until the connection reaches a worker that still fills; False to give up."""
    for _ in range(MAX_RECONNECTS):
        if tracker.check() is not None:
            return False
        conn.close()
        parsed = _health(conn, tracker)
        if parsed is None:
            return False
        if not parsed[1].is_full:
            conn.pid = parsed[0]
            return True
    return False


def _sweep_connection(port: int, tracker: FillTracker) -> None:
    conn = _Connection(port)
    try:
        while True:
            if conn.pid is None and not _attach(conn, tracker):
                return
            for _ in range(CHECK_EVERY_REQUESTS):
                user_id = tracker.next_id()
                if user_id is None:
                    return
                status, _ = conn.get(f"/users/{user_id}")
                if status != 200:
                    tracker.count_error()  # a 404 is a gap in the ids: sent, nothing cached
                if conn.pid is None:
                    break  # the worker closed the connection
            if conn.pid is not None:
                parsed = _health(conn, tracker)
                if parsed is None or parsed[1].is_full:
                    conn.close()
    except (OSError, http.client.HTTPException) as exc:
        tracker.stop(f"server stopped answering: {exc}")
    finally:
        conn.close()


def run_prefill(
    port: int,
    *,
    user_ids: int,
    worker_pids: Callable[[], Collection[int]],
    max_passes: int = DEFAULT_MAX_PASSES,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    concurrency: int = DEFAULT_CONCURRENCY,
    is_fatal: Callable[[], bool] = lambda: False,
) -> PrefillResult:
    """Sweep /users/{id} on `concurrency` keep-alive connections until every worker is full.

    worker_pids gives the live worker pids (the guard's sampler knows them); is_fatal stops
    the sweep at once when the guard saw the server die. With user_ids 0 (a store seeded
    with no users) there is nothing to fill and no request is sent.
    """
    if user_ids == 0:
        return PrefillResult(requests=0, seconds=0.0, passes=0.0,
                             stop_reason="skipped: the store has no users")  # fmt: skip
    tracker = FillTracker(
        user_ids=user_ids, max_passes=max_passes, max_seconds=max_seconds, worker_pids=worker_pids
    )
    probe = _Connection(port)
    try:
        if _health(probe, tracker) is None:
            tracker.stop(f"skipped: /health reports no {CACHE_NAME!r} cache")
            return tracker.result()
    except (OSError, http.client.HTTPException) as exc:
        tracker.stop(f"skipped: /health failed: {exc}")
        return tracker.result()
    finally:
        probe.close()
    threads = [
        threading.Thread(target=_sweep_connection, args=(port, tracker), daemon=True)
        for _ in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        if is_fatal():
            tracker.stop("the guard reported a fatal event")
        tracker.check()
        for thread in threads:
            thread.join(timeout=0.2)
    tracker.check()
    if tracker.stop_reason is None:
        tracker.stop("no connection reached a worker that still fills")
    return tracker.result()


def store_user_ids(settings: Settings) -> int:
    """Users in the server's SQLite store (ids 1..N), else its store.seed_users (0: none).

    A relative store.path is relative to the repository, where the server runs.
    """
    path = REPO_ROOT / settings.store.path  # an absolute store.path stays as it is
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT MAX(id) FROM users").fetchone()
        finally:
            conn.close()
        if row and row[0]:
            return int(row[0])
    except sqlite3.Error:
        pass
    return settings.store.seed_users
