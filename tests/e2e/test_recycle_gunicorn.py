"""A real gunicorn recycles leaking workers on RSS; clients that never retry see no failure.

Only memsafe is involved (tests/e2e/gunicorn_recycle_conf.py installs RSSRecycler's hooks
around a plain leaking ASGI app): its DrainMiddleware announces `Connection: close` before
a worker exits and, with one worker, the replacement serves before the old one drains. The
clients are plain http.client keep-alive connections that never retry a failed request.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from benchmarks.bench_recycle import Traffic, drive
from loadtests.launcher import REPO_ROOT, GunicornServer

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
logger = logging.getLogger(__name__)

CONFIG = pathlib.Path(__file__).with_name("gunicorn_recycle_conf.py")
MAX_WORKER_RSS_MB = 60  # an idle worker of this app is ~26-29 MiB
LEAK_KIB = 2048
CONNECTIONS = 10
RATE_PER_SECOND = 50.0
MIN_RECYCLES = 10
RUN_LIMIT_SECONDS = 90.0
RECYCLE_LINE = "over its RSS cap"


@contextlib.contextmanager
def _gunicorn(
    tmp_path: pathlib.Path,
    worker_class: str,
    workers: int,
    *,
    leak_kib: int = LEAK_KIB,
    max_requests: int = 0,
) -> Iterator[GunicornServer]:
    """gunicorn with memsafe's recipe config serving the leaking app, ready; stopped after."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "E2E_WORKERS": str(workers),
        "E2E_WORKER_CLASS": worker_class,
        "E2E_MAX_WORKER_RSS_MB": str(MAX_WORKER_RSS_MB),
        "E2E_LEAK_KIB": str(leak_kib),
        "E2E_MAX_REQUESTS": str(max_requests),
    }
    server = GunicornServer(
        "tests.e2e.leaky_asgi:app",
        env=env,
        log_path=tmp_path / "gunicorn.log",
        config=CONFIG,
        ready_path="/",
        ready_timeout_seconds=15.0,
        stop_timeout_seconds=20.0,
    )
    with server:
        yield server


def _settled_worker_count(server: GunicornServer, expected: int) -> int:
    """The master's worker count once recycles in progress are done (at most 10 s)."""
    deadline = time.monotonic() + 10
    count = -1
    while time.monotonic() < deadline:
        count = len(psutil.Process(server.process.pid).children())
        if count == expected:
            break
        time.sleep(0.1)
    return count


def _stop_after_recycles(
    server: GunicornServer,
    stop: threading.Event,
    line: str = RECYCLE_LINE,
    count: int = MIN_RECYCLES,
) -> None:
    while not stop.wait(0.2):
        if server.log().count(line) >= count:
            stop.wait(1.0)  # let the last replacement take over under traffic
            stop.set()


def _drive_until_recycles(
    server: GunicornServer, line: str = RECYCLE_LINE, count: int = MIN_RECYCLES
) -> Traffic:
    """Never-retrying keep-alive traffic until the log shows `count` lines `line` (or timeout)."""
    stop = threading.Event()
    watcher = threading.Thread(
        target=_stop_after_recycles, args=(server, stop, line, count), daemon=True
    )
    watcher.start()
    traffic = drive(
        server.port,
        path="/",
        connections=CONNECTIONS,
        rate=RATE_PER_SECOND,
        duration_seconds=RUN_LIMIT_SECONDS,
        stop=stop,
    )
    stop.set()
    watcher.join(timeout=5)
    return traffic


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    "worker_class",
    [
        pytest.param("asgi", id="gunicorn-asgi"),
        pytest.param("uvicorn_worker.UvicornWorker", id="uvicorn-worker"),
    ],
)
def test_keep_alive_clients_that_never_retry_see_no_failure_across_recycles(
    tmp_path: pathlib.Path, worker_class: str, workers: int
) -> None:
    with _gunicorn(tmp_path, worker_class, workers) as server:
        traffic = _drive_until_recycles(server)
        final_workers = _settled_worker_count(server, workers)
    log = server.log()
    recycles = log.count(RECYCLE_LINE)
    logger.info(
        "%s, %d worker(s): %d requests, %d failed, %d recycles, %d pids, max %.0f ms",
        worker_class,
        workers,
        traffic.requests,
        len(traffic.failures),
        recycles,
        len(traffic.pids),
        max(traffic.latencies_ms, default=0.0),
    )
    assert traffic.failures == [], log[-5000:]
    assert recycles >= MIN_RECYCLES, log[-5000:]
    assert len(traffic.pids) > MIN_RECYCLES  # answers came from the replacements too
    assert "Traceback" not in log
    assert "exited with code" not in log
    assert final_workers == workers  # an overlap's extra slot was given back every time
    if workers == 1:
        # The overlap ran: each recycle asked the master for its replacement first.
        assert log.count("asked master") >= MIN_RECYCLES, log[-5000:]
        assert log.count("Handling signal: ttin") >= MIN_RECYCLES, log[-5000:]


@pytest.mark.parametrize(
    "worker_class",
    [
        pytest.param("asgi", id="gunicorn-asgi"),
        pytest.param("uvicorn_worker.UvicornWorker", id="uvicorn-worker"),
    ],
)
def test_max_requests_restarts_a_lone_worker_with_overlap_and_no_failure(
    tmp_path: pathlib.Path, worker_class: str
) -> None:
    recycles = 5
    with _gunicorn(tmp_path, worker_class, 1, leak_kib=0, max_requests=40) as server:
        traffic = _drive_until_recycles(server, "asked master", recycles)
        final_workers = _settled_worker_count(server, 1)
    log = server.log()
    assert traffic.failures == [], log[-5000:]
    assert log.count("asked master") >= recycles, log[-5000:]
    assert "max_requests 40 reached" in log
    assert len(traffic.pids) > recycles
    assert final_workers == 1
    assert "Traceback" not in log
