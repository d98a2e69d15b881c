"""Cache hits per load scenario, counted from the server's X-Cache header (free of Locust)."""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_HEADER = "X-Cache"  # app/api/routes/users.py: "hit" or "miss"
# The Render-like /health poller's request name in Locust's stats (loadtests/locustfile.py);
# here, free of Locust, so the runner (loadtests/locust_io.py) reads the same row.
HEALTH_NAME = "health poller"
_SCENARIO = re.compile(r"\[(\w+)\]$")  # "/users/{id} [hot]" -> "hot"


def scenario_of(request_name: str) -> str | None:
    """The scenario tag at the end of a Locust request name, e.g. "hot" or "cold"."""
    match = _SCENARIO.search(request_name)
    return match[1] if match else None


class CacheTally:
    """Per scenario and per whole second (epoch): how many answers were cache hits and misses.

    Bounded: one [hits, misses] pair per scenario per second of the run.
    Thread safety: record() holds a lock (Locust's greenlets never race; threads might).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[int, list[int]]] = defaultdict(dict)

    def record(self, request_name: str, header: str | None, epoch_seconds: float) -> None:
        """Count one answer; requests without a scenario tag or an X-Cache header are ignored."""
        scenario = scenario_of(request_name)
        if scenario is None or header not in ("hit", "miss"):
            return
        with self._lock:
            pair = self._counts[scenario].setdefault(int(epoch_seconds), [0, 0])
            pair[0 if header == "hit" else 1] += 1

    def to_json(self) -> dict[str, Any]:
        """{scenario: {second: [hits, misses]}} with the seconds as strings."""
        with self._lock:
            return {
                s: {str(t): list(p) for t, p in sorted(c.items())} for s, c in self._counts.items()
            }

    def write(self, path: Path) -> None:
        """Write to_json() to path."""
        path.write_text(json.dumps(self.to_json()) + "\n")


@dataclass(frozen=True)
class ScenarioRate:
    """Hits and misses of one scenario over a span of the run."""

    hits: int
    misses: int

    @property
    def rate(self) -> float | None:
        """hits / (hits + misses), None without answers."""
        total = self.hits + self.misses
        return self.hits / total if total else None


def scenario_rates(
    data: Mapping[str, Mapping[str, list[int]]], *, since_epoch: float = 0.0
) -> dict[str, ScenarioRate]:
    """Each scenario's hits and misses counted from since_epoch on (whole seconds)."""
    rates: dict[str, ScenarioRate] = {}
    for scenario, seconds in data.items():
        kept = [pair for t, pair in seconds.items() if int(t) >= since_epoch]
        rates[scenario] = ScenarioRate(sum(p[0] for p in kept), sum(p[1] for p in kept))
    return rates


def read_tally(path: Path) -> dict[str, dict[str, list[int]]]:
    """The file CacheTally.write wrote, or {} when Locust did not write one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
