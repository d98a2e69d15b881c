"""Slowloris benchmark: slow request heads against ONE gunicorn worker with a low fd limit.

Run: `.venv/bin/python -m benchmarks.bench_slowloris` (or `make bench-slowloris`). It starts the
real gunicorn (config/gunicorn.conf.py, one worker) with RLIMIT_NOFILE set in a preexec_fn, then
opens `--connections` connections that each send a request line and then one more header line
every `--interval` seconds, never ending the head. Like the classic slowloris tool, a connection
the server closed is opened again at its next tick. Meanwhile a separate thread probes /health
from a fresh connection every `--probe-interval` seconds, with a 2 s budget per probe.

It judges the issue-10 goal: probes succeed >= 99 %, every slow connection the server closed was
closed within the head deadline (+ tolerance) and none outlived it, and the worker's RSS comes
back to within 10 MiB of its baseline after the attack. It also counts the server's log lines
(the unguarded worker floods "socket.accept() out of system resource"). Exit status 1 when the
goal is missed, so `--worker-class asgi` reproduces the outage and fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from loadtests.launcher import HOST, GunicornServer, free_port, http_get, isolated_env

MIB = 1024 * 1024
CONNECT_TIMEOUT_SECONDS = 5.0
CONNECTS_IN_FLIGHT = 100  # concurrent connect() calls of the attacker
PROBE_BUDGET_SECONDS = 2.0
RSS_TOLERANCE_MIB = 10.0
PROBE_GOAL = 0.99
ACCEPT_FLOOD_TEXT = "out of system resource"


@dataclass
class AttackStats:
    """What the attacker saw: connects, server closes and how long each connection lived."""

    connects: int = 0
    connect_failures: int = 0
    lifetimes: list[float] = field(default_factory=list)  # connect -> closed by the server
    open_at_end_ages: list[float] = field(default_factory=list)  # still open when we stopped
    open_now: int = 0
    peak_open: int = 0


@dataclass
class ProbeStats:
    """Fresh-connection /health probes: ok means HTTP 200 within the budget."""

    sent: int = 0
    ok: int = 0
    latencies: list[float] = field(default_factory=list)
    longest_failed_run: int = 0

    @property
    def ok_ratio(self) -> float:
        return self.ok / self.sent if self.sent else 0.0


async def _slow_connection(
    port: int, stats: AttackStats, stop_at: float, interval: float, gate: asyncio.Semaphore
) -> None:
    """One slowloris client: reopen at the next tick when the server closed it."""
    loop = asyncio.get_running_loop()
    next_tick = loop.time()
    while loop.time() < stop_at:
        await asyncio.sleep(max(0.0, next_tick - loop.time()))
        next_tick = loop.time() + interval
        try:
            async with gate:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(HOST, port), CONNECT_TIMEOUT_SECONDS
                )
        except (TimeoutError, OSError):
            stats.connect_failures += 1
            continue
        stats.connects += 1
        stats.open_now += 1
        stats.peak_open = max(stats.peak_open, stats.open_now)
        opened_at = loop.time()
        closed = asyncio.ensure_future(_until_closed(reader))
        try:
            writer.write(f"GET /health HTTP/1.1\r\nHost: {HOST}\r\n".encode())
            line = 0
            while True:
                timeout = max(0.0, min(next_tick, stop_at) - loop.time())
                done, _ = await asyncio.wait({closed}, timeout=timeout)
                if done:
                    stats.lifetimes.append(loop.time() - opened_at)
                    break
                if loop.time() >= stop_at:
                    stats.open_at_end_ages.append(loop.time() - opened_at)
                    break
                line += 1
                writer.write(f"X-Slow-{line}: {'a' * 8}\r\n".encode())
                next_tick = loop.time() + interval
        finally:
            stats.open_now -= 1
            closed.cancel()
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


async def _until_closed(reader: asyncio.StreamReader) -> None:
    """Return when the server closed the connection (EOF or reset), whatever it sent first."""
    with contextlib.suppress(OSError):
        while await reader.read(4096):
            pass


async def attack(port: int, connections: int, interval: float, seconds: float) -> AttackStats:
    """Run `connections` slowloris clients for `seconds`."""
    stats = AttackStats()
    gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)
    stop_at = asyncio.get_running_loop().time() + seconds
    await asyncio.gather(
        *(_slow_connection(port, stats, stop_at, interval, gate) for _ in range(connections))
    )
    return stats


def probe_loop(port: int, stop: threading.Event, interval: float, out: ProbeStats) -> None:
    """Probe /health on a fresh connection until `stop` is set."""
    failed_run = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            status, _ = http_get(port, "/health", timeout=PROBE_BUDGET_SECONDS)
            elapsed = time.monotonic() - started
            ok = status == 200 and elapsed <= PROBE_BUDGET_SECONDS
        except OSError:
            elapsed, ok = time.monotonic() - started, False
        out.sent += 1
        out.latencies.append(elapsed)
        if ok:
            out.ok += 1
            failed_run = 0
        else:
            failed_run += 1
            out.longest_failed_run = max(out.longest_failed_run, failed_run)
        stop.wait(max(0.0, interval - (time.monotonic() - started)))


@dataclass
class Sampler:
    """Samples the worker's RSS (MiB) and open fds every `interval` seconds in a thread."""

    worker: psutil.Process
    interval: float = 0.5
    rss_mib: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.rss_mib.append(self.worker.memory_info().rss / MIB)
                self.fds.append(self.worker.num_fds())
            self._stop.wait(self.interval)


def _nofile_preexec(nofile: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    return preexec


def start(
    data_dir: Path, port: int, nofile: int, worker_class: str, env: dict[str, str]
) -> GunicornServer:
    """gunicorn with one worker, RLIMIT_NOFILE = nofile (soft and hard), bound to 127.0.0.1.

    Started, not yet ready; it leads its own process group, so stop() ends the whole server.
    """
    server_env = isolated_env(
        {
            "APP_CONFIG": "config/local.yaml",
            "APP_SERVER__WORKERS": "1",
            "APP_SERVER__WORKER_CLASS": worker_class,
            "APP_STORE__PATH": str(data_dir / "app.sqlite3"),
            "APP_STORE__SEED_USERS": "100",
            "APP_LOGGING__ACCESS_LOG": "false",
            "MALLOC_ARENA_MAX": "2",
            **env,
        }
    )
    server = GunicornServer(
        env=server_env,
        port=port,
        log_path=data_dir / f"gunicorn-{port}.log",
        is_group=True,
        preexec_fn=_nofile_preexec(nofile),
    )
    return server.start()


def _worker(server: GunicornServer) -> psutil.Process:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = psutil.Process(server.process.pid).children()
        if children:
            return children[0]
        time.sleep(0.1)
    msg = f"no worker under gunicorn pid {server.process.pid}; see {server.log_path}"
    raise RuntimeError(msg)


def _settle_rss(worker: psutil.Process, baseline: float, seconds: float) -> tuple[float, float]:
    """RSS after a 3 s pause, then polled until within tolerance or `seconds` pass.

    Returns (rss MiB, seconds taken). The pause lets the worker act on the closes first.
    """
    started = time.monotonic()
    time.sleep(min(3.0, seconds))
    rss = worker.memory_info().rss / MIB
    while time.monotonic() - started < seconds:
        rss = worker.memory_info().rss / MIB
        if rss - baseline <= RSS_TOLERANCE_MIB:
            break
        time.sleep(0.5)
    return rss, time.monotonic() - started


@dataclass
class Result:
    """Every figure of one run; `passed` is the issue-10 goal."""

    worker_class: str
    connections: int
    interval_seconds: float
    duration_seconds: float
    nofile: int
    head_deadline_seconds: float
    probes_sent: int
    probes_ok: int
    probe_ok_ratio: float
    probe_p50_seconds: float
    probe_max_seconds: float
    longest_failed_probe_run: int
    attacker_connects: int
    attacker_connect_failures: int
    server_closes: int
    lifetime_p50_seconds: float
    lifetime_max_seconds: float
    held_past_deadline: int
    rss_baseline_mib: float
    rss_peak_mib: float
    rss_after_mib: float
    rss_settle_seconds: float
    worker_fds_peak: int
    log_lines: int
    log_mib: float
    accept_flood_lines: int
    passed: bool
    failures: list[str]


def run(args: argparse.Namespace) -> Result:
    """Start the server, measure the baseline, attack while probing, measure the aftermath."""
    tolerance = args.deadline_tolerance
    with tempfile.TemporaryDirectory(prefix="bench-slowloris-") as tmp:
        port = args.port or free_port()
        env = dict(item.split("=", 1) for item in args.server_env)
        server = start(Path(tmp), port, args.nofile, args.worker_class, env)
        try:
            server.wait_ready()
            worker = _worker(server)
            for _ in range(20):
                http_get(port, "/health")
            time.sleep(args.warm_seconds)
            baseline = statistics.median(worker.memory_info().rss / MIB for _ in range(5))
            log_start = len(server.log_bytes())

            probes = ProbeStats()
            stop = threading.Event()
            prober = threading.Thread(
                target=probe_loop, args=(port, stop, args.probe_interval, probes), daemon=True
            )
            sampler = Sampler(worker)
            with sampler.running():
                prober.start()
                stats = asyncio.run(attack(port, args.connections, args.interval, args.duration))
                stop.set()
                prober.join()
            rss_after, settle = _settle_rss(worker, baseline, args.settle)
            log_text = server.log_bytes()[log_start:]
        finally:
            server.stop()

    held = sum(1 for t in stats.lifetimes if t > args.head_deadline + tolerance)
    held += sum(1 for t in stats.open_at_end_ages if t > args.head_deadline + tolerance)
    failures = []
    if probes.ok_ratio < PROBE_GOAL:
        failures.append(f"/health ok in {probes.ok_ratio:.1%} of probes, goal >= 99 %")
    if held:
        failures.append(f"{held} slow connections outlived the {args.head_deadline:g} s deadline")
    if rss_after - baseline > RSS_TOLERANCE_MIB:
        failures.append(f"worker RSS {rss_after - baseline:+.1f} MiB after the attack, goal <= 10")
    lines = log_text.decode(errors="replace").splitlines()
    return Result(
        worker_class=args.worker_class,
        connections=args.connections,
        interval_seconds=args.interval,
        duration_seconds=args.duration,
        nofile=args.nofile,
        head_deadline_seconds=args.head_deadline,
        probes_sent=probes.sent,
        probes_ok=probes.ok,
        probe_ok_ratio=round(probes.ok_ratio, 4),
        probe_p50_seconds=round(statistics.median(probes.latencies or [0.0]), 4),
        probe_max_seconds=round(max(probes.latencies or [0.0]), 3),
        longest_failed_probe_run=probes.longest_failed_run,
        attacker_connects=stats.connects,
        attacker_connect_failures=stats.connect_failures,
        server_closes=len(stats.lifetimes),
        lifetime_p50_seconds=round(statistics.median(stats.lifetimes or [0.0]), 2),
        lifetime_max_seconds=round(max(stats.lifetimes + stats.open_at_end_ages + [0.0]), 2),
        held_past_deadline=held,
        rss_baseline_mib=round(baseline, 1),
        rss_peak_mib=round(max(sampler.rss_mib or [0.0]), 1),
        rss_after_mib=round(rss_after, 1),
        rss_settle_seconds=round(settle, 1),
        worker_fds_peak=max(sampler.fds or [0]),
        log_lines=len(lines),
        log_mib=round(len(log_text) / MIB, 2),
        accept_flood_lines=sum(ACCEPT_FLOOD_TEXT in line for line in lines),
        passed=not failures,
        failures=failures,
    )


def raise_own_nofile(needed: int) -> None:
    """Raise this process's soft fd limit to `needed` (up to the hard limit): one fd a client."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        limit = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1200, help="slow connections")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between lines")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of attack")
    parser.add_argument("--nofile", type=int, default=1024, help="RLIMIT_NOFILE of the server")
    parser.add_argument("--worker-class", default="guarded", help="server.worker_class")
    parser.add_argument(
        "--head-deadline", type=float, default=10.0, help="expected server.head_timeout_seconds"
    )
    parser.add_argument("--deadline-tolerance", type=float, default=2.0, help="seconds of slack")
    parser.add_argument("--probe-interval", type=float, default=0.5, help="seconds")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds for RSS to return")
    parser.add_argument("--warm-seconds", type=float, default=2.0, help="quiet before baseline")
    parser.add_argument("--port", type=int, default=0, help="0 = a free port")
    parser.add_argument(
        "--server-env", action="append", default=[], help="KEY=VALUE for the server"
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_own_nofile(args.connections + 256)
    result = run(args)
    for key, value in asdict(result).items():
        print(f"{key:<28} {value}")
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2))
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
