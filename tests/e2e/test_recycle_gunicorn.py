"""A real gunicorn recycles a leaking worker on RSS while clients see no failed request."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil
import pytest

from loadtests.server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
logger = logging.getLogger(__name__)

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = pathlib.Path(__file__).with_name("gunicorn_recycle_conf.py")
MAX_WORKER_RSS_MB = 60  # an idle worker of this app is ~26-29 MiB
LEAK_KIB = 2048
CLIENT_THREADS = 4
KEEP_ALIVE_THREADS = int(os.environ.get("E2E_KEEP_ALIVE_THREADS", "2"))
RUN_LIMIT_SECONDS = 12.0
MAX_REQUESTS = 1500
REQUESTS_AFTER_REPLACEMENT = 30


@dataclass
class Traffic:
    """What the clients saw."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    pids: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    replaced_at: int | None = None
    stale_retries: int = 0


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: pathlib.Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _get(port: int, conn: http.client.HTTPConnection | None = None) -> int:
    """One GET, on ``conn`` (kept alive) or on a fresh connection; the pid that answered."""
    is_fresh = conn is None
    if conn is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Connection": "close"} if is_fresh else {})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            msg = f"status {response.status}: {body[:200]!r}"
            raise RuntimeError(msg)
        pid: int = json.loads(body)["pid"]
        return pid
    except BaseException:
        conn.close()
        raise
    finally:
        if is_fresh:
            conn.close()


# A server may close an idle keep-alive connection just as the client reuses it; RFC 9112
# section 9.3.1 lets a client retry an idempotent request then, and proxies and browsers do.
# Ref: https://www.rfc-editor.org/rfc/rfc9112#section-9.3.1
_STALE_CONNECTION_ERRORS = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
)


def _get_kept_alive(port: int, conn: http.client.HTTPConnection, traffic: Traffic) -> int:
    """GET on a kept-alive connection, retried once on a fresh one if it went stale."""
    is_reused = conn.sock is not None
    try:
        return _get(port, conn)
    except _STALE_CONNECTION_ERRORS:
        if not is_reused:
            raise
    with traffic.lock:
        traffic.stale_retries += 1
    return _get(port, conn)


def _wait_ready(server: Server, deadline_seconds: float = 15.0) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"gunicorn exited early:\n{server.log()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            _get(server.port)
            return
        time.sleep(0.1)
    pytest.fail(f"gunicorn not ready in {deadline_seconds}s:\n{server.log()}")


def _worker_pids(server: Server, count: int) -> set[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = {child.pid for child in psutil.Process(server.process.pid).children()}
        if len(pids) == count:
            return pids
        time.sleep(0.05)
    pytest.fail(f"gunicorn did not reach {count} workers:\n{server.log()}")


@contextlib.contextmanager
def _gunicorn(
    tmp_path: pathlib.Path, worker_class: str, *, is_app_check: bool, interval: str
) -> Iterator[Server]:
    """gunicorn with two workers; the app wrapper is on unless the app checks by itself."""
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "E2E_BIND": f"127.0.0.1:{port}",
        "E2E_WORKER_CLASS": worker_class,
        "E2E_MAX_WORKER_RSS_MB": str(MAX_WORKER_RSS_MB),
        "E2E_CHECK_INTERVAL_SECONDS": interval,
        "E2E_LEAK_KIB": str(LEAK_KIB),
        "E2E_APP_CHECK": "1" if is_app_check else "0",
        "E2E_WRAP_APP": "0" if is_app_check else "1",
    }
    command = [sys.executable, "-m", "gunicorn", "-c", str(CONFIG), "tests.e2e.leaky_asgi:app"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(process, port, log_path)
    try:
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _client(
    server: Server, traffic: Traffic, initial: set[int], stop: threading.Event, keep_alive: bool
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        while not stop.is_set():
            try:
                if keep_alive:
                    pid = _get_kept_alive(server.port, conn, traffic)
                else:
                    pid = _get(server.port)
            except (OSError, http.client.HTTPException, RuntimeError) as exc:
                with traffic.lock:
                    traffic.failures.append(f"keep_alive={keep_alive} {type(exc).__name__}: {exc}")
                continue
            with traffic.lock:
                traffic.pids.append(pid)
                if traffic.replaced_at is None and pid not in initial:
                    traffic.replaced_at = len(traffic.pids)
                done = len(traffic.pids) >= MAX_REQUESTS or (
                    traffic.replaced_at is not None
                    and len(traffic.pids) - traffic.replaced_at >= REQUESTS_AFTER_REPLACEMENT
                )
            if done:
                stop.set()
    finally:
        conn.close()


def _drive(server: Server, initial: set[int]) -> Traffic:
    traffic = Traffic()
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_client, args=(server, traffic, initial, stop, index < KEEP_ALIVE_THREADS)
        )
        for index in range(CLIENT_THREADS)
    ]
    for thread in threads:
        thread.start()
    stop.wait(RUN_LIMIT_SECONDS)
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    return traffic


@pytest.mark.parametrize(
    ("worker_class", "is_app_check", "interval"),
    [
        # gunicorn's own asgi worker calls the pre_request hook.
        pytest.param("asgi", False, "", id="gunicorn-asgi-pre_request"),
        # UvicornWorker calls no hook: post_worker_init wraps the app; the watchdog also runs.
        pytest.param("uvicorn_worker.UvicornWorker", False, "0.5", id="uvicorn-worker-hooks"),
        # The app itself checks after each response, as the monitor middleware's hook does.
        pytest.param("uvicorn_worker.UvicornWorker", True, "", id="uvicorn-worker-app-check"),
    ],
)
def test_leaking_worker_is_replaced_and_no_request_fails(
    tmp_path: pathlib.Path, worker_class: str, is_app_check: bool, interval: str
) -> None:
    with _gunicorn(tmp_path, worker_class, is_app_check=is_app_check, interval=interval) as server:
        _wait_ready(server)
        initial = _worker_pids(server, 2)
        traffic = _drive(server, initial)
        alive_after = {child.pid for child in psutil.Process(server.process.pid).children()}
    log = server.log()
    logger.info(
        "%s: %d requests, %d failures, %d stale keep-alive retries, pids %s -> new %s",
        worker_class,
        len(traffic.pids),
        len(traffic.failures),
        traffic.stale_retries,
        sorted(initial),
        sorted(set(traffic.pids) - initial),
    )
    assert traffic.failures == [], log
    assert traffic.replaced_at is not None, f"no worker was replaced\n{log}"
    new_pids = set(traffic.pids) - initial
    assert new_pids, log
    assert initial - alive_after, "an original worker should be gone"
    assert "over its RSS cap" in log
    assert f"max_worker_rss_mb {MAX_WORKER_RSS_MB}" in log
    assert "Traceback" not in log
    assert "exited with code" not in log
