"""Fixed-capacity, thread-safe collections that evict instead of growing: list, dict, metrics."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import ItemsView, Iterable, Iterator, KeysView, MutableMapping, ValuesView
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypedDict, TypeVar, cast, overload

from memsafe._checks import _check_choice, _check_lock, _check_positive_int
from memsafe._types import K, T, V

E = TypeVar("E")
"""Element type of a BoundedList."""

Policy = Literal["lru", "fifo"]
POLICIES: Final[tuple[str, ...]] = ("lru", "fifo")
DEFAULT_MAX_SAMPLES_PER_METRIC: Final = 1000
DEFAULT_MAX_METRICS: Final = 100
_MISSING: Final = object()


class BoundedListStats(TypedDict):
    """Snapshot of a BoundedList: items held, capacity and items dropped at capacity."""

    size: int
    max_size: int
    dropped: int


class BoundedDictStats(TypedDict):
    """Snapshot of a BoundedDict: entries held, capacity, entries evicted and the policy."""

    size: int
    max_size: int
    dropped: int
    policy: str


class MetricsStats(TypedDict):
    """Snapshot of a MetricsCollector.

    ``size``/``max_size``/``dropped`` count metric *names* (``dropped`` = names evicted to make
    room); ``samples``/``dropped_samples`` count values (dropped = pushed out of a full ring or
    lost with an evicted name).
    """

    size: int
    max_size: int
    dropped: int
    samples: int
    max_samples_per_metric: int
    dropped_samples: int


class _Capacity:
    """What every bounded container here shares: a fixed capacity, a drop count, a lock.

    Thread safety: ``dropped`` is read under the container's lock.
    """

    __slots__ = ("_dropped", "_lock", "_max_size")

    def __init__(self, max_size: int, lock: AbstractContextManager[Any] | None) -> None:
        self._max_size = _check_positive_int("max_size", max_size)
        self._dropped = 0
        self._lock: AbstractContextManager[Any] = (
            threading.RLock() if lock is None else _check_lock("lock", lock)
        )

    @property
    def max_size(self) -> int:
        """The capacity fixed at construction."""
        return self._max_size

    @property
    def dropped(self) -> int:
        """How many items were evicted because the container was full."""
        with self._lock:
            return self._dropped


class BoundedList(_Capacity, Generic[E]):
    """Append-only list of at most ``max_size`` items; appending to a full list drops the oldest.

    Backed by ``collections.deque(maxlen=max_size)``, so append is O(1) and never reallocates
    beyond the bound. ``dropped`` counts items pushed out at capacity (``clear()`` is not a drop).

    Thread safety: every public method holds the list's lock; iteration walks a snapshot.
    """

    __slots__ = ("_items",)

    def __init__(self, max_size: int, *, lock: AbstractContextManager[Any] | None = None) -> None:
        super().__init__(max_size, lock)
        self._items: deque[E] = deque(maxlen=self._max_size)

    def append(self, item: E) -> None:
        """Add ``item`` at the end, dropping the oldest item when full."""
        with self._lock:
            if len(self._items) == self._max_size:
                self._dropped += 1
            self._items.append(item)

    def extend(self, items: Iterable[E]) -> None:
        """Append every item in order; only the last ``max_size`` of all items survive.

        The iterable is consumed before the lock is taken, so a generator that touches this list
        cannot deadlock or observe a half-applied extend.
        """
        new = list(items)
        with self._lock:
            overflow = len(self._items) + len(new) - self._max_size
            if overflow > 0:
                self._dropped += overflow
            self._items.extend(new)

    def snapshot(self) -> list[E]:
        """A copy of the items, oldest first."""
        with self._lock:
            return list(self._items)

    def clear(self) -> int:
        """Remove every item (not counted as dropped) and return how many were removed."""
        with self._lock:
            removed = len(self._items)
            self._items.clear()
            return removed

    def stats(self) -> BoundedListStats:
        """Size, capacity and drop count, read together under the lock."""
        with self._lock:
            return {"size": len(self._items), "max_size": self._max_size, "dropped": self._dropped}

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self) -> Iterator[E]:
        return iter(self.snapshot())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_size={self._max_size}, size={len(self)})"


class BoundedDict(_Capacity, MutableMapping[K, V]):
    """Mapping of at most ``max_size`` entries that evicts by ``policy`` when a new key arrives.

    ``policy="lru"``: reads (``d[k]``, ``get``) and writes refresh a key; the least recently used
    key goes first. ``policy="fifo"``: order is first insertion; overwriting a key keeps its
    place and reads never reorder. ``key in d`` never reorders. ``dropped`` counts entries
    evicted at capacity (explicit deletes, ``pop`` and ``clear()`` are not drops).

    A full ``MutableMapping``; ``keys()``, ``values()``, ``items()`` and iteration work on a
    snapshot, so they never raise "mutated during iteration" while other threads write.

    Thread safety: every public method holds the dict's lock, so each call is atomic, except
    ``update()``, which stores its items one locked ``__setitem__`` at a time.
    """

    __slots__ = ("_data", "_is_lru", "_policy")

    def __init__(
        self,
        max_size: int,
        policy: Policy = "lru",
        *,
        lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        super().__init__(max_size, lock)
        self._policy = cast(Policy, _check_choice("policy", policy, POLICIES))
        self._is_lru = policy == "lru"
        self._data: OrderedDict[K, V] = OrderedDict()

    @property
    def policy(self) -> Policy:
        """``"lru"`` or ``"fifo"``."""
        return self._policy

    def _read(self, key: K) -> V:
        """The value for ``key``, refreshed under LRU; KeyError if absent; lock held."""
        value = self._data[key]
        if self._is_lru:
            self._data.move_to_end(key)
        return value

    def __getitem__(self, key: K) -> V:
        with self._lock:
            return self._read(key)

    @overload
    def get(self, key: K, /) -> V | None: ...

    @overload
    def get(self, key: K, default: V, /) -> V: ...

    @overload
    def get(self, key: K, default: T, /) -> V | T: ...

    def get(self, key: K, default: object = None, /) -> object:
        """The value for ``key`` (refreshing it under LRU), or ``default`` when absent."""
        with self._lock:
            try:
                return self._read(key)
            except KeyError:
                return default

    def __setitem__(self, key: K, value: V) -> None:
        with self._lock:
            self._put(key, value)

    def _put(self, key: K, value: V) -> None:
        """Insert or replace, evicting one entry if a new key meets a full dict; lock held."""
        data = self._data
        if key in data:
            data[key] = value
            if self._is_lru:
                data.move_to_end(key)
            return
        if len(data) >= self._max_size:
            data.popitem(last=False)
            self._dropped += 1
        data[key] = value

    @overload
    def pop(self, key: K, /) -> V: ...

    @overload
    def pop(self, key: K, default: V, /) -> V: ...

    @overload
    def pop(self, key: K, default: T, /) -> V | T: ...

    def pop(self, key: K, default: object = _MISSING, /) -> object:
        """Remove ``key`` and return its value, or ``default``; KeyError if absent without one."""
        with self._lock:
            if default is _MISSING:
                return self._data.pop(key)
            return self._data.pop(key, default)

    def popitem(self) -> tuple[K, V]:
        """Remove and return the entry that would be evicted next; KeyError when empty."""
        with self._lock:
            if not self._data:
                msg = "popitem(): BoundedDict is empty"
                raise KeyError(msg)
            return self._data.popitem(last=False)

    @overload
    def setdefault(self: BoundedDict[K, T | None], key: K, default: None = None, /) -> T | None: ...

    @overload
    def setdefault(self, key: K, default: V, /) -> V: ...

    def setdefault(self, key: K, default: object = None, /) -> object:
        """Return ``d[key]`` (refreshing it under LRU), or insert ``default`` and return it."""
        with self._lock:
            if key in self._data:
                return self._read(key)
            self._put(key, cast("V", default))
            return default

    def __delitem__(self, key: K) -> None:
        with self._lock:
            del self._data[key]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __iter__(self) -> Iterator[K]:
        with self._lock:
            keys = list(self._data)
        return iter(keys)

    def keys(self) -> KeysView[K]:
        """A view of a snapshot of the keys, oldest (next to evict) first."""
        with self._lock:
            return dict(self._data).keys()

    def values(self) -> ValuesView[V]:
        """A view of a snapshot of the values, oldest first."""
        with self._lock:
            return dict(self._data).values()

    def items(self) -> ItemsView[K, V]:
        """A view of a snapshot of the ``(key, value)`` pairs, oldest first."""
        with self._lock:
            return dict(self._data).items()

    def clear(self) -> None:
        """Remove every entry at once (not counted as dropped)."""
        with self._lock:
            self._data.clear()

    def stats(self) -> BoundedDictStats:
        """Size, capacity, eviction count and policy, read together under the lock."""
        with self._lock:
            return {
                "size": len(self._data),
                "max_size": self._max_size,
                "dropped": self._dropped,
                "policy": self._policy,
            }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(max_size={self._max_size}, policy={self._policy!r}, "
            f"size={len(self)})"
        )


@dataclass(frozen=True, slots=True)
class MetricSummary:
    """Statistics over the samples a metric currently holds (its last ``max_samples``).

    Percentiles interpolate linearly between closest ranks, like ``statistics.quantiles(...,
    method="inclusive")`` and numpy's default.

    Thread safety: immutable (a frozen dataclass), so safe to share across threads.
    """

    count: int
    min: float
    max: float
    mean: float
    p50: float
    p95: float
    p99: float


def _percentile(ordered: list[float], fraction: float) -> float:
    """Linear-interpolated percentile of an ascending, non-empty list (``fraction`` in 0..1)."""
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class MetricsCollector:
    """Named streams of numbers, each a ring of its last ``max_samples_per_metric`` values.

    At most ``max_metrics`` names are kept. Recording a *new* name when full evicts the name
    that was least recently recorded (its samples go with it), rather than rejecting the new
    one: a service that starts measuring something new cares about the new metric more than
    about one nobody has recorded in a while. ``stats()["dropped"]`` counts evicted names and
    ``stats()["dropped_samples"]`` counts values lost to a full ring or to eviction.

    Thread safety: every public method holds the collector's lock; ``summary()`` copies the
    samples under it and sorts them after releasing it.
    """

    __slots__ = (
        "_dropped",
        "_dropped_samples",
        "_lock",
        "_max_metrics",
        "_max_samples",
        "_metrics",
    )

    def __init__(
        self,
        max_samples_per_metric: int = DEFAULT_MAX_SAMPLES_PER_METRIC,
        max_metrics: int = DEFAULT_MAX_METRICS,
        *,
        lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        self._max_samples = _check_positive_int("max_samples_per_metric", max_samples_per_metric)
        self._max_metrics = _check_positive_int("max_metrics", max_metrics)
        self._metrics: OrderedDict[str, deque[float]] = OrderedDict()
        self._dropped = 0
        self._dropped_samples = 0
        self._lock: AbstractContextManager[Any] = (
            threading.RLock() if lock is None else _check_lock("lock", lock)
        )

    @property
    def max_samples_per_metric(self) -> int:
        """Ring size per metric."""
        return self._max_samples

    @property
    def max_metrics(self) -> int:
        """How many metric names are kept at most."""
        return self._max_metrics

    def record(self, name: str, value: float) -> None:
        """Append ``value`` to metric ``name``, creating (and maybe evicting for) it.

        Raises:
            TypeError: ``name`` is not a str or ``value`` is not a real number.
            ValueError: ``value`` is NaN or infinite (it would poison the mean and percentiles).
        """
        if not isinstance(name, str):
            msg = f"name must be a str, got {name!r} ({type(name).__name__})"
            raise TypeError(msg)
        if not isinstance(value, int | float):
            msg = f"value must be an int or float, got {value!r} ({type(value).__name__})"
            raise TypeError(msg)
        if not math.isfinite(value):
            msg = f"value must be finite (not NaN or infinity), got {value!r} for metric {name!r}"
            raise ValueError(msg)
        with self._lock:
            metrics = self._metrics
            samples = metrics.get(name)
            if samples is None:
                if len(metrics) >= self._max_metrics:
                    _, evicted = metrics.popitem(last=False)
                    self._dropped += 1
                    self._dropped_samples += len(evicted)
                samples = metrics[name] = deque(maxlen=self._max_samples)
            else:
                metrics.move_to_end(name)
                if len(samples) == self._max_samples:
                    self._dropped_samples += 1
            samples.append(float(value))

    def summary(self, name: str) -> MetricSummary | None:
        """Count, min, max, mean, p50, p95 and p99 of ``name``'s samples; None if unknown."""
        with self._lock:
            samples = self._metrics.get(name)
            if samples is None:
                return None
            ordered = list(samples)
        ordered.sort()
        count = len(ordered)
        return MetricSummary(
            count=count,
            min=ordered[0],
            max=ordered[-1],
            mean=math.fsum(ordered) / count,
            p50=_percentile(ordered, 0.50),
            p95=_percentile(ordered, 0.95),
            p99=_percentile(ordered, 0.99),
        )

    def summaries(self) -> dict[str, MetricSummary]:
        """A summary for every metric currently held, least recently recorded first."""
        out: dict[str, MetricSummary] = {}
        for name in self.names():
            summary = self.summary(name)
            if summary is not None:  # evicted between names() and summary()
                out[name] = summary
        return out

    def names(self) -> list[str]:
        """Metric names held, least recently recorded (next to evict) first."""
        with self._lock:
            return list(self._metrics)

    def clear(self) -> int:
        """Forget every metric (not counted as dropped); return how many names were removed."""
        with self._lock:
            removed = len(self._metrics)
            self._metrics.clear()
            return removed

    def stats(self) -> MetricsStats:
        """Counts of names and samples held and dropped, read together under the lock."""
        with self._lock:
            return {
                "size": len(self._metrics),
                "max_size": self._max_metrics,
                "dropped": self._dropped,
                "samples": sum(len(s) for s in self._metrics.values()),
                "max_samples_per_metric": self._max_samples,
                "dropped_samples": self._dropped_samples,
            }

    def __len__(self) -> int:
        with self._lock:
            return len(self._metrics)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(max_samples_per_metric={self._max_samples}, "
            f"max_metrics={self._max_metrics}, metrics={len(self)})"
        )
