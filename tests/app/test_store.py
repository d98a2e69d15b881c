"""The SQLite store: seeded once, idempotent, safe when several processes start together."""

from __future__ import annotations

import multiprocessing
import sqlite3
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


def test_seed_grows_when_more_users_are_asked(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    ensure_seeded(path, 10)
    assert ensure_seeded(path, 20) is True
    assert UserStore(path).count() == 20


def test_default_seed_has_ten_thousand_users(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    ensure_seeded(path, 10_000)
    assert UserStore(path).count() == 10_000


def test_store_is_read_only(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    ensure_seeded(path, 5)
    store = UserStore(path)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store._connection().execute("DELETE FROM users")


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
