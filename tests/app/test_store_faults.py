"""A store that cannot answer: 503 with a JSON body, /health failing, recovery, start-up exit."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from app.api.errors import STORE_UNAVAILABLE_DETAIL
from app.core.config import Settings
from app.core.startup import WORKER_BOOT_ERROR, WorkerStartupError, exit_failsafe
from app.main import create_app
from app.store import StoreUnavailableError, UserStore, ensure_seeded
from memsafe import recycle
from tests.app.conftest import TestClient


def _corrupt(path: Path) -> bytes:
    good = path.read_bytes()
    path.write_bytes(os.urandom(len(good)))
    return good


def test_corrupt_file_raises_store_unavailable_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    ensure_seeded(path, 2000)
    store = UserStore(path)
    assert store.get_user(1) is not None
    good = _corrupt(path)
    # A page the pooled connection has not cached yet (cached ones are still served).
    with pytest.raises(StoreUnavailableError, match="cannot answer: DatabaseError") as info:
        store.get_user(1900)
    assert str(path) in str(info.value)
    assert store.connections == 0  # the broken connection was dropped, not pooled
    with pytest.raises(StoreUnavailableError):
        store.check()
    path.write_bytes(good)
    assert store.get_user(1900) is not None
    assert store.check() == 2000


def test_missing_file_is_store_unavailable(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "absent.sqlite3")
    with pytest.raises(StoreUnavailableError, match="unable to open database file"):
        store.get_user(1)


def test_a_bug_stays_the_driver_error(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    ensure_seeded(path, 5)
    store = UserStore(path)
    with pytest.raises(sqlite3.OperationalError, match="syntax"), store._borrow() as conn:
        conn.execute("SELEC 1")


def test_seeding_a_corrupt_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(StoreUnavailableError, match=r"app\.sqlite3.*file is not a database"):
        ensure_seeded(path, 5)


def test_corrupt_store_gives_503_json_and_health_fails_then_recovers(
    client: TestClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    assert client.get("/users/1").status_code == 200
    good = _corrupt(settings.store.path)
    with caplog.at_level(logging.WARNING, logger="app.api.errors"):
        # Ids on pages the pooled connection has not cached (cached pages are still served).
        responses = [client.get(f"/users/{user_id}") for user_id in range(50, 500, 45)]
    failed = [r for r in responses if r.status_code != 200]
    assert {r.status_code for r in failed} == {503}
    assert len(failed) >= 3, [r.status_code for r in responses]
    body = failed[0].json()
    assert body["error"] == "store_unavailable"
    assert body["detail"] == STORE_UNAVAILABLE_DETAIL  # the cause goes to the log only
    assert "cannot answer: DatabaseError" in caplog.text
    assert failed[0].headers["retry-after"] == "5"
    # Several failures, one log line (logging.repeat_interval_seconds bounds the rate).
    assert len([r for r in caplog.records if "503" in r.getMessage()]) == 1
    # Cached until the change-log poller (the invalidation channel) also fails on the file:
    # then the worker drops its cache (degraded mode) rather than risk stale reads.
    assert client.get("/users/1").status_code in {200, 503}
    health = client.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "failing"
    store_check = health.json()["checks"]["store"]
    assert store_check["error"] == "store_unavailable"
    assert "file is not a database" in store_check["detail"]  # local profile: details on
    settings.store.path.write_bytes(good)
    assert client.get("/health").status_code == 200
    assert client.get("/users/50").status_code == 200


def test_failed_startup_is_logged_once_and_raised_short(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.store.path.parent.mkdir(parents=True, exist_ok=True)
    settings.store.path.write_bytes(os.urandom(8192))
    with (
        caplog.at_level(logging.ERROR, logger="app.core.startup"),
        pytest.raises(WorkerStartupError, match="StoreUnavailableError: store"),
        TestClient(create_app(settings)),
    ):
        pass
    (record,) = caplog.records
    assert record.getMessage().startswith("worker start-up failed: StoreUnavailableError")
    assert record.exc_info is not None
    # No gunicorn worker here: no exit failsafe was armed.
    assert not [t for t in threading.enumerate() if t.name == "startup-exit-failsafe"]


def test_failed_startup_under_gunicorn_arms_the_exit_failsafe(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    armed: list[float] = []
    monkeypatch.setattr("app.core.startup.exit_failsafe", lambda: armed.append(1.0))
    recycle.record_worker(object())
    settings.store.path.parent.mkdir(parents=True, exist_ok=True)
    settings.store.path.write_bytes(os.urandom(8192))
    with pytest.raises(WorkerStartupError), TestClient(create_app(settings)):
        pass
    assert armed == [1.0]


def test_exit_failsafe_ends_a_stuck_process_with_the_boot_error_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fired = threading.Event()
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        fired.set()

    stuck = threading.Thread(target=fired.wait, name="stuck-non-daemon")
    stuck.start()
    with caplog.at_level(logging.ERROR, logger="app.core.startup"):
        timer = exit_failsafe(0.05, exit_process=fake_exit)
        assert timer.daemon
        assert fired.wait(5)
        timer.join(5)
    stuck.join(5)
    assert codes == [WORKER_BOOT_ERROR]
    assert "stuck-non-daemon" in caplog.text
