"""One recorded Zipf-plus-scan request trace shaped like the app's load test, and its replay.

The trace is what `make loadtest` sends to the users cache of one worker: hot users drawn from
a Zipf distribution (exponent 1.2, as loadtests/shape.py) over the 10,000 seeded ids, and a
cold scan walking the same ids in order, 3 hot requests to 1 scan request, against a cache of
5,000 entries (the starter profile's caches.users.max_size), no TTL. It is generated from a
fixed seed, so every run and every cache replays exactly the same requests.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Any, NamedTuple

from loadtests.shape import ZIPF_EXPONENT

TRACE_SEED = 20261202
TRACE_IDS = 10_000
TRACE_CACHE_SIZE = 5_000
TRACE_REQUESTS = 200_000
SCAN_SHARE = 0.25  # hot : scan = 3 : 1


class HitRatios(NamedTuple):
    """Hit ratios of one replay: over all requests, the hot (Zipf) ones and the scan ones."""

    total: float
    hot: float
    scan: float


def record_trace(requests: int = TRACE_REQUESTS, seed: int = TRACE_SEED) -> list[tuple[int, bool]]:
    """`(user id, is_hot)` for each request, the same list for the same arguments."""
    rng = random.Random(seed)
    ids = range(1, TRACE_IDS + 1)
    cum_weights = list(itertools.accumulate(1.0 / k**ZIPF_EXPONENT for k in ids))
    hot = iter(rng.choices(ids, cum_weights=cum_weights, k=requests))
    scan = itertools.cycle(ids)
    return [
        (next(scan), False) if rng.random() < SCAN_SHARE else (next(hot), True)
        for _ in range(requests)
    ]


def hit_ratios(
    trace: list[tuple[int, bool]],
    get: Callable[[int], Any],
    set_: Callable[[int, Any], None],
) -> HitRatios:
    """Replay `trace` read-through (a miss is followed by a set) and count the hits."""
    hits = {True: 0, False: 0}
    counts = {True: 0, False: 0}
    for key, is_hot in trace:
        counts[is_hot] += 1
        if get(key) is None:
            set_(key, key)
        else:
            hits[is_hot] += 1
    return HitRatios(
        total=(hits[True] + hits[False]) / len(trace),
        hot=hits[True] / max(counts[True], 1),
        scan=hits[False] / max(counts[False], 1),
    )
