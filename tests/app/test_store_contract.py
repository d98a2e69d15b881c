"""One store contract, run against the SQLite file and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from app.store import StoreBackend, StoreUnavailableError, ensure_seeded
from app.store_pg import PostgresStore, check_schema, migrate_and_seed
from app.store_sqlite import SQLiteStore
from memsafe.invalidation import Invalidation
from tests.servers import database_url, drop_schema, unique_name

T = TypeVar("T")
SEEDED = 30
StoreFactory = Callable[[], StoreBackend]


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Build stores (each like one worker's) on one seeded database of SEEDED users."""
    if request.param == "sqlite":
        path = tmp_path / "app.sqlite3"
        ensure_seeded(path, SEEDED)
        yield lambda: SQLiteStore(path, poll_interval_seconds=0.005)
        return
    url, schema = database_url(), unique_name()
    migrate_and_seed(url, schema=schema, seed_users=SEEDED)
    try:
        yield lambda: PostgresStore(url, schema=schema, pool_max_size=2)
    finally:
        drop_schema(url, schema)


def run(make_store: StoreFactory, body: Callable[[StoreBackend], Awaitable[T]]) -> T:
    async def main() -> T:
        store = make_store()
        await store.open()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def test_seeded_users_have_the_api_fields_and_a_version(make_store: StoreFactory) -> None:
    async def body(store: StoreBackend) -> None:
        user = await store.get_user(7)
        assert user is not None
        assert set(user) == {"id", "name", "email", "city", "created_at", "version"}
        assert user["id"] == 7
        assert user["email"].endswith("7@example.com")
        assert user["created_at"].endswith("T00:00:00Z")
        assert await store.get_user(SEEDED + 1) is None
        assert await store.count() == SEEDED

    run(make_store, body)


def test_pages_follow_the_cursor_in_id_order(make_store: StoreFactory) -> None:
    async def body(store: StoreBackend) -> None:
        first = await store.list_users(after_id=0, limit=10)
        second = await store.list_users(after_id=first[-1]["id"], limit=25)
        assert [u["id"] for u in first] == list(range(1, 11))
        assert [u["id"] for u in second] == list(range(11, SEEDED + 1))

    run(make_store, body)


def test_create_update_delete_bump_a_store_wide_version(make_store: StoreFactory) -> None:
    async def body(store: StoreBackend) -> None:
        fields = {"name": "Edsger Dijkstra", "email": "ewd@example.com", "city": "Austin"}
        created = await store.create_user(fields)
        assert created["id"] > SEEDED
        assert {k: created[k] for k in fields} == fields
        assert await store.get_user(created["id"]) == created
        updated = await store.update_user(created["id"], {"city": "Nuenen"})
        assert updated is not None
        assert (updated["city"], updated["name"]) == ("Nuenen", "Edsger Dijkstra")
        assert updated["version"] > created["version"] > 0
        deleted = await store.delete_user(created["id"])
        assert deleted is not None
        assert deleted > updated["version"]
        assert await store.get_user(created["id"]) is None
        assert await store.delete_user(created["id"]) is None
        assert await store.update_user(created["id"], {"city": "x"}) is None
        again = await store.create_user(fields)
        assert again["id"] != created["id"]  # ids are never reused
        assert again["version"] > deleted

    run(make_store, body)


def test_a_write_reaches_another_workers_subscription(make_store: StoreFactory) -> None:
    async def body(writer: StoreBackend) -> None:
        reader = make_store()
        await reader.open()
        events = reader.subscribe()
        try:
            assert await anext(events) == []  # listening
            user = await writer.update_user(3, {"name": "Barbara Liskov"})
            assert user is not None
            batch = await asyncio.wait_for(anext(events), 5)
            assert list(batch) == [Invalidation(3, user["version"])]
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            await reader.close()

    run(make_store, body)


def test_a_dead_database_raises_store_unavailable() -> None:
    async def main() -> None:
        store = PostgresStore(
            "postgresql://postgres@127.0.0.1:1/none",
            pool_timeout_seconds=0.3,
            connect_timeout_seconds=1,
        )
        await store.open()
        try:
            with pytest.raises(StoreUnavailableError, match="postgres store"):
                await store.get_user(1)
        finally:
            await store.close()

    asyncio.run(main())


def test_an_unreadable_sqlite_file_raises_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    path.write_bytes(b"this is not a database" * 100)

    async def main() -> None:
        store = SQLiteStore(path)
        with pytest.raises(StoreUnavailableError, match="cannot answer: DatabaseError"):
            await store.get_user(1)
        await store.close()

    asyncio.run(main())


def test_migrations_run_once_and_seed_only_an_empty_table() -> None:
    url, schema = database_url(), unique_name()
    try:
        assert migrate_and_seed(url, schema=schema, seed_users=5) is True
        assert migrate_and_seed(url, schema=schema, seed_users=50) is False
    finally:
        drop_schema(url, schema)


@pytest.mark.parametrize("bad", ["Public", "a-b", "x; DROP TABLE users", "", "1abc"])
def test_schema_names_are_plain_identifiers(bad: str) -> None:
    with pytest.raises(ValueError, match="schema must match"):
        check_schema(bad)
