"""UserDataService: reads through the LRU cache, unknown ids cached too, stats exposed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.services.users import UserDataService
from app.store import UserStore, ensure_seeded
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
