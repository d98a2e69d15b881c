"""UserDataService: reads through the LRU cache, unknown ids cached too, stats exposed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.services.users import UserDataService
from app.store import User, UserStore, ensure_seeded
from memsafe.cache import LRUCache


@pytest.fixture
def store(tmp_path: Path) -> Iterator[UserStore]:
    path = tmp_path / "app.sqlite3"
    ensure_seeded(path, 50)
    store = UserStore(path)
    yield store
    store.close()


def test_get_user_reads_through_the_cache(store: UserStore) -> None:
    service = UserDataService(store, LRUCache(max_size=10, name="users"))
    first = service.get_user(5)
    assert first is not None
    assert service.get_user(5) is first
    assert service.get_user(51) is None
    assert service.get_user(51) is None
    stats = service.stats()
    assert (stats["hits"], stats["misses"], stats["size"]) == (2, 2, 2)


@pytest.mark.parametrize("offload", [True, False])
def test_async_read_matches_sync_read(store: UserStore, offload: bool) -> None:
    service = UserDataService(store, LRUCache(max_size=10), offload_reads=offload)
    user = asyncio.run(service.get_user_async(7))
    assert user == store.get_user(7)
    assert service.stats()["misses"] == 1


class CountingStore(UserStore):
    """The real SQLite store, counting reads and slowed so concurrent misses overlap."""

    def __init__(self, path: Path, delay_seconds: float = 0.05) -> None:
        super().__init__(path)
        self.delay_seconds = delay_seconds
        self.reads: dict[int, int] = {}
        self._count_lock = threading.Lock()

    def get_user(self, user_id: int) -> User | None:
        with self._count_lock:
            self.reads[user_id] = self.reads.get(user_id, 0) + 1
        time.sleep(self.delay_seconds)
        return super().get_user(user_id)


@pytest.fixture
def counting_store(tmp_path: Path) -> Iterator[CountingStore]:
    path = tmp_path / "app.sqlite3"
    ensure_seeded(path, 50)
    store = CountingStore(path)
    yield store
    store.close()


@pytest.mark.slow
def test_concurrent_threads_missing_one_id_read_the_store_once(
    counting_store: CountingStore,
) -> None:
    service = UserDataService(counting_store, LRUCache(max_size=10))
    start = threading.Barrier(16)
    results: list[User | None] = []

    def ask(user_id: int) -> None:
        start.wait()
        results.append(service.get_user(user_id))

    threads = [threading.Thread(target=ask, args=(3 if i % 2 else 99,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert counting_store.reads == {3: 1, 99: 1}  # one read per id, the unknown one included
    assert len(results) == 16
    assert sum(user is None for user in results) == 8  # id 99 is unknown, cached as None
    assert service.get_user(99) is None
    assert counting_store.reads == {3: 1, 99: 1}


@pytest.mark.parametrize("offload", [True, False])
def test_concurrent_tasks_missing_one_id_read_the_store_once(
    counting_store: CountingStore, offload: bool
) -> None:
    counting_store.delay_seconds = 0.01
    service = UserDataService(counting_store, LRUCache(max_size=10), offload_reads=offload)

    async def scenario() -> list[User | None]:
        return await asyncio.gather(*(service.get_user_async(7) for _ in range(20)))

    users = asyncio.run(scenario())
    assert counting_store.reads == {7: 1}
    assert all(user == users[0] for user in users)
    assert users[0] is not None
