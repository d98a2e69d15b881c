"""`cached`: memoize sync and async functions in an LRUCache, one call per missing key."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Hashable
from typing import Any, Final, TypeVar, cast

from memsafe._checks import _check_callable, _check_ttl
from memsafe.cache import LRUCache

F = TypeVar("F", bound=Callable[..., Any])

_MISSING: Final = object()


class _Flight:
    """One in-progress call of a sync function, shared by the threads that wait for it."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: object = None
        self.error: BaseException | None = None


def _default_key(qualname: str) -> Callable[..., Hashable]:
    def key(*args: Any, **kwargs: Any) -> Hashable:
        if kwargs:
            return (qualname, args, tuple(sorted(kwargs.items())))
        return (qualname, args)

    return key


def cached(
    cache: LRUCache[Any, Any],
    *,
    key: Callable[..., Hashable] | None = None,
    ttl_seconds: float | None = None,
) -> Callable[[F], F]:
    """Memoize a sync or async function in `cache`, with single flight per key.

    The cache key is `key(*args, **kwargs)`, by default `(qualname, args, sorted kwargs)`, so
    several functions can share one cache. `ttl_seconds` overrides the cache's TTL for values
    stored by this function. Concurrent misses on one key call the function once: other
    callers (threads for a sync function, tasks on the same event loop for an async one) wait
    for that call and get its value or its exception. Exceptions are never cached: the next
    call after a failure calls the function again. An async call runs in its own task, so a
    cancelled caller does not cancel the call the others wait for.

    Thread safety: the in-flight table has its own lock; the function runs outside every lock.
    """
    if not isinstance(cache, LRUCache):
        msg = f"cache must be a memsafe LRUCache, got {cache!r}"
        raise TypeError(msg)
    _check_callable("key", key, optional=True)
    ttl = _check_ttl("ttl_seconds", ttl_seconds)

    def decorate(fn: F) -> F:
        if not callable(fn):
            msg = f"cached() decorates a callable, got {fn!r}"
            raise TypeError(msg)
        make_key = key if key is not None else _default_key(fn.__qualname__)
        if inspect.iscoroutinefunction(fn):
            return cast(F, _async_wrapper(fn, cache, make_key, ttl))
        return cast(F, _sync_wrapper(fn, cache, make_key, ttl))

    return decorate


def _sync_wrapper(
    fn: Callable[..., Any],
    cache: LRUCache[Any, Any],
    make_key: Callable[..., Hashable],
    ttl: float | None,
) -> Callable[..., Any]:
    lock = threading.Lock()
    flights: dict[Hashable, _Flight] = {}

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        k = make_key(*args, **kwargs)
        value = cache.get(k, _MISSING)
        if value is not _MISSING:
            return value
        with lock:
            flight = flights.get(k)
            is_leader = flight is None
            if flight is None:
                # A leader may have stored the value and left between our miss and this lock:
                # look again (without counting a second miss) before calling fn.
                value = cache._peek(k, _MISSING)
                if value is not _MISSING:
                    return value
                flight = flights[k] = _Flight()
        if not is_leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            value = fn(*args, **kwargs)
            cache.set(k, value, ttl)
            flight.value = value
            return value
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with lock:
                del flights[k]
            flight.done.set()

    return wrapper


def _async_wrapper(
    fn: Callable[..., Any],
    cache: LRUCache[Any, Any],
    make_key: Callable[..., Hashable],
    ttl: float | None,
) -> Callable[..., Any]:
    # Keyed by (loop, key): a task belongs to one event loop and can only be awaited there.
    # Within one loop no await separates the cache miss from the table lookup, and a task
    # stores its value before it is done, so no second call starts while one is in flight.
    tasks: dict[tuple[asyncio.AbstractEventLoop, Hashable], asyncio.Task[Any]] = {}
    lock = threading.Lock()

    async def load(k: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        value = await fn(*args, **kwargs)
        cache.set(k, value, ttl)
        return value

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        k = make_key(*args, **kwargs)
        value = cache.get(k, _MISSING)
        if value is not _MISSING:
            return value
        loop = asyncio.get_running_loop()
        slot = (loop, k)
        with lock:
            task = tasks.get(slot)
            # A done task is still listed until its done-callback runs (call_soon): a failure
            # must not reach a caller arriving in between, so such a caller starts a new call.
            if task is None or task.done():
                task = loop.create_task(load(k, args, kwargs))
                tasks[slot] = task

                def leave(done: asyncio.Task[Any], slot: Any = slot) -> None:
                    with lock:
                        if tasks.get(slot) is done:
                            del tasks[slot]

                task.add_done_callback(leave)
        return await asyncio.shield(task)

    return wrapper
