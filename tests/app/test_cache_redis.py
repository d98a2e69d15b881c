"""RedisTier against a real Redis: newer-only writes, TTL on the server, soft failure."""

from __future__ import annotations

import asyncio

import redis

from app.cache_redis import RedisTier
from tests.servers import redis_url, unique_name


def test_only_a_newer_version_replaces_the_stored_one() -> None:
    url, prefix = redis_url(), unique_name() + ":"

    async def main() -> list[tuple[int, bytes] | None]:
        tier = RedisTier(url, prefix=prefix, ttl_seconds=60)
        try:
            await tier.set_if_newer("1", 5, b"five")
            await tier.set_if_newer("1", 4, b"four")  # a late fill from before the write
            first = await tier.get("1")
            await tier.set_if_newer("1", 6, b"six")
            return [first, await tier.get("1"), await tier.get("2")]
        finally:
            await tier.close()

    assert asyncio.run(main()) == [(5, b"five"), (6, b"six"), None]
    client = redis.Redis.from_url(url)
    try:
        assert 0 < client.ttl(prefix + "1") <= 60  # the TTL lives on the server
        client.delete(prefix + "1")
    finally:
        client.close()


def test_an_unreachable_server_is_a_fast_miss_then_retried_after_backoff() -> None:
    now = [0.0]

    async def main() -> None:
        tier = RedisTier(
            "redis://127.0.0.1:1/0",
            timeout_seconds=0.2,
            retry_min_seconds=1.0,
            clock=lambda: now[0],
        )
        try:
            assert await tier.get("1") is None
            assert not tier.is_available
            assert tier.stats()["errors"] == 1
            await tier.set_if_newer("1", 1, b"x")  # skipped: inside the backoff
            assert tier.stats()["errors"] == 1
            now[0] = 1.5
            assert tier.is_available  # one probe allowed
            assert await tier.get("1") is None
            assert tier.stats()["errors"] == 2
            assert await tier.ping() is False
        finally:
            await tier.close()

    asyncio.run(main())


def test_writes_made_while_unreachable_are_replayed_newer_only(monkeypatch: object) -> None:
    url, prefix = redis_url(), unique_name() + ":"

    async def main() -> tuple[object, object, dict[str, object]]:
        tier = RedisTier(url, prefix=prefix, ttl_seconds=60, max_pending=2, retry_min_seconds=0.01)
        real_set = tier._set
        broken = [True]

        async def flaky_set(key: str, version: int, data: bytes) -> object:
            if broken[0]:
                raise redis.ConnectionError("partition")
            return await real_set(key, version, data)

        tier._set = flaky_set  # type: ignore[method-assign]  # the network edge of a unit test
        try:
            await tier.set_if_newer("1", 1, b"old")
            await asyncio.sleep(0.02)
            await tier.set_if_newer("1", 2, b"new")  # replaces the pending v1
            await asyncio.sleep(0.03)
            await tier.set_if_newer("2", 1, b"a")
            await asyncio.sleep(0.05)
            await tier.set_if_newer("3", 1, b"b")  # over max_pending: the oldest is dropped
            stats = dict(tier.stats())
            broken[0] = False
            await asyncio.sleep(0.2)
            assert await tier.ping()
            return await tier.get("2"), await tier.get("3"), stats
        finally:
            await tier.close()

    two, three, stats = asyncio.run(main())
    assert (stats["pending_writes"], stats["dropped_writes"]) == (2, 1)
    assert (two, three) == ((1, b"a"), (1, b"b"))
