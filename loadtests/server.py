"""The server under test: start gunicorn on 127.0.0.1, wait for it, read its caches, stop it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from loadtests.emulate import Emulation

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # loopback only: the load never leaves this machine
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
HEALTH_PROBES = 24  # /health calls at the end, to reach every worker for its cache stats


@dataclass(frozen=True)
class Server:
    """A started gunicorn and where it listens."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def server_env(profile: str, port: int, extra: Sequence[str]) -> dict[str, str]:
    env = {**os.environ, "APP_CONFIG": f"config/{profile}.yaml", "PORT": str(port)}
    env.pop("WEB_CONCURRENCY", None)  # the profile decides the worker count in a load test
    # The prefill and the cache report read pid and cache stats from /health, which the
    # Render profiles show only with health.details (or the admin token).
    env.setdefault("APP_HEALTH__DETAILS", "true")
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            msg = f"--server-env must be KEY=VALUE, got {item!r}"
            raise ValueError(msg)
        env[key] = value
    return env


def start_server(
    emulation: Emulation,
    *,
    profile: str,
    app: str,
    port: int,
    out_dir: Path,
    extra_env: Sequence[str],
) -> Server:
    """Start gunicorn with the profile, bound to 127.0.0.1 only, inside the emulated plan."""
    bin_dir = Path(sys.executable).parent
    command = [
        *emulation.command_prefix,
        str(bin_dir / "gunicorn"),
        "-c", "config/gunicorn.conf.py",
        "--bind", f"{HOST}:{port}",  # overrides the config's 0.0.0.0: loopback only
        app,
    ]  # fmt: skip
    log_path = out_dir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=server_env(profile, port, extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the runner, which stops the server in order
            preexec_fn=emulation.preexec,
        )
    return Server(process, port, log_path)


def http_get(port: int, path: str, *, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET http://127.0.0.1:port/path on a fresh connection; (status, body)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(server: Server, *, timeout: float = READY_TIMEOUT_SECONDS) -> float:
    """Poll /health until 200; return seconds taken.

    Raises:
        RuntimeError: the server exited or did not answer within timeout.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server.process.poll() is not None:
            code = server.process.returncode
            msg = f"server exited with {code} before it was ready; see {server.log_path}"
            raise RuntimeError(msg)
        try:
            status, _ = http_get(server.port, "/health", timeout=1.0)
            if status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.2)
    msg = f"server not ready on port {server.port} after {timeout:.0f} s; see {server.log_path}"
    raise RuntimeError(msg)


def stop_process(process: subprocess.Popen[bytes], *, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
    """SIGTERM the process group (graceful), SIGKILL it after timeout; return the exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group too
    return process.wait()


@dataclass(frozen=True)
class CacheReport:
    """The server's caches at the end, summed over the workers /health reached."""

    hit_rate: float | None = None
    fill: float | None = None  # entries / max entries: below 1, caches were still filling
    workers: int = 0
    # pid -> (hits, misses) as /health reported them, to take one report from another.
    counts: Mapping[int, tuple[int, int]] = field(default_factory=dict)

    def since(self, baseline: CacheReport) -> CacheReport:
        """This report with hits and misses counted only after `baseline` (e.g. the prefill).

        A worker seen in both is taken as the difference; a worker that appeared since (a
        recycle) counts whole; a worker the baseline saw but this report did not is left out.
        """
        hits = misses = 0
        for pid, (pid_hits, pid_misses) in self.counts.items():
            base_hits, base_misses = baseline.counts.get(pid, (0, 0))
            hits += max(0, pid_hits - base_hits)
            misses += max(0, pid_misses - base_misses)
        rate = hits / (hits + misses) if hits + misses else None
        return replace(self, hit_rate=rate)

    def merged(self, newer: CacheReport) -> CacheReport:
        """`newer`, also counting the workers only this report saw (e.g. since recycled)."""
        counts = {**self.counts, **newer.counts}
        hits = sum(h for h, _ in counts.values())
        misses = sum(m for _, m in counts.values())
        rate = hits / (hits + misses) if hits + misses else None
        return replace(newer, counts=counts, hit_rate=rate)


class CacheWatcher:
    """Polls the workers' cache counts during the load, so recycled workers still count.

    A worker replaced by a recycle takes its counters with it; the last counts seen of it
    stay in the report. Thread safety: one background thread writes `report`; read it after
    stop().
    """

    def __init__(self, port: int, *, interval_seconds: float = 5.0, probes: int = 6) -> None:
        self._port = port
        self._interval_seconds = interval_seconds
        self._probes = probes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cache-watcher", daemon=True)
        self.report = CacheReport()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> CacheReport:
        """Stop polling, take one last full report, and return everything seen."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval_seconds + 30)
        self.report = self.report.merged(cache_report(self._port))
        return self.report

    def _run(self) -> None:
        while not self._stop.wait(self._interval_seconds):
            self.report = self.report.merged(cache_report(self._port, probes=self._probes))


def cache_report(port: int, *, probes: int = HEALTH_PROBES) -> CacheReport:
    """Hit rate and fill over every worker's caches, from /health (one worker answers a call)."""
    per_pid: dict[int, tuple[int, int, int, int]] = {}
    for _ in range(probes):
        try:
            status, body = http_get(port, "/health")
            data = json.loads(body) if status == 200 else {}
        except (OSError, ValueError):
            continue
        caches = data.get("caches") or {}
        totals = caches.get("totals") or {}
        if "pid" not in data or "hits" not in totals:
            continue
        each = (caches.get("caches") or {}).values()
        per_pid[int(data["pid"])] = (
            int(totals["hits"]),
            int(totals.get("misses", 0)),
            sum(int(c.get("size", 0)) for c in each),
            sum(int(c.get("max_size", 0)) for c in each),
        )
    hits, misses, size, capacity = (sum(v[i] for v in per_pid.values()) for i in range(4))
    return CacheReport(
        hit_rate=hits / (hits + misses) if hits + misses else None,
        fill=size / capacity if capacity else None,
        workers=len(per_pid),
        counts={pid: (v[0], v[1]) for pid, v in per_pid.items()},
    )


def payload_bound_kib(profile: str, env: Mapping[str, str]) -> int:
    """payload.max_size_kib of the profile (env APP_PAYLOAD__MAX_SIZE_KIB wins), default 1024."""
    if env.get("APP_PAYLOAD__MAX_SIZE_KIB"):
        return int(env["APP_PAYLOAD__MAX_SIZE_KIB"])
    try:
        data = yaml.safe_load((REPO_ROOT / "config" / f"{profile}.yaml").read_text()) or {}
        return int((data.get("payload") or {}).get("max_size_kib", 1024))
    except (OSError, ValueError, AttributeError):
        return 1024


def users_cache_policy(profile: str, env: Mapping[str, str]) -> str:
    """caches.users.policy of the profile (env APP_CACHES__USERS__POLICY wins); "lru" if unset.

    Only reported next to the hit rates, so a run says which eviction policy produced them.
    """
    if env.get("APP_CACHES__USERS__POLICY"):
        return env["APP_CACHES__USERS__POLICY"]
    try:
        data = yaml.safe_load((REPO_ROOT / "config" / f"{profile}.yaml").read_text()) or {}
        return str(((data.get("caches") or {}).get("users") or {}).get("policy") or "lru")
    except (OSError, ValueError, AttributeError):
        return "lru"
