"""memsafe.LRUCache against cachetools, an OrderedDict LRU and functools.lru_cache, interleaved.

Run: `.venv/bin/python -m benchmarks.bench_cache [--quick] [--rounds N]`.

Two parts. Speed: get-hit, set and mixed costs of every cache (memsafe's three policies, and
the lru policy with the default byte estimator on) against cachetools.TTLCache + Lock. Hit
ratio: every policy replays one recorded Zipf-plus-scan trace shaped like the app's load
(benchmarks/trace.py), against cachetools' LRU and theine's W-TinyLFU.

The machine is shared and its speed drifts, so every round times every cache once, in a
shuffled order, one after the other; each figure is the median over rounds, and each ratio is
the median of per-round ratios to cachetools.TTLCache + Lock (the anchor) measured in the same
round. Timings include the driver loop (the same for every cache), so ratios are conservative.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import gc
import itertools
import random
import statistics
import sys
import threading
import time
import tracemalloc
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cachetools
import theine

from benchmarks.bench_sizeof import print_estimator_cost
from benchmarks.targets import report_targets
from benchmarks.trace import TRACE_CACHE_SIZE, hit_ratios, record_trace
from memsafe.cache import LRUCache

ANCHOR = "cachetools.TTLCache+Lock"
BASELINE = "OrderedDict+Lock (TTL)"
MEMSAFE_TTL = "memsafe.LRUCache (TTL)"
TTL_SECONDS = 3600.0
WARM_SIZE = 10_000
ZIPF_KEYS = 100_000
ZIPF_CACHE_SIZE = 10_000
READ_FRACTION = 0.9
BYTES_ENTRIES = 100_000
MEMSAFE_POLICIES = ("lru", "slru", "tinylfu")


class _Cache:
    """What the drivers call: get(key) -> value | None and set(key, value)."""

    get: Callable[[Any], Any]
    set: Callable[[Any, Any], None]

    def lookups(self) -> tuple[int, int] | None:
        """(hits, misses) so far when the driver cannot see misses itself, else None."""
        return None


class _CachetoolsLocked(_Cache):
    def __init__(self, inner: cachetools.Cache[Any, Any]) -> None:
        self._inner = inner
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            return self._inner.get(key)

    def set(self, key: Any, value: Any) -> None:
        with self._lock:
            self._inner[key] = value


class _OrderedDictTTL(_Cache):
    """The hand-written baseline: OrderedDict + Lock, LRU with TTL."""

    def __init__(self, max_size: int, ttl_seconds: float) -> None:
        self._data: OrderedDict[Any, tuple[Any, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._max_size = max_size
        self._ttl = ttl_seconds

    def get(self, key: Any) -> Any:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry[1] <= time.monotonic():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return entry[0]

    def set(self, key: Any, value: Any) -> None:
        with self._lock:
            self._data[key] = (value, time.monotonic() + self._ttl)
            self._data.move_to_end(key)
            if len(self._data) > self._max_size:
                self._data.popitem(last=False)


class _Memsafe(_Cache):
    def __init__(
        self,
        max_size: int,
        ttl_seconds: float | None,
        policy: str = "lru",
        max_bytes: int | None = None,
    ) -> None:
        cache: LRUCache[Any, Any] = LRUCache(max_size, ttl_seconds, max_bytes, policy=policy)
        self.get = cache.get
        self.set = cache.set


class _Theine(_Cache):
    """theine's W-TinyLFU (a Rust core); its get returns (value, found)."""

    def __init__(self, max_size: int) -> None:
        cache: theine.Cache[Any, Any] = theine.Cache(max_size)
        get = cache.get
        self.get = lambda key: get(key)[0]
        self.set = cache.set


class _LRUCacheFunction(_Cache):
    """functools.lru_cache: get calls the memoized function; set calls it with a new key."""

    def __init__(self, max_size: int) -> None:
        @functools.lru_cache(maxsize=max_size)
        def load(key: Any) -> Any:
            return key

        self._load = load
        self.get = load
        self.set = lambda key, value: load(key)

    def lookups(self) -> tuple[int, int] | None:
        info = self._load.cache_info()
        return info.hits, info.misses


FACTORIES: dict[str, Callable[[int], _Cache]] = {
    MEMSAFE_TTL: lambda n: _Memsafe(n, TTL_SECONDS),
    "memsafe.LRUCache (no TTL)": lambda n: _Memsafe(n, None),
    "memsafe slru (TTL)": lambda n: _Memsafe(n, TTL_SECONDS, "slru"),
    "memsafe tinylfu (TTL)": lambda n: _Memsafe(n, TTL_SECONDS, "tinylfu"),
    # The default byte estimator on (max_bytes set high enough never to evict by bytes).
    "memsafe.LRUCache (TTL, bytes)": lambda n: _Memsafe(n, TTL_SECONDS, max_bytes=1 << 40),
    "theine (W-TinyLFU)": _Theine,
    ANCHOR: lambda n: _CachetoolsLocked(cachetools.TTLCache(n, TTL_SECONDS)),
    "cachetools.LRUCache+Lock": lambda n: _CachetoolsLocked(cachetools.LRUCache(n)),
    BASELINE: lambda n: _OrderedDictTTL(n, TTL_SECONDS),
    "functools.lru_cache": _LRUCacheFunction,
}


@dataclass
class _Row:
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, column: str, value: float) -> None:
        self.values.setdefault(column, []).append(value)

    def median(self, column: str) -> float:
        return statistics.median(self.values[column])


def _time_get_hit(cache: _Cache, keys: list[str], repeat: int) -> float:
    get = cache.get
    start = time.perf_counter_ns()
    for _ in range(repeat):
        for key in keys:
            get(key)
    return (time.perf_counter_ns() - start) / (repeat * len(keys))


def _time_set(cache: _Cache, batches: list[list[str]], state: dict[str, int]) -> float:
    # The cache is full of one batch; setting the other batch inserts only new keys, so every
    # set evicts. Batches alternate round after round.
    index = state["next"]
    state["next"] = 1 - index
    keys = batches[index]
    set_ = cache.set
    start = time.perf_counter_ns()
    for key in keys:
        set_(key, key)
    return (time.perf_counter_ns() - start) / len(keys)


def _mixed(cache: _Cache, ops: list[tuple[bool, str]]) -> tuple[int, int]:
    get = cache.get
    set_ = cache.set
    reads = hits = 0
    for is_read, key in ops:
        if is_read:
            reads += 1
            if get(key) is None:
                set_(key, key)  # read-through on a miss
            else:
                hits += 1
        else:
            set_(key, key)
    return reads, hits


def _time_mixed(cache: _Cache, ops: list[tuple[bool, str]], threads: int) -> tuple[float, float]:
    """Return (ops per second, hit rate) with `ops` split across `threads` threads."""
    before = cache.lookups()
    ops_per_s, hit_rate = _run_mixed(cache, ops, threads)
    after = cache.lookups()
    if before is not None and after is not None:  # every call reads through: count them all
        hits, misses = after[0] - before[0], after[1] - before[1]
        hit_rate = hits / (hits + misses)
    return ops_per_s, hit_rate


def _run_mixed(cache: _Cache, ops: list[tuple[bool, str]], threads: int) -> tuple[float, float]:
    if threads == 1:
        start = time.perf_counter_ns()
        reads, hits = _mixed(cache, ops)
        elapsed = time.perf_counter_ns() - start
        return len(ops) / (elapsed / 1e9), hits / reads
    chunks = [ops[i::threads] for i in range(threads)]
    results: list[tuple[int, int]] = []
    barrier = threading.Barrier(threads + 1)

    def work(chunk: list[tuple[bool, str]]) -> None:
        barrier.wait()
        results.append(_mixed(cache, chunk))

    workers = [threading.Thread(target=work, args=(chunk,)) for chunk in chunks]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter_ns()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter_ns() - start
    reads = sum(r for r, _ in results)
    hits = sum(h for _, h in results)
    return len(ops) / (elapsed / 1e9), hits / reads


def _zipf_ops(count: int, rng: random.Random) -> list[tuple[bool, str]]:
    cumulative = list(itertools.accumulate(1.0 / rank for rank in range(1, ZIPF_KEYS + 1)))
    total = cumulative[-1]
    names = [f"user:{i}" for i in range(ZIPF_KEYS)]
    ops = []
    for _ in range(count):
        rank = bisect.bisect_left(cumulative, rng.random() * total)
        ops.append((rng.random() < READ_FRACTION, names[min(rank, ZIPF_KEYS - 1)]))
    return ops


def _bytes_per_entry(name: str) -> float:
    keys = [f"key:{i}" for i in range(BYTES_ENTRIES)]
    value = object()  # one shared value: only the cache's own structures are measured
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache = FACTORIES[name](BYTES_ENTRIES)
    set_ = cache.set
    for key in keys:
        set_(key, value)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del cache
    return (after - before) / BYTES_ENTRIES


def _fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short run (fewer ops, 3 rounds)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 9, quick 3)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    get_repeat = 2 if args.quick else 5
    mixed_ops = 40_000 if args.quick else 200_000
    rng = random.Random(args.seed)
    names = list(FACTORIES)

    warm_keys = [f"item:{i}" for i in range(WARM_SIZE)]
    shuffled = warm_keys[:]
    rng.shuffle(shuffled)
    set_batches = [[f"a:{i}" for i in range(WARM_SIZE)], [f"b:{i}" for i in range(WARM_SIZE)]]
    ops = _zipf_ops(mixed_ops, rng)

    warm = {n: FACTORIES[n](WARM_SIZE) for n in names}
    full = {n: FACTORIES[n](WARM_SIZE) for n in names}
    # One cache per thread count, so the 1-thread hit rate is not disturbed by 4-thread runs.
    mixed = {(n, threads): FACTORIES[n](ZIPF_CACHE_SIZE) for n in names for threads in (1, 4)}
    set_state = {n: {"next": 1} for n in names}
    for n in names:
        for key in warm_keys:
            warm[n].set(key, key)
        for key in set_batches[0]:
            full[n].set(key, key)
        for threads in (1, 4):
            _mixed(mixed[n, threads], ops)  # warm up the mixed caches once

    rows = {n: _Row() for n in names}
    print(f"bench_cache: {rounds} rounds, interleaved in shuffled order; anchor = {ANCHOR}")
    gc.disable()
    try:
        for round_index in range(rounds):
            order = names[:]
            rng.shuffle(order)
            for n in order:
                rows[n].add("get", _time_get_hit(warm[n], shuffled, get_repeat))
            rng.shuffle(order)
            for n in order:
                rows[n].add("set", _time_set(full[n], set_batches, set_state[n]))
            for threads, column in ((1, "mixed1"), (4, "mixed4")):
                rng.shuffle(order)
                for n in order:
                    ops_per_s, hit_rate = _time_mixed(mixed[n, threads], ops, threads)
                    rows[n].add(column, ops_per_s)
                    rows[n].add(column + "_hit", hit_rate)
            print(f"  round {round_index + 1}/{rounds} done", flush=True)
    finally:
        gc.enable()

    def ratio(n: str, column: str, against: str = ANCHOR) -> float:
        # ns columns: cache / anchor (lower is better); ops/s columns: cache / anchor (speedup).
        mine = rows[n].values[column]
        theirs = rows[against].values[column]
        return statistics.median(a / b for a, b in zip(mine, theirs, strict=True))

    # tracemalloc sees only Python's allocations, not theine's Rust core: not comparable.
    bytes_per_entry = {n: _bytes_per_entry(n) for n in names if n != "theine (W-TinyLFU)"}

    header = (
        f"{'cache':<30}{'get-hit ns':>11}{'ratio':>7}{'set ns':>9}{'ratio':>7}"
        f"{'mix1 kop/s':>11}{'speedup':>8}{'hit%':>6}{'mix4 kop/s':>11}{'speedup':>8}"
        f"{'hit%':>6}{'B/entry':>8}"
    )
    print()
    print(header)
    print("-" * len(header))
    for n in names:
        r = rows[n]
        print(
            f"{n:<30}{r.median('get'):>11.0f}{_fmt_ratio(ratio(n, 'get')):>7}"
            f"{r.median('set'):>9.0f}{_fmt_ratio(ratio(n, 'set')):>7}"
            f"{r.median('mixed1') / 1e3:>11.0f}{_fmt_ratio(ratio(n, 'mixed1')):>8}"
            f"{100 * r.median('mixed1_hit'):>6.1f}"
            f"{r.median('mixed4') / 1e3:>11.0f}{_fmt_ratio(ratio(n, 'mixed4')):>8}"
            f"{100 * r.median('mixed4_hit'):>6.1f}"
            + (f"{bytes_per_entry[n]:>8.0f}" if n in bytes_per_entry else f"{'-':>8}")
        )
    print()
    print(
        "ratio = median of per-round (cache / anchor); speedup = median of per-round "
        "(cache ops/s / anchor ops/s). Mixed: Zipf(1.0) over 100k keys, cache of 10k, 90% reads "
        "(a miss reads through with a set), 10% sets. functools.lru_cache has no TTL and no set: "
        "its sets read through and its hit% counts every call. (TTL, bytes): the default "
        "byte estimator on. theine: no TTL; B/entry not measurable with tracemalloc."
    )
    print_estimator_cost()
    hit_table = _hit_ratio_table()
    print()
    print(f"targets for {MEMSAFE_TTL}:")
    checks = [
        ("get-hit <= 0.15x anchor", ratio(MEMSAFE_TTL, "get"), ratio(MEMSAFE_TTL, "get") <= 0.15),
        ("set <= 0.25x anchor", ratio(MEMSAFE_TTL, "set"), ratio(MEMSAFE_TTL, "set") <= 0.25),
        (
            "mixed (1 thread) >= 4x anchor",
            ratio(MEMSAFE_TTL, "mixed1"),
            ratio(MEMSAFE_TTL, "mixed1") >= 4,
        ),
        (
            "mixed (4 threads) >= 4x anchor",
            ratio(MEMSAFE_TTL, "mixed4"),
            ratio(MEMSAFE_TTL, "mixed4") >= 4,
        ),
    ]
    for column, label in (("get", "get-hit"), ("set", "set")):
        speed = 1 / ratio(MEMSAFE_TTL, column, BASELINE)
        checks.append((f"{label} speed >= 0.95x baseline", speed, speed >= 0.95))
    for column, label in (("mixed1", "mixed 1 thread"), ("mixed4", "mixed 4 threads")):
        speed = ratio(MEMSAFE_TTL, column, BASELINE)
        checks.append((f"{label} >= 0.95x baseline", speed, speed >= 0.95))
    size = bytes_per_entry[MEMSAFE_TTL]
    checks.append(("bytes/entry <= 190", size, size <= 190))
    speed_exit = report_targets(checks)
    return max(speed_exit, _report_hit_ratio_targets(hit_table))


# -- hit ratios on the recorded trace (a table of its own, then its own target lines) ---------

_GetSet = tuple[Callable[[Any], Any], Callable[[Any, Any], None]]


def _memsafe_get_set(policy: str) -> Callable[[int], _GetSet]:
    def build(n: int) -> _GetSet:
        return _get_set(LRUCache(n, policy=policy))

    return build


HIT_RATIO_CACHES: dict[str, Callable[[int], _GetSet]] = {
    **{f"memsafe {policy}": _memsafe_get_set(policy) for policy in MEMSAFE_POLICIES},
    "cachetools.LRUCache": lambda n: _get_set(_CachetoolsLocked(cachetools.LRUCache(n))),
    "theine (W-TinyLFU)": lambda n: _get_set(_Theine(n)),
}


def _get_set(cache: Any) -> _GetSet:
    return cache.get, cache.set


THEINE_REPLAYS = 3  # theine's maintenance runs on its own schedule: its ratio varies by run


def _hit_ratio_table() -> dict[str, tuple[float, float, float]]:
    """Replay the recorded trace through every cache; print and return the hit ratios.

    memsafe and cachetools replay deterministically; theine's ratio moves by a few tenths of a
    point from run to run, so it replays `THEINE_REPLAYS` times and the median run counts.
    """
    trace = record_trace()
    table = {}
    spread = ""
    for name, build in HIT_RATIO_CACHES.items():
        replays = THEINE_REPLAYS if name.startswith("theine") else 1
        runs = []
        for _ in range(replays):
            get, set_ = build(TRACE_CACHE_SIZE)
            runs.append(tuple(hit_ratios(trace, get, set_)))
        runs.sort()
        table[name] = runs[len(runs) // 2]
        if replays > 1:
            spread = (
                f"{name}: median of {replays} replays, total {100 * runs[0][0]:.2f}-"
                f"{100 * runs[-1][0]:.2f} %"
            )
    print()
    print(
        f"hit ratio on one recorded trace: {len(trace)} requests, hot Zipf(1.2) : cold scan = "
        f"3 : 1 over 10,000 ids, cache of {TRACE_CACHE_SIZE} entries, read-through, no TTL"
    )
    header = f"{'cache':<30}{'total %':>9}{'hot %':>8}{'scan %':>8}"
    print(header)
    print("-" * len(header))
    for name, (total, hot, scan) in table.items():
        print(f"{name:<30}{100 * total:>9.2f}{100 * hot:>8.2f}{100 * scan:>8.2f}")
    print(spread)
    return table  # type: ignore[return-value]  # tuple() of a 3-field NamedTuple


def _report_hit_ratio_targets(table: dict[str, tuple[float, float, float]]) -> int:
    theine_total = table["theine (W-TinyLFU)"][0]
    lru_total = table["cachetools.LRUCache"][0]
    checks = [
        (
            "tinylfu hit % >= theine's median",
            100 * table["memsafe tinylfu"][0],
            table["memsafe tinylfu"][0] >= theine_total,
        ),
        (
            "slru hit % > LRU's",
            100 * table["memsafe slru"][0],
            table["memsafe slru"][0] > lru_total,
        ),
    ]
    print()
    print("hit-ratio targets (recorded trace):")
    return report_targets(checks)


if __name__ == "__main__":
    sys.exit(main())
