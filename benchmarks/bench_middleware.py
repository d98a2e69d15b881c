"""Per-request cost of MemoryMonitorMiddleware against no middleware and BaseHTTPMiddleware.

Run: `.venv/bin/python -m benchmarks.bench_middleware [--quick] [--rounds N] [--check]`.

Everything runs in-process on one event loop with hand-made ASGI scopes, so no socket or HTTP
parser cost hides the middleware's. Two inner apps: a bare ASGI app (two messages) and a
FastAPI app serving ``GET /users/{user_id}``. Around each: nothing; MemoryMonitorMiddleware
with headers on (two statm reads, two headers, per-route stats), and with its default of no
headers; and a BaseHTTPMiddleware doing the same work (two RSS reads, two headers).

Each round times every stack once, in shuffled order, and every request is timed on its own;
"added" is the median request time minus the median without middleware around the same app.
Medians of single requests shrug off the preemptions a shared machine inflicts on a few of
them. The target is at most 10 us added per request by ours.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response

from memsafe.middleware import MemoryMonitor, MemoryMonitorMiddleware
from memsafe.probes import process_rss_bytes

TARGET_ADDED_US = 10.0
MIB = 2**20

Scope = dict[str, Any]
Message = Any
App = Callable[[Scope, Any, Any], Awaitable[None]]


async def bare_app(scope: Scope, receive: Any, send: Any) -> None:
    """The smallest real ASGI app: a 200 with a short body."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/users/{user_id}")
    async def get_user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    return app


class BaseHTTPMemory(BaseHTTPMiddleware):
    """The same work as MemoryMonitorMiddleware with headers, written the BaseHTTPMiddleware way."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        start = process_rss_bytes()
        response = await call_next(request)
        rss = process_rss_bytes()
        response.headers["X-Memory-RSS-MB"] = f"{rss / MIB:.1f}"
        response.headers["X-Memory-Delta-MB"] = f"{(rss - start) / MIB:.1f}"
        return response


def _scope(path: str) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _run_batch(app: App, path: str, requests: int) -> list[float]:
    """Send ``requests`` requests through ``app``; return each one's seconds."""
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    statuses: list[int] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    timings: list[float] = []
    clock = time.perf_counter
    for _ in range(requests):
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await never  # like a server: block until the client disconnects
            raise AssertionError("unreachable")

        scope = _scope(path)
        started = clock()
        await app(scope, receive, send)
        timings.append(clock() - started)
    never.cancel()
    if statuses.count(200) != requests:
        msg = f"expected {requests} responses of 200, got {sorted(set(statuses))}"
        raise RuntimeError(msg)
    return timings


@dataclass
class Stack:
    base: str
    name: str
    app: App
    path: str
    requests: int
    timings: list[float] = field(default_factory=list)


def _stacks(bare_requests: int, fastapi_requests: int) -> list[Stack]:
    def ours(app: Any) -> App:
        return MemoryMonitorMiddleware(app, MemoryMonitor(add_headers=True))

    def ours_quiet(app: Any) -> App:
        return MemoryMonitorMiddleware(app, MemoryMonitor())

    def bare() -> Any:
        return bare_app

    stacks: list[Stack] = []
    makers: list[tuple[str, Callable[[], Any], str, int]] = [
        ("bare ASGI", bare, "/users/1", bare_requests),
        ("FastAPI", fastapi_app, "/users/1", fastapi_requests),
    ]
    for base, make, path, requests in makers:
        stacks.append(Stack(base, "no middleware", make(), path, requests))
        stacks.append(Stack(base, "MemoryMonitorMiddleware", ours(make()), path, requests))
        stacks.append(
            Stack(base, "  same, headers off (default)", ours_quiet(make()), path, requests)
        )
        stacks.append(
            Stack(base, "BaseHTTPMiddleware (same work)", BaseHTTPMemory(make()), path, requests)
        )
    return stacks


async def _bench(rounds: int, bare_requests: int, fastapi_requests: int) -> list[Stack]:
    stacks = _stacks(bare_requests, fastapi_requests)
    for stack in stacks:  # warm up: FastAPI builds its middleware stack on the first call
        await _run_batch(stack.app, stack.path, 50)
    rng = random.Random(1)
    for _ in range(rounds):
        order = stacks[:]
        rng.shuffle(order)
        for stack in order:
            gc.collect()
            stack.timings.extend(await _run_batch(stack.app, stack.path, stack.requests))
    return stacks


def _report(stacks: list[Stack], rounds: int) -> bool:
    header = f"{'app':<10} {'middleware':<31} {'median us':>9} {'p10-p90 us':>15} {'added us':>9}"
    print(header)
    print("-" * len(header))
    ok = True
    baselines: dict[str, float] = {}
    for stack in stacks:
        deciles = statistics.quantiles([t * 1e6 for t in stack.timings], n=10)
        median_us = statistics.median(stack.timings) * 1e6
        baseline = baselines.setdefault(stack.base, median_us)
        added = median_us - baseline
        mark = ""
        if stack.name == "MemoryMonitorMiddleware":
            is_within = added <= TARGET_ADDED_US
            ok = ok and is_within
            mark = "  ok" if is_within else f"  OVER {TARGET_ADDED_US:g} us"
        print(
            f"{stack.base:<10} {stack.name:<31} {median_us:>9.1f}"
            f" {deciles[0]:>7.1f}-{deciles[-1]:<7.1f} {added:>9.1f}{mark}"
        )
    print(
        f"\n{rounds} interleaved rounds, every request timed on its own; 'added' = median"
        f" request time minus the median without middleware around the same app."
        f" Target for MemoryMonitorMiddleware: <= {TARGET_ADDED_US:g} us added."
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds (default 20)")
    parser.add_argument("--quick", action="store_true", help="few rounds, small batches")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when ours adds more than the target"
    )
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    bare_requests, fastapi_requests = (500, 100) if args.quick else (2000, 500)
    print(
        f"Python {sys.version.split()[0]}, bare batches of {bare_requests},"
        f" FastAPI batches of {fastapi_requests} requests\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stacks = asyncio.run(_bench(rounds, bare_requests, fastapi_requests))
    is_within = _report(stacks, rounds)
    return 1 if args.check and not is_within else 0


if __name__ == "__main__":
    raise SystemExit(main())
