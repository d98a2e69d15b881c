"""InvalidationListener: up/down callbacks, backoff reconnects, batches handed over in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from memsafe.invalidation import Invalidation, InvalidationListener


def test_batches_reach_the_consumer_and_a_failure_reconnects() -> None:
    attempts: list[int] = []
    events: list[str] = []
    seen: list[Invalidation] = []

    async def subscribe() -> AsyncIterator[Sequence[Invalidation]]:
        attempts.append(1)
        yield []
        yield [Invalidation(len(attempts), 1)]
        if len(attempts) == 1:
            raise ConnectionError("server went away")
        await asyncio.sleep(3600)

    async def main() -> InvalidationListener:
        listener = InvalidationListener(
            subscribe,
            seen.extend,
            on_up=lambda: events.append("up"),
            on_down=lambda: events.append("down"),
            reconnect_min_seconds=0.01,
            reconnect_max_seconds=0.02,
        )
        listener.start()
        for _ in range(200):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.01)
        assert listener.is_connected
        with pytest.raises(RuntimeError, match="already running"):
            listener.start()
        await listener.stop()
        assert not listener.is_connected
        return listener

    listener = asyncio.run(main())
    assert seen == [Invalidation(1, 1), Invalidation(2, 1)]
    assert events == ["up", "down", "up", "down"]
    stats = listener.stats()
    assert stats["connects"] == 2
    assert stats["failures"] == 1
    assert stats["received"] == 2
    assert stats["last_error"] == "ConnectionError: server went away"


def test_a_channel_that_never_connects_stays_down_with_growing_backoff() -> None:
    async def subscribe() -> AsyncIterator[Sequence[Invalidation]]:
        raise OSError("refused")
        yield []  # pragma: no cover  # makes this an async generator

    async def main() -> dict[str, object]:
        listener = InvalidationListener(
            subscribe, lambda _b: None, reconnect_min_seconds=0.01, reconnect_max_seconds=0.04
        )
        listener.start()
        await asyncio.sleep(0.2)
        stats = dict(listener.stats())
        await listener.stop()
        return stats

    stats = asyncio.run(main())
    assert stats["is_connected"] is False
    assert stats["connects"] == 0
    # backoff 0.01, 0.02, 0.04, 0.04 ... (x0.5-1 jitter): a handful of tries in 0.2 s, not 20
    assert 3 <= int(str(stats["failures"])) <= 15
    assert float(str(stats["down_seconds"])) > 0


def test_a_generator_that_ends_counts_as_down() -> None:
    calls: list[int] = []

    async def subscribe() -> AsyncIterator[Sequence[Invalidation]]:
        calls.append(1)
        yield []

    async def main() -> str | None:
        listener = InvalidationListener(subscribe, lambda _b: None, reconnect_min_seconds=0.01)
        listener.start()
        await asyncio.sleep(0.05)
        await listener.stop()
        return listener.stats()["last_error"]

    assert asyncio.run(main()) == "channel closed"
    assert len(calls) >= 2


def test_backoff_bounds_are_checked() -> None:
    async def subscribe() -> AsyncIterator[Sequence[Invalidation]]:
        yield []  # pragma: no cover

    with pytest.raises(ValueError, match="reconnect_min_seconds"):
        InvalidationListener(
            subscribe, lambda _b: None, reconnect_min_seconds=2, reconnect_max_seconds=1
        )
