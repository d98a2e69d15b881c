"""RedisTier: Render Key Value (Valkey/Redis) as memsafe's SharedTier, failing soft."""

from __future__ import annotations

import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypedDict

import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# Values are stored as b"<version>|<payload>". The script writes only when the stored copy is
# older, so a reader that loaded before a write can never put the old row back over it.
# Ref: https://redis.io/docs/latest/develop/interact/programmability/eval-intro/
_SET_IF_NEWER = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local v = tonumber(string.match(cur, '^(%d+)|'))
  if v and v >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


class RedisTierStats(TypedDict):
    """State and counters of the shared tier."""

    is_available: bool
    errors: int
    last_error: str | None
    pending_writes: int
    dropped_writes: int


class RedisTier:
    """SharedTier over redis-py's asyncio client, with a bounded blocking connection pool.

    Every call has `timeout_seconds`; a failure marks the tier unavailable for a backoff that
    doubles up to `retry_max_seconds`, during which gets are misses without a network call.
    So a Key Value outage costs the database some extra reads, never a 5xx or a slow request.
    Writes that could not reach the server (the newest `max_pending` keys) are replayed,
    newer-only, when it answers again, so a partition cannot leave an old row there until
    its TTL; beyond that bound the oldest are dropped and counted.

    Thread safety: asyncio only (one event loop per worker).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "users:",
        ttl_seconds: int = 300,
        timeout_seconds: float = 0.25,
        max_connections: int = 8,
        retry_min_seconds: float = 0.1,
        retry_max_seconds: float = 5.0,
        max_pending: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_seconds,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
        )
        self.client: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self._script = self.client.register_script(_SET_IF_NEWER)
        self._clock = clock
        self._retry_min = retry_min_seconds
        self._retry_max = retry_max_seconds
        self._delay = retry_min_seconds
        self._retry_at = 0.0
        self._available = True
        self._errors = 0
        self._last_error: str | None = None
        self._max_pending = max_pending
        self._pending: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self._dropped = 0

    @property
    def is_available(self) -> bool:
        """False after a failure until the backoff has passed (then one call probes it)."""
        return self._available or self._clock() >= self._retry_at

    def _failed(self, exc: BaseException) -> None:
        self._errors += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        if self._available:
            logger.warning("key value tier unavailable (%s); reads go to the store", exc)
        else:
            self._delay = min(self._retry_max, self._delay * 2)
        self._available = False
        self._retry_at = self._clock() + self._delay

    def _succeeded(self) -> None:
        if not self._available:
            logger.info("key value tier is back")
        self._available = True
        self._delay = self._retry_min

    async def _call(self, make: Callable[[], Any]) -> Any:
        if not self.is_available:
            return None
        try:
            result = await make()
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed(exc)
            return None
        self._succeeded()
        return result

    async def get(self, key: str) -> tuple[int, bytes] | None:
        """(version, payload) stored under `key`, or None (absent or unreachable)."""
        raw = await self._call(lambda: self.client.get(self.prefix + key))
        if not isinstance(raw, bytes):
            return None
        version, sep, payload = raw.partition(b"|")
        if not sep or not version.isdigit():
            return None
        return int(version), payload

    async def set_if_newer(self, key: str, version: int, data: bytes) -> None:
        """Store `data` at `version` unless a newer copy is there; TTL set on the server."""
        if await self._call(lambda: self._set(key, version, data)) is None:
            self._remember(key, version, data)
        elif self._pending:
            await self._replay()

    async def _set(self, key: str, version: int, data: bytes) -> Any:
        value = str(version).encode() + b"|" + data
        return await self._script(keys=[self.prefix + key], args=[version, value, self.ttl_seconds])

    def _remember(self, key: str, version: int, data: bytes) -> None:
        old = self._pending.pop(key, None)
        if old is not None and old[0] > version:
            version, data = old
        self._pending[key] = (version, data)
        if len(self._pending) > self._max_pending:
            self._pending.popitem(last=False)
            self._dropped += 1

    async def _replay(self) -> None:
        while self._pending:
            key, (version, data) = self._pending.popitem(last=False)
            result = await self._call(functools.partial(self._set, key, version, data))
            if result is None:
                self._remember(key, version, data)
                return

    async def ping(self) -> bool:
        """True when the server answers now (used by /health, bypassing the backoff)."""
        try:
            await self.client.ping()
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed(exc)
            return False
        self._succeeded()
        if self._pending:
            await self._replay()
        return True

    def stats(self) -> RedisTierStats:
        """Availability and error counters."""
        return RedisTierStats(
            is_available=self._available,
            errors=self._errors,
            last_error=self._last_error,
            pending_writes=len(self._pending),
            dropped_writes=self._dropped,
        )

    async def close(self) -> None:
        """Close the pool's connections."""
        await self.client.aclose(close_connection_pool=True)
