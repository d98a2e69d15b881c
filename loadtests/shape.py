"""The load's shape and id streams, free of Locust (importing locust monkey-patches gevent)."""

from __future__ import annotations

import itertools
import random
import threading

# s = 1.2 over 10,000 ids: the 1,000 hottest ids draw ~90 % of hot requests (cache friendly).
ZIPF_EXPONENT = 1.2

# (phase, end as a fraction of the run, share of the peak load users)
PHASES: tuple[tuple[str, float, float], ...] = (
    ("ramp", 0.10, 0.5),
    ("steady", 0.35, 0.5),
    ("spike", 0.50, 1.0),
    ("steady", 0.85, 0.5),
    ("idle", 1.00, 0.0),
)


def phase_at(fraction: float) -> str | None:
    """The phase name at a fraction of the run, None once it is over."""
    return next((name for name, end, _ in PHASES if fraction < end), None)


def users_at(fraction: float, peak_users: int) -> int | None:
    """Total users (the health poller plus load users) at a fraction of the run; None when over.

    The ramp grows linearly to half the peak; steady phases hold half; the spike holds the peak;
    idle keeps only the poller, to show memory settles when the load stops.
    """
    load_users = max(1, peak_users - 1)
    start = 0.0
    for phase, end, share in PHASES:
        if fraction < end:
            if phase == "ramp":
                share *= (fraction - start) / (end - start)
            return 1 + (max(1, round(load_users * share)) if share > 0 else 0)
        start = end
    return None


class ZipfIds:
    """Ids 1..n drawn with weight 1/k^exponent: a few hot ids, a long cold tail."""

    def __init__(self, n: int, exponent: float = ZIPF_EXPONENT) -> None:
        if n < 1:
            msg = f"n must be >= 1, got {n!r}"
            raise ValueError(msg)
        self._ids = range(1, n + 1)
        self._cum_weights = list(itertools.accumulate(1.0 / k**exponent for k in self._ids))

    def draw(self, rng: random.Random | None = None) -> int:
        """One id (rng defaults to the random module's generator)."""
        choices = rng.choices if rng is not None else random.choices
        return choices(self._ids, cum_weights=self._cum_weights)[0]


class ColdScan:
    """Ids 1..n in order, shared by every caller: unique until the scan wraps around.

    Thread safety: next_id() holds a lock (gevent greenlets never race; threads might).
    """

    def __init__(self, n: int) -> None:
        if n < 1:
            msg = f"n must be >= 1, got {n!r}"
            raise ValueError(msg)
        self._n = n
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def next_id(self) -> int:
        """The next id of the scan."""
        with self._lock:
            return next(self._counter) % self._n + 1
