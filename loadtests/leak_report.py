"""`make leak-report`: serve an app, load it, trace allocations on every worker, print the sites.

python -m loadtests.leak_report                       # the leaky app, 2 workers, 5 s window
python -m loadtests.leak_report --app app.main:app    # the real app
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from loadtests.launcher import HOST, GunicornServer, free_port, http_get
from loadtests.server import server_env

MIB = 1024 * 1024
LOAD_THREADS = 4
USER_IDS = 500


class _Tally:
    """Requests served and their summed latency, from a few load threads (approximate: += is not
    atomic, and a lost update among thousands does not change the ratio printed)."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.seconds += seconds

    def snapshot(self) -> tuple[int, float]:
        return self.count, self.seconds


def _load(port: int, stop: threading.Event, tally: _Tally) -> None:
    user_id = 0
    while not stop.is_set():
        user_id = user_id % USER_IDS + 1
        started = time.perf_counter()
        try:
            http_get(port, f"/users/{user_id}")  # a fresh connection: both workers get traffic
        except OSError:
            time.sleep(0.05)
            continue
        tally.add(time.perf_counter() - started)


def _rate(before: tuple[int, float], after: tuple[int, float], seconds: float) -> str:
    count = after[0] - before[0]
    mean_ms = (after[1] - before[1]) / count * 1000 if count else float("nan")
    return f"{count / seconds:.0f} req/s, mean {mean_ms:.1f} ms"


def _trace(port: int, token: str, seconds: float) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://{HOST}:{port}/admin/memory/trace?seconds={seconds:g}",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=seconds + 30) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def _wait_for_workers(port: int, token: str, workers: int) -> None:
    """Until every worker has published its snapshot, so the trace reaches all of them."""
    deadline = time.monotonic() + 20
    request = urllib.request.Request(
        f"http://{HOST}:{port}/admin/caches/clear",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    while time.monotonic() < deadline:
        with urllib.request.urlopen(request, timeout=10) as response:
            if len(json.loads(response.read())["workers"]) >= workers:
                return
        time.sleep(0.5)


def render(report: dict[str, Any], requests: int, top: int) -> str:
    """The trace as a terminal table: per worker, its top sites and the routes that grew."""
    seconds = report["seconds"]
    lines = [f"allocation trace: {seconds:g} s window, {requests} requests sent meanwhile"]
    for worker in report["workers"]:
        if "error" in worker:
            lines.append(f"\nworker {worker['pid']}: {worker['error']}")
            continue
        # A leaking worker is recycled every few seconds: one recycled mid-window traced only
        # part of it (cut short), its replacement the rest (a shorter window, not cut short).
        cut = ", cut short: the worker was recycled" if worker.get("is_cut_short") else ""
        lines.append(
            f"\nworker {worker['pid']}: traced {worker['seconds']:.1f} s{cut}; "
            f"{worker['traced_bytes'] / MIB:.1f} MiB kept, "
            f"tracemalloc's own memory {worker['tracemalloc_overhead_bytes'] / MIB:.1f} MiB"
        )
        lines.append(f"  {'grew':>10}  {'blocks':>7}  site")
        for site in worker["top"][:top]:
            lines.append(
                f"  {site['size_diff_bytes'] / 1024:>8.0f} KiB  {site['count_diff']:>7}  "
                f"{site['site']}"
            )
        for route in worker["routes"]:
            lines.append(
                f"  route {route['route']}: {route['requests']} requests, RSS "
                f"{route['rss_growth_bytes'] / MIB:+.1f} MiB"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", default="loadtests.leaky_app:app", help="gunicorn app path")
    parser.add_argument("--profile", default="local", help="settings profile in config/")
    parser.add_argument("--seconds", type=float, default=5.0, help="trace window (s)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--top", type=int, default=5, help="sites shown per worker")
    args = parser.parse_args(argv)
    token = os.environ.get("ADMIN_TOKEN") or secrets.token_urlsafe(16)
    port = free_port()
    out_dir = Path(tempfile.mkdtemp(prefix="leak-report-"))
    extra = [
        f"ADMIN_TOKEN={token}",
        f"APP_SERVER__WORKERS={args.workers}",
        f"APP_STORE__PATH={out_dir / 'app.sqlite3'}",
        "APP_STORE__SEED_USERS=1000",
        "APP_LOGGING__ACCESS_LOG=false",
        "APP_MONITOR__METRICS_SHARE_SECONDS=1",
    ]
    print(f"serving {args.app} ({args.workers} workers) on {HOST}:{port}; log {out_dir}/server.log")
    server = GunicornServer(
        args.app,
        env=server_env(args.profile, extra),
        port=port,
        log_path=out_dir / "server.log",
        is_group=True,
    ).start()
    stop = threading.Event()
    tally = _Tally()
    try:
        server.wait_ready()
        _wait_for_workers(port, token, args.workers)
        threads = [
            threading.Thread(target=_load, args=(port, stop, tally), daemon=True)
            for _ in range(LOAD_THREADS)
        ]
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # warm up: caches fill before the window opens
        # The anchor: the same load for the same time with tracemalloc off, in this run.
        plain = tally.snapshot()
        time.sleep(args.seconds)
        traced = tally.snapshot()
        report = _trace(port, token, args.seconds)
        after = tally.snapshot()
        time.sleep(args.seconds)  # and once more after the window: the cost must be gone
        later = tally.snapshot()
        print(render(report, after[0] - traced[0], args.top))
        off = traced[0] - plain[0]
        print(
            f"\nthroughput, {args.seconds:g} s each: before the window "
            f"{_rate(plain, traced, args.seconds)}; inside it {_rate(traced, after, args.seconds)}"
            f"; after it {_rate(after, later, args.seconds)}; inside/before = "
            f"{(after[0] - traced[0]) / max(1, off):.2f}, after/before = "
            f"{(later[0] - after[0]) / max(1, off):.2f}"
        )
    finally:
        stop.set()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
