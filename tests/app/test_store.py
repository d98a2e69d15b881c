"""The SQLite store: seeded once, idempotent, safe when several processes start together."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from app.store import UserStore, ensure_seeded


def test_seed_creates_the_users(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "app.sqlite3"
    assert ensure_seeded(path, 300) is True
    store = UserStore(path)
    try:
        assert store.count() == 300
        user = store.get_user(300)
        assert user is not None
        assert user["id"] == 300
        assert store.get_user(301) is None
    finally:
        store.close()


def test_seed_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    assert ensure_seeded(path, 100) is True
    first = UserStore(path).get_user(50)
    assert ensure_seeded(path, 100) is False
    assert UserStore(path).get_user(50) == first


def test_seed_never_touches_a_table_with_rows(tmp_path: Path) -> None:
    # Writes must survive a restart: a table with rows is never re-seeded or grown.
    path = tmp_path / "app.sqlite3"
    ensure_seeded(path, 10)
    assert ensure_seeded(path, 20) is False
    assert UserStore(path).count() == 10


def test_an_old_database_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,"
        " city TEXT NOT NULL, created_at TEXT NOT NULL);"
        "INSERT INTO users VALUES (1, 'Ada', 'ada@example.com', 'Oslo', '2024-01-01T00:00:00Z');"
    )
    conn.close()
    assert ensure_seeded(path, 10) is False
    user = UserStore(path).get_user(1)
    assert user is not None
    assert (user["name"], user["version"]) == ("Ada", 0)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2


def test_default_seed_has_ten_thousand_users(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    ensure_seeded(path, 10_000)
    assert UserStore(path).count() == 10_000


def test_store_is_read_only(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    ensure_seeded(path, 5)
    store = UserStore(path)
    with pytest.raises(sqlite3.OperationalError, match="readonly"), store._borrow() as conn:
        conn.execute("DELETE FROM users")


def test_closed_store_refuses_new_connections(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    ensure_seeded(path, 5)
    store = UserStore(path)
    store.get_user(1)
    assert store.connections == 1
    store.close()
    assert store.connections == 0
    fresh_thread_store = UserStore(path)
    fresh_thread_store.close()
    with pytest.raises(RuntimeError, match="closed"):
        fresh_thread_store.get_user(1)


def _seed(path: str) -> bool:
    return ensure_seeded(Path(path), 5_000)


@pytest.mark.slow
def test_concurrent_seeding_seeds_once(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.map(_seed, [str(path)] * 4)
    assert results.count(True) == 1
    assert UserStore(path).count() == 5_000


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
def test_short_lived_threads_share_a_bounded_pool(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    ensure_seeded(path, 5)
    store = UserStore(path, max_connections=4)
    try:
        store.get_user(1)
        fds_before = _open_fds()
        for _ in range(20):
            threads = [threading.Thread(target=store.get_user, args=(1,)) for _ in range(10)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert store.connections <= 4
        assert store.connections <= 4
        assert _open_fds() <= fds_before + 2 * 4
    finally:
        store.close()
    assert store.connections == 0


def test_read_after_close_raises_runtime_error_on_a_thread_that_read(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    ensure_seeded(path, 5)
    store = UserStore(path)
    assert store.get_user(1) is not None
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.get_user(1)
    with pytest.raises(RuntimeError, match="closed"):
        store.count()


def test_max_connections_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_connections"):
        UserStore(tmp_path / "app.sqlite3", max_connections=0)
