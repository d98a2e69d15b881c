"""HTTP benchmark: /users/{id} cache hits vs a bare endpoint, per worker class; idle RSS.

Run: `.venv/bin/python -m benchmarks.bench_http` (or `make bench-http`). It starts the real
gunicorn with config/gunicorn.conf.py on a free loopback port, serving this module's `app`:
the service from create_app() plus one extra route, `/bench/bare/{user_id}`, a bare FastAPI
endpoint returning the same JSON without the service, the cache or the store. Both routes go
through the same middleware, server and worker, and the load alternates between them round by
round, so drift on a shared machine hits both alike. The load generator is a small asyncio
keep-alive HTTP/1.1 client (no wrk needed). Then it measures idle memory of master + 2 workers
with and without preload + gc.freeze: RSS, and each worker's USS (memory only it holds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from app.api.routes.users import User
from app.core.config import get_settings
from app.main import create_app, lazy_app_getattr
from app.store import UserStore, ensure_seeded
from loadtests.launcher import GunicornServer, ServerStartError, free_port, isolated_env

MIB = 1024 * 1024
HOT_IDS = 200  # ids the users run cycles through, all cached after warm-up


def _build_app() -> Any:
    settings = get_settings()
    ensure_seeded(settings.store.path, settings.store.seed_users)
    store = UserStore(settings.store.path)
    users = {i: store.get_user(i) for i in range(1, HOT_IDS + 1)}
    store.close()
    application = create_app(settings)

    @application.get("/bench/bare/{user_id}")
    async def bare(user_id: int) -> User:
        """The same JSON as /users/{user_id}, straight from a dict built at start-up."""
        return User.model_validate(users[user_id])

    return application


__getattr__ = lazy_app_getattr(__name__, _build_app)


def start_server(data_dir: Path, env_overrides: dict[str, str], workers: int) -> GunicornServer:
    """gunicorn serving this module's app with `workers` workers, each done with its start-up."""
    env = isolated_env(
        {
            "APP_CONFIG": "config/local.yaml",
            "APP_SERVER__WORKERS": str(workers),
            "APP_STORE__PATH": str(data_dir / "app.sqlite3"),
            "APP_LOGGING__ACCESS_LOG": "false",
            "APP_LOGGING__LEVEL": "WARNING",
            "MALLOC_ARENA_MAX": "2",
            **env_overrides,
        }
    )
    port = free_port()
    server = GunicornServer(
        "benchmarks.bench_http:app",
        env=env,
        port=port,
        log_path=data_dir / f"gunicorn-{port}.log",
        ready_timeout_seconds=30.0,
    )
    server.start()
    try:
        server.wait_ready()
        # The WARNING log level hides the workers' ready lines: count the forked workers, then
        # give every one a second to finish its lifespan start-up.
        deadline = time.monotonic() + 30
        while len(psutil.Process(server.pid).children()) < workers:
            if time.monotonic() > deadline:
                msg = f"gunicorn forked fewer than {workers} workers in 30 s"
                raise ServerStartError(msg)
            time.sleep(0.1)
        time.sleep(1.0)
    except BaseException:
        server.stop()
        raise
    return server


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    body = await reader.readexactly(length)
    return status, body


async def _one_request(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
    try:
        return await _read_response(reader)
    finally:
        writer.close()


@dataclass
class RoundResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)


async def _load(port: int, prefix: str, connections: int, seconds: float) -> RoundResult:
    """Keep `connections` keep-alive connections busy on `prefix{id}` for `seconds`."""
    result = RoundResult()
    stop_at = time.perf_counter() + seconds

    async def one_connection(offset: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        user_id = offset
        try:
            while time.perf_counter() < stop_at:
                user_id = user_id % HOT_IDS + 1
                request = f"GET {prefix}{user_id} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
                started = time.perf_counter()
                writer.write(request)
                status, _ = await _read_response(reader)
                result.latencies.append(time.perf_counter() - started)
                result.requests += 1
                if status != 200:
                    result.errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection(i * 37) for i in range(connections)))
    result.seconds = time.perf_counter() - started
    return result


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class RouteStats:
    rps: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


def bench_worker_class(
    data_dir: Path, worker_class: str, args: argparse.Namespace
) -> dict[str, RouteStats]:
    server = start_server(data_dir, {"APP_SERVER__WORKER_CLASS": worker_class}, args.workers)
    routes = {"users": "/users/", "bare": "/bench/bare/"}
    stats = {name: RouteStats() for name in routes}
    try:
        for prefix in routes.values():  # warm-up: fill the cache, JIT nothing, open paths
            asyncio.run(_load(server.port, prefix, args.connections, 0.5))
        for round_index in range(args.rounds):
            order = list(routes.items())
            if round_index % 2:
                order.reverse()
            for name, prefix in order:
                result = asyncio.run(_load(server.port, prefix, args.connections, args.seconds))
                stats[name].rps.append(result.requests / result.seconds)
                stats[name].latencies.extend(result.latencies)
                stats[name].errors += result.errors
    finally:
        server.stop()
    return stats


def _tree_memory(pid: int) -> tuple[dict[str, float], list[dict[str, float]]]:
    master = psutil.Process(pid)
    master_info = master.memory_full_info()
    workers = []
    for child in master.children():
        info = child.memory_full_info()
        workers.append(
            {"pid": child.pid, "rss": info.rss / MIB, "uss": info.uss / MIB, "pss": info.pss / MIB}
        )
    return {
        "rss": master_info.rss / MIB,
        "uss": master_info.uss / MIB,
        "pss": master_info.pss / MIB,
    }, workers


def bench_idle_memory(
    data_dir: Path, preload: bool
) -> tuple[dict[str, float], list[dict[str, float]]]:
    server = start_server(data_dir, {"APP_SERVER__PRELOAD": str(preload).lower()}, workers=2)
    try:
        for _ in range(4):  # touch both workers' request path once, as a health check would
            asyncio.run(_one_request(server.port, "/health"))
        time.sleep(1.0)
        return _tree_memory(server.process.pid)
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per round and route")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per route (interleaved)")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--workers", type=int, default=1, help="workers for the throughput runs")
    parser.add_argument(
        "--classes",
        default="guarded,asgi,uvicorn",
        help="worker classes to compare, comma-separated",
    )
    args = parser.parse_args(argv)
    print(
        f"# bench_http: {args.rounds} interleaved rounds x {args.seconds:g}s per route, "
        f"{args.connections} keep-alive connections, {args.workers} worker(s), "
        f"{os.cpu_count()} CPUs seen, Python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        data_dir = Path(tmp)
        header = (
            f"{'worker class':<14}{'route':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'errors':>8}{'ratio':>8}"
        )
        print(header)
        print("-" * len(header))
        for worker_class in [c.strip() for c in args.classes.split(",") if c.strip()]:
            stats = bench_worker_class(data_dir, worker_class, args)
            bare_rps = statistics.median(stats["bare"].rps)
            for name, label in (("users", "/users/{id} (hit)"), ("bare", "bare endpoint")):
                route = stats[name]
                rps = statistics.median(route.rps)
                print(
                    f"{worker_class:<14}{label:<22}{rps:>9.0f}"
                    f"{_pct(route.latencies, 0.50) * 1000:>9.2f}"
                    f"{_pct(route.latencies, 0.99) * 1000:>9.2f}"
                    f"{route.errors:>8}{rps / bare_rps:>8.2f}"
                )
        print()
        header = f"{'idle, 2 workers':<26}{'process':<10}{'RSS MiB':>9}{'USS MiB':>9}{'PSS MiB':>9}"
        print(header)
        print("-" * len(header))
        for preload in (True, False):
            label = "preload + gc.freeze" if preload else "no preload"
            master, workers = bench_idle_memory(data_dir, preload)
            print(
                f"{label:<26}{'master':<10}{master['rss']:>9.1f}{master['uss']:>9.1f}{master['pss']:>9.1f}"
            )
            for index, worker in enumerate(workers):
                name = f"worker {index + 1}"
                print(
                    f"{label:<26}{name:<10}{worker['rss']:>9.1f}"
                    f"{worker['uss']:>9.1f}{worker['pss']:>9.1f}"
                )
            total_rss = master["rss"] + sum(w["rss"] for w in workers)
            total_pss = master["pss"] + sum(w["pss"] for w in workers)
            print(f"{label:<26}{'total':<10}{total_rss:>9.1f}{'':>9}{total_pss:>9.1f}")


if __name__ == "__main__":
    main()
