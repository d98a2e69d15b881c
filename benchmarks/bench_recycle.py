"""Failed requests and latency across RSS recycles, for clients that never retry.

Serves the template exactly as `make run` does (config/gunicorn.conf.py, the starter profile)
with loadtests.leaky_app, which leaks LEAK_KIB per request, so workers keep crossing
max_worker_rss_mb and get recycled. Keep-alive connections driven by plain http.client send
a fixed request rate and never retry: any error is a failed request. Each case runs twice in
the same process: with the recycle overlap (a recycling worker's replacement serves before
it drains; server.recycle_overlap_max_workers = the worker count) and, as the anchor,
without it (server.recycle_overlap_max_workers=0).

    .venv/bin/python -m benchmarks.bench_recycle              # asgi + uvicorn, 1 and 2 workers
    .venv/bin/python -m benchmarks.bench_recycle --duration 20 --workers 1 --worker-class asgi
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from loadtests.launcher import GunicornServer

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_SECONDS = 30.0
GOAL_MAX_MS = 250.0


@dataclass
class Traffic:
    """What the never-retrying clients saw."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies_ms: list[float] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)  # wall clock, one per latency
    failures: list[str] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + len(self.failures)

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _one_connection(
    port: int,
    path: str,
    interval: float,
    offset: float,
    stop_at: float,
    traffic: Traffic,
    stop: threading.Event,
) -> None:
    """One keep-alive connection sending a request every ``interval`` s; never retries."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    next_at = time.monotonic() + offset
    try:
        while True:
            now = time.monotonic()
            if next_at >= stop_at or stop.is_set():
                return
            if next_at > now:
                time.sleep(next_at - now)
            next_at += interval
            started, wall = time.monotonic(), time.time()
            try:
                # http.client reopens the connection by itself after a `Connection: close`
                # response: that is the protocol, not a retry. A request that fails counts.
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    msg = f"status {response.status}"
                    raise RuntimeError(msg)
            except (OSError, http.client.HTTPException, RuntimeError) as exc:
                conn.close()
                with traffic.lock:
                    traffic.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            elapsed_ms = (time.monotonic() - started) * 1000
            with traffic.lock:
                traffic.latencies_ms.append(elapsed_ms)
                traffic.started_at.append(wall)
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    traffic.pids.add(int(json.loads(body)["pid"]))
    finally:
        conn.close()


def drive(
    port: int,
    *,
    path: str,
    connections: int,
    rate: float,
    duration_seconds: float,
    stop: threading.Event | None = None,
) -> Traffic:
    """``connections`` keep-alive connections sharing ``rate`` requests/s for the duration
    (or until ``stop`` is set)."""
    traffic = Traffic()
    stop = stop if stop is not None else threading.Event()
    interval = connections / rate
    stop_at = time.monotonic() + duration_seconds
    threads = [
        threading.Thread(
            target=_one_connection,
            args=(port, path, interval, index * interval / connections, stop_at, traffic, stop),
            daemon=True,
        )
        for index in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=duration_seconds + 30)
    return traffic


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*over its RSS cap", re.M)


def recycle_times(log: str) -> list[float]:
    """Wall-clock times of the recycles in a gunicorn log of this template (local time)."""
    return [
        time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
        for stamp, millis in _LOG_TIME.findall(log)
    ]


def split_by_recycle(
    traffic: Traffic, recycles: list[float], window_seconds: float
) -> tuple[list[float], list[float]]:
    """Latencies of requests started within ``window_seconds`` after a recycle, and the rest.

    The host may be shared: the requests far from any recycle measure its background noise.
    """
    near: list[float] = []
    far: list[float] = []
    for started, latency in zip(traffic.started_at, traffic.latencies_ms, strict=True):
        is_near = any(-0.5 <= started - at <= window_seconds for at in recycles)
        (near if is_near else far).append(latency)
    return near, far


@dataclass
class Case:
    worker_class: str
    workers: int
    overlap: bool
    traffic: Traffic
    recycle_times: list[float]
    window_seconds: float

    @property
    def recycles(self) -> int:
        return len(self.recycle_times)

    def near_far(self) -> tuple[list[float], list[float]]:
        return split_by_recycle(self.traffic, self.recycle_times, self.window_seconds)


def run_case(args: argparse.Namespace, worker_class: str, workers: int, overlap: bool) -> Case:
    """Serve the leaky template with these settings and drive it; count recycles in its log."""
    with tempfile.TemporaryDirectory(prefix="bench-recycle-") as tmp:
        log_path = Path(tmp) / "gunicorn.log"
        # The cleaner's MiB limits must sit below the lowered cap: unset them, as the e2e
        # tests do; the cap alone is measured here.
        profile = yaml.safe_load((ROOT / "config" / f"{args.profile}.yaml").read_text())
        for level in ("soft", "hard", "recycle"):
            profile["memory"][f"{level}_limit_mb"] = None
        profile_path = Path(tmp) / "profile.yaml"
        profile_path.write_text(yaml.safe_dump(profile))
        env = {
            **os.environ,
            "APP_CONFIG": str(profile_path),
            "WEB_CONCURRENCY": str(workers),
            "APP_SERVER__WORKER_CLASS": worker_class,
            "APP_SERVER__MAX_WORKER_RSS_MB": str(args.max_worker_rss_mb),
            "APP_SERVER__RECYCLE_OVERLAP_MAX_WORKERS": str(workers) if overlap else "0",
            "APP_STORE__PATH": str(Path(tmp) / "app.sqlite3"),
            "APP_LOGGING__ACCESS_LOG": "false",
            "LEAKY_APP_KIB_PER_REQUEST": str(args.leak_kib),
        }
        server = GunicornServer(
            "loadtests.leaky_app:app",
            env=env,
            log_path=log_path,
            ready_timeout_seconds=READY_TIMEOUT_SECONDS,
        )
        with server:
            traffic = drive(
                server.port,
                path=args.path,
                connections=args.connections,
                rate=args.rate,
                duration_seconds=args.duration,
            )
        text = log_path.read_text(errors="replace")
    return Case(worker_class, workers, overlap, traffic, recycle_times(text), args.window)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--worker-class", nargs="+", default=["asgi", "uvicorn"], choices=["asgi", "uvicorn"])
    add("--workers", nargs="+", type=int, default=[1, 2])
    add("--duration", type=float, default=60.0, help="seconds of traffic per case")
    add("--rate", type=float, default=50.0, help="requests per second, all connections")
    add("--connections", type=int, default=10, help="keep-alive connections (never retry)")
    add("--leak-kib", type=int, default=128, help="KiB leaked per request")
    add("--max-worker-rss-mb", type=int, default=80, help="the recycle cap (MiB)")
    add("--profile", default="starter")
    add("--path", default="/users/1")
    add("--window", type=float, default=3.0, help="seconds after a recycle counted as near it")
    add("--no-anchor", action="store_true", help="skip the runs without overlap")
    return parser.parse_args(argv)


def _max(values: list[float]) -> float:
    return max(values, default=0.0)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0


def main(argv: list[str] | None = None) -> int:
    """Run every case; exit 1 when a request failed or the 1-worker overlap misses 250 ms."""
    args = _parse(argv)
    print(
        f"{args.connections} keep-alive connections (never retry), {args.rate:g} req/s, "
        f"{args.leak_kib} KiB leaked/request, max_worker_rss_mb {args.max_worker_rss_mb}, "
        f"{args.duration:g} s per case, profile {args.profile}; 'near' = requests started "
        f"within {args.window:g} s after a recycle, 'far' = all others (host noise)"
    )
    print(
        f"{'class':8} {'workers':>7} {'overlap':>7} {'requests':>8} {'failed':>6} "
        f"{'recycles':>8} {'p99 ms':>7} {'max ms':>7} {'near max':>8} {'far max':>7} "
        f"{'near max/anchor':>15}"
    )
    is_ok = True
    for worker_class in args.worker_class:
        for workers in args.workers:
            anchor = None if args.no_anchor else run_case(args, worker_class, workers, False)
            case = run_case(args, worker_class, workers, True)
            anchor_near = _max(anchor.near_far()[0]) if anchor is not None else 0.0
            for result in (anchor, case):
                if result is None:
                    continue
                t = result.traffic
                near, far = result.near_far()
                ratio = ""
                if result is case and anchor_near:
                    ratio = f"{_max(near) / anchor_near:.2f}x"
                print(
                    f"{worker_class:8} {workers:>7} {'yes' if result.overlap else 'no':>7} "
                    f"{t.requests:>8} {len(t.failures):>6} {result.recycles:>8} "
                    f"{_p99(t.latencies_ms):>7.1f} {_max(t.latencies_ms):>7.1f} "
                    f"{_max(near):>8.1f} {_max(far):>7.1f} {ratio:>15}",
                    flush=True,
                )
                if t.failures:
                    print(f"  failures: {sorted(set(t.failures))[:5]}")
            is_ok &= not case.traffic.failures and case.recycles > 0
            if workers == 1 and _max(case.near_far()[0]) > GOAL_MAX_MS:
                print(
                    f"  {worker_class}, 1 worker: a request near a recycle over {GOAL_MAX_MS:g} ms"
                )
                is_ok = False
    return 0 if is_ok else 1


if __name__ == "__main__":
    sys.exit(main())
