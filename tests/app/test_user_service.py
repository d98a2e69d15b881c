"""UserDataService: reads through memsafe's coherent cache, one store read per missing id."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.services.users import UserDataService
from app.store import User, ensure_seeded
from app.store_sqlite import SQLiteStore
from memsafe import LRUCache


class CountingStore(SQLiteStore):
    """The real SQLite store, counting reads and slowed so concurrent misses overlap."""

    def __init__(self, path: Path, *, delay_seconds: float = 0.01, offload: bool = False) -> None:
        super().__init__(path, offload_reads=offload)
        self.delay_seconds = delay_seconds
        self.reads: dict[int, int] = {}

    async def get_user(self, user_id: int) -> User | None:
        self.reads[user_id] = self.reads.get(user_id, 0) + 1
        await asyncio.sleep(self.delay_seconds)
        return await super().get_user(user_id)


async def _store(path: Path, *, offload: bool = False) -> AsyncIterator[CountingStore]:
    ensure_seeded(path, 50)
    store = CountingStore(path, offload=offload)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def test_reads_go_through_the_cache_and_unknown_ids_are_cached_too(tmp_path: Path) -> None:
    async def scenario() -> None:
        async for store in _store(tmp_path / "app.sqlite3"):
            service = UserDataService(store, LRUCache(max_size=10, name="users"))
            first = await service.get_user(5)
            assert first is not None and first["id"] == 5
            assert await service.get_user(5) == first
            assert await service.get_user(51) is None
            assert await service.get_user(51) is None
            assert store.reads == {5: 1, 51: 1}
            stats = service.stats()
            assert (stats["hits"], stats["misses"], stats["size"]) == (2, 2, 2)

    asyncio.run(scenario())


def test_lookup_says_whether_this_workers_cache_answered(tmp_path: Path) -> None:
    async def scenario() -> None:
        async for store in _store(tmp_path / "app.sqlite3"):
            service = UserDataService(store, LRUCache(max_size=10))
            assert [(await service.lookup(9))[1] for _ in range(2)] == [False, True]
            assert service.stats()["misses"] == 1  # the membership test counts nothing

    asyncio.run(scenario())


@pytest.mark.parametrize("offload", [True, False])
def test_concurrent_tasks_missing_one_id_read_the_store_once(tmp_path: Path, offload: bool) -> None:
    async def scenario() -> None:
        async for store in _store(tmp_path / "app.sqlite3", offload=offload):
            service = UserDataService(store, LRUCache(max_size=10))
            asks = [service.get_user(3 if i % 2 else 99) for i in range(20)]
            users = await asyncio.gather(*asks)
            assert store.reads == {3: 1, 99: 1}  # one read per id, the unknown one included
            assert sum(user is None for user in users) == 10  # id 99 is unknown
            assert all(user == users[1] for user in users[1::2])
            assert await service.get_user(99) is None
            assert store.reads == {3: 1, 99: 1}

    asyncio.run(scenario())


def test_without_single_flight_the_same_misses_would_read_many_times(tmp_path: Path) -> None:
    """The failing twin: the same concurrent misses straight to the store read it each time."""

    async def scenario() -> None:
        async for store in _store(tmp_path / "app.sqlite3"):
            await asyncio.gather(*(store.get_user(3) for _ in range(10)))
            assert store.reads == {3: 10}

    asyncio.run(scenario())
