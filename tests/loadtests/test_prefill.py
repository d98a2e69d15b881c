"""The cache prefill: /health parsing, its stop conditions, and a sweep against a fake server."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from loadtests.prefill import (
    FillTracker,
    PrefillResult,
    WorkerFill,
    parse_health,
    run_prefill,
    store_user_ids,
)
from loadtests.server import server_env, server_settings
from tests.loadtests.fakes import JSONHandler, serving


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _health(pid: int, size: int, max_size: int = 100) -> dict[str, Any]:
    return {"pid": pid, "caches": {"caches": {"users": {"size": size, "max_size": max_size}}}}


def _tracker(
    clock: _Clock, pids: set[int], *, user_ids: int = 100, passes: int = 3, seconds: float = 90
) -> FillTracker:
    return FillTracker(
        user_ids=user_ids, max_passes=passes, max_seconds=seconds, worker_pids=lambda: pids,
        clock=clock,
    )  # fmt: skip


def test_parse_health_reads_pid_and_users_cache_fill() -> None:
    assert parse_health(_health(7, 30)) == (7, WorkerFill(30, 100))
    assert parse_health({"pid": 7, "caches": {}}) is None
    assert parse_health({"caches": _health(7, 1)["caches"]}) is None
    assert parse_health({"pid": "x", "caches": _health(7, 1)["caches"]}) is None


def test_prefill_stops_only_when_every_live_worker_reported_full() -> None:
    clock = _Clock()
    tracker = _tracker(clock, {11, 22})
    # One /health answer comes from one worker: a fake sequence as polls would see it.
    for pid, size in [(11, 40), (11, 100), (11, 100)]:
        tracker.record(*(parse_health(_health(pid, size)) or (0, WorkerFill(0, 1))))
        assert tracker.check() is None  # worker 22 never answered yet
    tracker.record(22, WorkerFill(99, 100))
    assert tracker.check() is None
    tracker.record(22, WorkerFill(100, 100))
    assert tracker.check() == "full"
    assert tracker.next_id() is None


def test_a_recycled_worker_that_vanished_does_not_block_the_stop() -> None:
    pids = {11, 22}
    tracker = _tracker(_Clock(), pids)
    tracker.record(11, WorkerFill(10, 100))  # 11 was recycled: its replacement is 33
    tracker.record(22, WorkerFill(100, 100))
    pids.discard(11)
    pids.add(33)
    assert tracker.check() is None
    tracker.record(33, WorkerFill(100, 100))
    assert tracker.check() == "full"


def test_prefill_stops_after_max_passes_over_the_ids() -> None:
    tracker = _tracker(_Clock(), {11}, user_ids=10, passes=2)
    ids = []
    while (user_id := tracker.next_id()) is not None:
        ids.append(user_id)
    assert ids == [*range(1, 11), *range(1, 11)]
    result = tracker.result()
    assert (result.requests, result.passes, result.stop_reason) == (20, 2.0, "2 passes")


def test_prefill_stops_at_the_time_cap() -> None:
    clock = _Clock()
    tracker = _tracker(clock, {11}, seconds=5)
    assert tracker.next_id() == 1
    clock.now = 5.0
    assert tracker.next_id() is None
    assert tracker.result().stop_reason == "time cap 5 s"
    assert tracker.result().seconds == 5.0


def test_the_first_stop_reason_wins() -> None:
    tracker = _tracker(_Clock(), {11})
    tracker.stop("server stopped answering")
    tracker.record(11, WorkerFill(100, 100))
    assert tracker.check() == "server stopped answering"


def test_result_reports_fill_per_pid_for_the_summary() -> None:
    result = PrefillResult(
        requests=120, seconds=1.234, passes=1.2, stop_reason="full",
        fills={22: WorkerFill(50, 100), 11: WorkerFill(100, 100)},
    )  # fmt: skip
    assert result.fill_text() == "pid 11: 100/100 (100%), pid 22: 50/100 (50%)"
    summary = result.as_summary()
    assert summary["fill"] == {"11": {"size": 100, "max_size": 100},
                               "22": {"size": 50, "max_size": 100}}  # fmt: skip
    assert (summary["requests"], summary["seconds"], summary["stop_reason"]) == (120, 1.23, "full")


def test_store_user_ids_reads_the_largest_id_of_the_store(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    conn.executemany("INSERT INTO users VALUES (?)", [(i,) for i in range(1, 1235)])
    conn.commit()
    conn.close()
    # The store the server's settings name: here through env, as --server-env passes it.
    found = server_settings(server_env("starter", [f"APP_STORE__PATH={path}"]))
    assert store_user_ids(found) == 1234
    missing = [f"APP_STORE__PATH={tmp_path / 'none.sqlite3'}", "APP_STORE__SEED_USERS=77"]
    assert store_user_ids(server_settings(server_env("starter", missing))) == 77


def test_a_store_seeded_with_no_users_has_no_ids_to_prefill(tmp_path: Path) -> None:
    extra = [f"APP_STORE__PATH={tmp_path / 'none.sqlite3'}", "APP_STORE__SEED_USERS=0"]
    assert store_user_ids(server_settings(server_env("starter", extra))) == 0


class _FakeWorkers(JSONHandler):
    """Two "workers" behind one port: a connection belongs to the worker that accepted it."""

    protocol_version = "HTTP/1.1"  # keep-alive, like gunicorn
    max_size = 300
    lock = threading.Lock()
    caches: ClassVar[dict[int, set[int]]] = {}
    accepted: ClassVar[list[int]] = [0]
    requests: ClassVar[list[int]] = [0]

    def setup(self) -> None:
        super().setup()
        with self.lock:
            self.accepted[0] += 1
            self.pid = 100 + self.accepted[0] % 2  # alternate workers per connection

    def do_GET(self) -> None:
        with self.lock:
            cache = self.caches.setdefault(self.pid, set())
            if self.path == "/health":
                body = json.dumps(_health(self.pid, len(cache), self.max_size)).encode()
            else:
                self.requests[0] += 1
                cache.add(int(self.path.rsplit("/", 1)[1]))
                while len(cache) > self.max_size:
                    cache.pop()
                body = b"{}"
        self.send_json(body)


@pytest.fixture
def fake_workers() -> Iterator[int]:
    _FakeWorkers.caches.clear()
    _FakeWorkers.accepted[0] = 0
    _FakeWorkers.requests[0] = 0
    with serving(_FakeWorkers) as port:
        yield port


@pytest.mark.slow
def test_run_prefill_fills_every_worker_then_stops(fake_workers: int) -> None:
    result = run_prefill(fake_workers, user_ids=1000, worker_pids=lambda: {100, 101}, concurrency=4)
    assert result.stop_reason == "full"
    assert result.fills == {100: WorkerFill(300, 300), 101: WorkerFill(300, 300)}
    # Requests go only to workers still filling: about 2 x max_size, never whole passes.
    assert 600 <= result.requests <= 600 + 4 * 100
    assert result.requests == _FakeWorkers.requests[0]


@pytest.mark.slow
def test_run_prefill_stops_at_once_on_a_fatal_event(fake_workers: int) -> None:
    result = run_prefill(fake_workers, user_ids=1000, worker_pids=lambda: {100, 101},
                         is_fatal=lambda: True)  # fmt: skip
    assert result.stop_reason == "the guard reported a fatal event"
    assert result.requests < 600


@pytest.mark.slow
def test_run_prefill_is_skipped_without_a_server() -> None:
    result = run_prefill(1, user_ids=10, worker_pids=set)
    assert result.stop_reason.startswith("skipped: /health failed")
    assert result.requests == 0


@pytest.mark.slow
def test_run_prefill_over_no_ids_sends_no_request(fake_workers: int) -> None:
    result = run_prefill(fake_workers, user_ids=0, worker_pids=lambda: {100, 101})
    assert (result.requests, result.stop_reason) == (0, "skipped: the store has no users")
    assert _FakeWorkers.requests[0] == 0
    assert not _FakeWorkers.caches  # not even /health was asked
