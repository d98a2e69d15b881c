"""InvalidationListener: keep an invalidation channel subscribed, with backoff; say when down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TypedDict

logger = logging.getLogger(__name__)

DEFAULT_RECONNECT_MIN_SECONDS = 0.1
DEFAULT_RECONNECT_MAX_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Invalidation:
    """One change seen on the channel: `key` now has `version` (None key: drop everything).

    Thread safety: immutable.
    """

    key: Hashable | None
    version: int = 0


Subscribe = Callable[[], AsyncIterator[Sequence[Invalidation]]]


class ListenerStats(TypedDict):
    """What /health shows about the channel."""

    is_connected: bool
    connects: int
    failures: int
    received: int
    last_error: str | None
    down_seconds: float


class InvalidationListener:
    """Run `subscribe()` in a loop and hand every batch it yields to `on_invalidate`.

    `subscribe` is an async generator supplied by an adapter (PostgreSQL LISTEN, Redis
    pub/sub, a polled change log): it connects, yields one (possibly empty) batch as soon as
    it listens, then one batch per change. The first yield marks the channel up and calls
    `on_up`; an exception or the end of the generator marks it down, calls `on_down` and
    reconnects after an exponential backoff with jitter, capped at `reconnect_max_seconds`.
    Nothing is queued: each batch is applied before the next is read, so a slow consumer
    slows the channel instead of growing memory.

    Thread safety: asyncio only; all methods run on the loop that called start().
    """

    def __init__(
        self,
        subscribe: Subscribe,
        on_invalidate: Callable[[Sequence[Invalidation]], None],
        *,
        on_up: Callable[[], None] | None = None,
        on_down: Callable[[], None] | None = None,
        reconnect_min_seconds: float = DEFAULT_RECONNECT_MIN_SECONDS,
        reconnect_max_seconds: float = DEFAULT_RECONNECT_MAX_SECONDS,
        name: str = "invalidation",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < reconnect_min_seconds <= reconnect_max_seconds:
            msg = (
                "reconnect_min_seconds must be > 0 and <= reconnect_max_seconds, got "
                f"{reconnect_min_seconds!r} and {reconnect_max_seconds!r}"
            )
            raise ValueError(msg)
        self._subscribe = subscribe
        self._on_invalidate = on_invalidate
        self._on_up = on_up
        self._on_down = on_down
        self._min = reconnect_min_seconds
        self._max = reconnect_max_seconds
        self.name = name
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self._connects = 0
        self._failures = 0
        self._received = 0
        self._last_error: str | None = None
        self._down_since: float | None = clock()

    @property
    def is_connected(self) -> bool:
        """True while the channel is subscribed and delivering."""
        return self._connected

    def start(self) -> None:
        """Start the listening task on the running loop (once)."""
        if self._task is not None and not self._task.done():
            msg = f"listener {self.name!r} is already running; allowed: start() once"
            raise RuntimeError(msg)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Cancel the task and wait for it; the channel counts as down afterwards."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._mark_down(None)

    async def _run(self) -> None:
        delay = self._min
        while True:
            try:
                async for batch in self._subscribe():
                    if not self._connected:
                        self._mark_up()
                        delay = self._min
                    if batch:
                        self._received += len(batch)
                        self._on_invalidate(batch)
                error = "channel closed"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any adapter failure: log, back off, reconnect
                error = f"{type(exc).__name__}: {exc}"
            self._failures += 1
            self._mark_down(error)
            logger.warning("%s channel down (%s); reconnecting in %.2fs", self.name, error, delay)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jitter: no thundering herd
            delay = min(self._max, delay * 2)

    def _mark_up(self) -> None:
        self._connected = True
        self._connects += 1
        self._down_since = None
        if self._connects > 1:
            logger.info("%s channel reconnected", self.name)
        if self._on_up is not None:
            self._on_up()

    def _mark_down(self, error: str | None) -> None:
        was_connected = self._connected
        self._connected = False
        if error is not None:
            self._last_error = error
        if self._down_since is None:
            self._down_since = self._clock()
        if was_connected and self._on_down is not None:
            self._on_down()

    def stats(self) -> ListenerStats:
        """Connection state and counters."""
        down = 0.0 if self._down_since is None else self._clock() - self._down_since
        return ListenerStats(
            is_connected=self._connected,
            connects=self._connects,
            failures=self._failures,
            received=self._received,
            last_error=self._last_error,
            down_seconds=round(down, 3),
        )
