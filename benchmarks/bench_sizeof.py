"""memsafe's default byte estimate against RSS growth per cached entry, for three value shapes.

Run: `.venv/bin/python -m benchmarks.bench_sizeof [--entries N]`.

Each shape runs in a fresh child process: it reads its RSS (/proc/self/statm), fills a
byte-tracked `memsafe.LRUCache` (TTL 300 s, like the app's users cache) with N entries whose
values are built fresh for each entry and held only by the cache, reads its RSS again, and
reports the growth per entry next to the cache's own estimate (`nbytes / N`). Shapes:

- `user-dict`: a row as `app/store.py` returns it (int id, four str columns, literal keys);
- `pydantic`: the same row as a pydantic v2 model;
- `bytes-4k`: 4 KiB of bytes;
- `shared`: one shared value (`None`): what the cache itself costs per entry (int keys), the
  figure behind `memsafe._sizeof.ENTRY_OVERHEAD_BYTES`.

Target: the estimate within +-25 % of the measured growth for the first three.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from memsafe.cache import LRUCache, default_sizeof

SHAPES = ("user-dict", "pydantic", "bytes-4k", "shared")
TOLERANCE = 0.25
DEFAULT_ENTRIES = 50_000
_PAGE = os.sysconf("SC_PAGE_SIZE")
_CITIES = ("Berlin", "Lisbon", "Osaka", "Toronto", "Nairobi", "Lima")


class UserModel(BaseModel):
    """The users row as a pydantic model."""

    id: int
    name: str
    email: str
    city: str
    created_at: str


def _user_row(i: int) -> dict[str, Any]:
    # Fresh strings per row, as sqlite3 returns them; the keys are literals (interned, shared).
    first, last = f"First{i % 97}", f"Last{i % 89}"
    return {
        "id": 100_000 + i,
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{i}@example.com",
        "city": _CITIES[i % len(_CITIES)] + "",
        "created_at": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T00:00:00Z",
    }


def _value_factory(shape: str) -> Callable[[int], object]:
    if shape == "user-dict":
        return _user_row
    if shape == "pydantic":
        return lambda i: UserModel(**_user_row(i))
    if shape == "bytes-4k":
        return lambda i: (i & 0xFFFFFFFF).to_bytes(8, "little") * 512
    return lambda i: None


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


def measure(shape: str, entries: int) -> dict[str, float]:
    """In this process: RSS growth per entry and the cache's estimate per entry for `shape`."""
    make = _value_factory(shape)
    cache: LRUCache[int, object] = LRUCache(entries, ttl_seconds=300, max_bytes=1 << 40)
    for i in range(-1000, 0):  # warm the allocator and the code paths outside the measurement
        make(i)
    gc.collect()
    gc.disable()
    before = _rss_bytes()
    for i in range(entries):
        cache.set(i + 1000, make(i))
    after = _rss_bytes()
    gc.enable()
    return {
        "rss_per_entry": (after - before) / entries,
        "estimate_per_entry": cache.nbytes / entries,
    }


def run_child(shape: str, entries: int) -> dict[str, float]:
    """`measure` in a fresh interpreter, so one shape's heap does not serve the next."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_sizeof",
            "--child",
            shape,
            "--entries",
            str(entries),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=DEFAULT_ENTRIES)
    parser.add_argument("--child", choices=SHAPES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.entries)))
        return
    print(f"bench_sizeof: {args.entries} entries per shape, each in a fresh process, TTL 300 s")
    print(f"{'shape':<12}{'RSS B/entry':>13}{'estimate B/entry':>18}{'estimate/RSS':>14}")
    results = {shape: run_child(shape, args.entries) for shape in SHAPES}
    for shape, r in results.items():
        ratio = r["estimate_per_entry"] / r["rss_per_entry"]
        print(
            f"{shape:<12}{r['rss_per_entry']:>13.0f}{r['estimate_per_entry']:>18.0f}{ratio:>14.2f}"
        )
    print()
    print(f"targets: estimate within +-{TOLERANCE:.0%} of RSS growth per entry")
    for shape in SHAPES[:3]:
        r = results[shape]
        ratio = r["estimate_per_entry"] / r["rss_per_entry"]
        ok = abs(ratio - 1) <= TOLERANCE
        print(f"  {'PASS' if ok else 'FAIL'}  {shape:<34} measured {ratio:.2f}")


def print_estimator_cost() -> None:
    """What the default byte estimator costs per set, on a value shaped like the app's user."""
    row = {
        "id": 4321,
        "name": "Ada Lovelace",
        "email": "ada.lovelace4321@example.com",
        "city": "London",
        "created_at": "2024-05-17T00:00:00Z",
    }
    repeat = 20_000
    timings = {}
    for name, sizeof in (("default_sizeof", default_sizeof), ("sys.getsizeof", sys.getsizeof)):
        start = time.perf_counter_ns()
        for _ in range(repeat):
            sizeof(row)
        timings[name] = (time.perf_counter_ns() - start) / repeat
    print()
    print(
        f"byte estimator on a user row: default_sizeof {timings['default_sizeof']:.0f} ns "
        f"({default_sizeof(row)} B) vs sys.getsizeof {timings['sys.getsizeof']:.0f} ns "
        f"({sys.getsizeof(row)} B), paid once per set of a byte-tracked cache"
    )


if __name__ == "__main__":
    main()
