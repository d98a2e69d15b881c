"""CoherentCache: single flight, versions and fences, degraded TTL, and the shared tier."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from memsafe.cache import LRUCache
from memsafe.coherent import CoherentCache
from memsafe.invalidation import Invalidation
from tests.conftest import FakeClock


class Source:
    """A fake store: versioned values, a gate to hold loads, a load counter."""

    def __init__(self) -> None:
        self.rows: dict[Hashable, tuple[int, str | None]] = {}
        self.loads = 0
        self.gate: asyncio.Event | None = None

    async def load(self, key: Hashable) -> tuple[int, str | None]:
        self.loads += 1
        row = self.rows.get(key, (0, None))
        if self.gate is not None:
            await self.gate.wait()
        return row


class Shared:
    """An in-memory SharedTier with the same set-if-newer rule as the Redis script."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[int, bytes]] = {}
        self.is_available = True

    async def get(self, key: str) -> tuple[int, bytes] | None:
        return self.data.get(key) if self.is_available else None

    async def set_if_newer(self, key: str, version: int, data: bytes) -> None:
        if self.is_available and self.data.get(key, (-1, b""))[0] < version:
            self.data[key] = (version, data)


async def _settle() -> None:
    for _ in range(5):  # let the started tasks reach their first real await
        await asyncio.sleep(0)


def _cache(
    source: Source, shared: Shared | None = None, clock: FakeClock | None = None
) -> CoherentCache[str | None]:
    local: LRUCache[object, object] = LRUCache(
        max_size=100, ttl_seconds=300, name="t", clock=clock or FakeClock()
    )
    cache: CoherentCache[str | None] = CoherentCache(
        local,
        source.load,
        shared=shared,
        encode=lambda v: (v or "").encode(),
        decode=lambda _k, _v, b: b.decode() or None,
        degraded_ttl_seconds=2.0,
    )
    cache.set_degraded(False)
    return cache


def test_hits_come_from_the_local_tier() -> None:
    source = Source()
    source.rows[1] = (5, "a")
    cache = _cache(source)

    async def main() -> None:
        assert await cache.get(1) == "a"
        assert await cache.get(1) == "a"

    asyncio.run(main())
    assert source.loads == 1
    stats = cache.stats()
    assert (stats["l1_hits"], stats["l1_misses"], stats["loads"]) == (1, 1, 1)


def test_concurrent_misses_share_one_load() -> None:
    source = Source()
    source.rows[1] = (1, "a")
    cache = _cache(source)

    async def main() -> list[str | None]:
        source.gate = asyncio.Event()
        readers = [asyncio.ensure_future(cache.get(1)) for _ in range(20)]
        await _settle()
        source.gate.set()
        return await asyncio.gather(*readers)

    assert asyncio.run(main()) == ["a"] * 20
    assert source.loads == 1
    assert cache.stats()["joined_loads"] == 19


def test_a_load_that_started_before_a_write_is_not_cached() -> None:
    source = Source()
    source.rows[1] = (1, "old")
    cache = _cache(source)

    async def main() -> tuple[str | None, str | None]:
        source.gate = asyncio.Event()
        early = asyncio.ensure_future(cache.get(1))
        await _settle()
        source.rows[1] = (2, "new")
        await cache.put(1, 2, "new")  # the write lands while the old read is in flight
        source.gate.set()
        return await early, await cache.get(1)

    early, after = asyncio.run(main())
    assert early == "old"  # its own caller started before the write
    assert after == "new"  # never the old row afterwards (read-your-writes)
    assert cache.stats()["discarded_fills"] == 1


def test_an_invalidation_drops_the_entry_and_fences_older_copies() -> None:
    source = Source()
    shared = Shared()
    source.rows[1] = (1, "old")
    cache = _cache(source, shared)

    async def main() -> str | None:
        assert await cache.get(1) == "old"
        source.rows[1] = (2, "new")  # another process wrote; its shared write is late
        cache.apply([Invalidation(1, 2)])
        return await cache.get(1)

    assert asyncio.run(main()) == "new"
    stats = cache.stats()
    assert (stats["invalidations"], stats["l2_stale"]) == (1, 1)
    assert shared.data["1"] == (2, b"new")


def test_the_shared_tier_serves_a_cold_process() -> None:
    source = Source()
    shared = Shared()
    source.rows[1] = (3, "a")
    warm, cold = _cache(source, shared), _cache(source, shared)

    async def main() -> None:
        assert await warm.get(1) == "a"
        assert await cold.get(1) == "a"

    asyncio.run(main())
    assert source.loads == 1
    assert cold.stats()["l2_hits"] == 1
    assert cold.stats()["l2_hit_rate"] == 1.0
    assert warm.stats()["l2_misses"] == 1


def test_an_unavailable_shared_tier_falls_through_to_the_loader() -> None:
    source = Source()
    shared = Shared()
    shared.is_available = False
    source.rows[1] = (1, "a")
    cache = _cache(source, shared)
    assert asyncio.run(cache.get(1)) == "a"
    assert source.loads == 1
    assert shared.data == {}


def test_degraded_entries_expire_after_the_degraded_ttl() -> None:
    clock = FakeClock()
    source = Source()
    source.rows[1] = (1, "a")
    cache = _cache(source, clock=clock)
    cache.set_degraded(True)
    assert cache.is_degraded

    async def main() -> None:
        await cache.get(1)
        clock.advance(1.0)
        await cache.get(1)
        clock.advance(1.5)
        await cache.get(1)

    asyncio.run(main())
    assert source.loads == 2


def test_a_channel_change_clears_the_local_tier() -> None:
    source = Source()
    source.rows[1] = (1, "a")
    cache = _cache(source)

    async def main() -> None:
        await cache.get(1)
        cache.set_degraded(True)
        await cache.get(1)
        cache.apply([Invalidation(None)])  # the source lost track: drop everything
        await cache.get(1)

    asyncio.run(main())
    assert source.loads == 3


def test_a_cancelled_leader_does_not_fail_the_callers_that_joined() -> None:
    source = Source()
    source.rows[1] = (1, "a")
    cache = _cache(source)

    async def main() -> list[str | None]:
        source.gate = asyncio.Event()
        leader = asyncio.ensure_future(cache.get(1))
        followers = [asyncio.ensure_future(cache.get(1)) for _ in range(3)]
        await _settle()
        leader.cancel()
        source.gate.set()
        return await asyncio.gather(*followers)

    assert asyncio.run(main()) == ["a", "a", "a"]
    assert source.loads == 2  # the cancelled load, then one retry for all three followers


def test_a_cancelled_follower_leaves_the_load_to_the_others() -> None:
    source = Source()
    source.rows[1] = (1, "a")
    cache = _cache(source)

    async def main() -> str | None:
        source.gate = asyncio.Event()
        leader = asyncio.ensure_future(cache.get(1))
        follower = asyncio.ensure_future(cache.get(1))
        await _settle()
        follower.cancel()
        source.gate.set()
        return await leader

    assert asyncio.run(main()) == "a"
    assert source.loads == 1


def test_a_failed_load_reaches_every_caller_and_is_not_cached() -> None:
    source = Source()
    cache = _cache(source)
    calls = 0

    async def failing(_key: Hashable) -> tuple[int, str | None]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise ConnectionError("store down")

    cache._loader = failing

    async def main() -> list[object]:
        results = await asyncio.gather(*(cache.get(1) for _ in range(3)), return_exceptions=True)
        return [type(r).__name__ for r in results]

    assert asyncio.run(main()) == ["ConnectionError"] * 3
    assert calls == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"shared": Shared()}, "encode and decode"), ({"degraded_ttl_seconds": 0}, "degraded_ttl")],
)
def test_bad_arguments_name_the_value(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CoherentCache(LRUCache(max_size=1), Source().load, **kwargs)  # type: ignore[arg-type]


def test_a_deleted_key_is_cached_again_after_its_invalidation() -> None:
    source = Source()
    source.rows[1] = (1, "a")
    cache = _cache(source)

    async def main() -> None:
        assert await cache.get(1) == "a"
        del source.rows[1]  # deleted elsewhere at version 2; the source now answers (0, None)
        cache.apply([Invalidation(1, 2)])
        assert await cache.get(1) is None
        assert await cache.get(1) is None

    asyncio.run(main())
    assert source.loads == 2  # the second read of the deleted key is a hit


def test_the_echo_of_an_own_write_keeps_the_fresh_entry() -> None:
    source = Source()
    source.rows[1] = (1, "a")
    cache = _cache(source)

    async def main() -> None:
        await cache.put(1, 2, "b")  # this process wrote version 2
        cache.apply([Invalidation(1, 2)])  # ... and hears its own notification
        assert await cache.get(1) == "b"
        cache.apply([Invalidation(1, 0)])  # an unversioned invalidation always drops
        assert await cache.get(1) == "a"

    asyncio.run(main())
    assert source.loads == 1
