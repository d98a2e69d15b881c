"""Locust as a subprocess: start it headless, stop it early on a fatal event, read its CSVs."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from loadtests.guard import TreeSampler
from loadtests.launcher import HOST, REPO_ROOT, stop_process
from loadtests.scenario_hits import HEALTH_NAME
from loadtests.thresholds import LoadSettings

CACHE_TALLY_FILE = "cache_by_scenario.json"  # written by the locustfile when Locust quits
PROGRESS_SECONDS = 5.0  # one progress line this often during the load


def _default_sigint() -> None:
    # A runner started in the background (`cmd &`) inherits SIGINT ignored; Locust needs it back
    # because SIGINT is how it is told to stop *and* write its HTML report.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_locust(
    settings: LoadSettings, *, port: int, out_dir: Path, payload_kib: int
) -> subprocess.Popen[bytes]:
    """Locust headless against 127.0.0.1:port, stopping after the run time by itself."""
    bin_dir = Path(sys.executable).parent
    command = [
        str(bin_dir / "locust"),
        "-f", "loadtests/locustfile.py",
        "--headless",
        "--host", f"http://{HOST}:{port}",
        "--users", str(settings.users),
        "--spawn-rate", f"{settings.spawn_rate:g}",
        "--run-time", f"{settings.duration_seconds:.0f}s",
        "--stop-timeout", "5",
        "--csv", str(out_dir / "locust"),
        "--html", str(out_dir / "locust.html"),
        "--only-summary",
        "--loglevel", "WARNING",
    ]  # fmt: skip
    env = {
        **os.environ,
        "LOADTEST_PAYLOAD_MAX_KIB": str(payload_kib),
        "LOADTEST_MAX_HEALTH_MS": f"{settings.max_health_ms:g}",
        "LOADTEST_HEALTH_INTERVAL_SECONDS": f"{settings.health_interval_seconds:g}",
        "LOADTEST_CACHE_TALLY_PATH": str(out_dir / CACHE_TALLY_FILE),
    }
    with (out_dir / "locust.log").open("wb") as log:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_default_sigint,
        )  # fmt: skip


def wait_locust(
    locust: subprocess.Popen[bytes],
    sampler: TreeSampler,
    fatal: threading.Event,
    timeout: float,
    *,
    progress: Callable[[], str] | None = None,
    progress_seconds: float = PROGRESS_SECONDS,
) -> int | None:
    """Wait for Locust; stop it at once when the guard reports a fatal event. None if stopped.

    progress, when given, is called every progress_seconds and its line printed.
    """
    deadline = time.monotonic() + timeout
    next_progress = time.monotonic() + progress_seconds
    while locust.poll() is None:
        if progress is not None and time.monotonic() >= next_progress:
            next_progress += progress_seconds
            print(progress(), flush=True)
        if fatal.is_set() or time.monotonic() > deadline:
            reason = sampler.fatal_reason or f"Locust still running after {timeout:.0f} s"
            print(f"guard: stopping Locust now: {reason}", flush=True)
            os.killpg(locust.pid, signal.SIGINT)  # Locust writes its reports on SIGINT
            try:
                locust.wait(timeout=15)
            except subprocess.TimeoutExpired:
                stop_process(locust, timeout=5)
            return None if fatal.is_set() else locust.returncode
        fatal.wait(0.2)
    return locust.returncode


@dataclass(frozen=True)
class LocustResults:
    """Locust's aggregated figures and the health poller's, from its CSV files."""

    requests: int = 0
    failures: int = 0
    rps: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    health_checks: int = 0
    health_failures: int = 0
    health_max_ms: float | None = None
    history: tuple[tuple[float, int], ...] = ()  # (epoch seconds, cumulative requests)


@dataclass(frozen=True)
class LiveCounts:
    """Locust's latest aggregated row while it runs (its stats history is written each second)."""

    requests: int = 0
    failures: int = 0
    rps: float = 0.0


def read_live_counts(prefix: Path) -> LiveCounts:
    """The last Aggregated row of <prefix>_stats_history.csv so far (zeros before the first)."""
    path = Path(f"{prefix}_stats_history.csv")
    try:
        with path.open(newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("Name") == "Aggregated"]
    except OSError:
        return LiveCounts()
    if not rows:
        return LiveCounts()
    last = rows[-1]
    return LiveCounts(
        requests=int(_number(last, "Total Request Count") or 0),
        failures=int(_number(last, "Total Failure Count") or 0),
        rps=_number(last, "Requests/s") or 0.0,
    )


def _number(row: Mapping[str, str], key: str) -> float | None:
    try:
        return float(row[key])
    except (KeyError, TypeError, ValueError):
        return None


def read_locust_results(prefix: Path) -> LocustResults:
    """Parse <prefix>_stats.csv and <prefix>_stats_history.csv (missing files give zeros)."""
    rows: list[dict[str, str]] = []
    stats_path = Path(f"{prefix}_stats.csv")
    if stats_path.exists():
        with stats_path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    total = next((r for r in rows if r.get("Name") == "Aggregated"), {})
    health = next((r for r in rows if r.get("Name") == HEALTH_NAME), {})
    history: list[tuple[float, int]] = []
    history_path = Path(f"{prefix}_stats_history.csv")
    if history_path.exists():
        with history_path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                stamp, count = _number(row, "Timestamp"), _number(row, "Total Request Count")
                if row.get("Name") == "Aggregated" and stamp is not None and count is not None:
                    history.append((stamp, int(count)))
    return LocustResults(
        requests=int(_number(total, "Request Count") or 0),
        failures=int(_number(total, "Failure Count") or 0),
        rps=_number(total, "Requests/s") or 0.0,
        p50_ms=_number(total, "50%"),
        p95_ms=_number(total, "95%"),
        p99_ms=_number(total, "99%"),
        health_checks=int(_number(health, "Request Count") or 0),
        health_failures=int(_number(health, "Failure Count") or 0),
        health_max_ms=_number(health, "Max Response Time"),
        history=tuple(history),
    )
