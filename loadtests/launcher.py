"""The one way tests, benchmarks and load tests run the real gunicorn and stop it again."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from app.core.config import PLATFORM_ENV_VARS
from app.server import serve

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # loopback only: what these servers answer never leaves this machine
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
LOG_TAIL_LINES = 40
# app/main.py logs this once per worker when its lifespan start-up is done.
WORKER_READY_TEXT = "worker ready:"
# Env vars the settings loader (its platform variables) or config/gunicorn.conf.py (HOST, PORT)
# read besides APP_*: a developer's shell must not change a server a test or benchmark configures.
SERVER_ENV_VARS = frozenset({*PLATFORM_ENV_VARS.values(), "HOST", "PORT"})


class ServerStartError(RuntimeError):
    """gunicorn exited or did not answer in time; the message ends with its log's last lines."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def isolated_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's env without APP_* and SERVER_ENV_VARS, then `overrides` on top."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("APP_") and key not in SERVER_ENV_VARS
    }
    env.update(overrides or {})
    return env


def http_get(port: int, path: str, *, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET http://127.0.0.1:port/path on a fresh connection; (status, body)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def stop_process(
    process: subprocess.Popen[bytes],
    *,
    timeout: float = STOP_TIMEOUT_SECONDS,
    is_group: bool = True,
) -> int:
    """SIGTERM (graceful), SIGKILL after timeout; return the exit code. Safe to call twice.

    With is_group the signals go to the process group the process leads (it was started with
    start_new_session), so stragglers of the group are killed too.
    """

    def send(signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if is_group:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)

    if process.poll() is None:
        send(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    if is_group or process.poll() is None:
        send(signal.SIGKILL)
    return process.wait()


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit(143) in this process, as Ctrl-C raises KeyboardInterrupt.

    The default action ends the process at once; raising instead unwinds every `finally` and
    `with` block, so a runner that is terminated still stops its server and removes its cgroup.
    """

    def _raise(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise)


class GunicornServer:
    """A gunicorn master started by the image's and `make run`'s command, on host:port.

    `with GunicornServer(...) as server:` starts it, waits until `ready_path` answers 200 and
    stops it on the way out (SIGTERM, then SIGKILL after stop_timeout_seconds). start(),
    wait_ready() and stop() do the same step by step. env is the whole environment of the
    server (default: this process's); HOST and PORT are set from host and port. With
    log_path None the server writes to this process's stdout and stderr.

    Thread safety: none; one thread starts and stops a server (stop() may be called twice).
    """

    def __init__(
        self,
        app: str = serve.APP,
        *,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        host: str = HOST,
        log_path: Path | None = None,
        config: Path = REPO_ROOT / serve.GUNICORN_CONFIG,
        ready_path: str = "/health",
        ready_timeout_seconds: float = READY_TIMEOUT_SECONDS,
        stop_timeout_seconds: float = STOP_TIMEOUT_SECONDS,
        is_group: bool = False,
        command_prefix: Sequence[str] = (),
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.port = port or free_port()
        self.host = host
        self.env = {**(os.environ if env is None else env), "HOST": host, "PORT": str(self.port)}
        self.log_path = log_path
        self.config = config
        self.ready_path = ready_path
        self.ready_timeout_seconds = ready_timeout_seconds
        self.stop_timeout_seconds = stop_timeout_seconds
        self.is_group = is_group
        self.command_prefix = tuple(command_prefix)
        self.preexec_fn = preexec_fn
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The gunicorn master; start() must have run."""
        if self._process is None:
            msg = f"gunicorn for {self.app} on port {self.port} was never started"
            raise RuntimeError(msg)
        return self._process

    @property
    def pid(self) -> int:
        """The master's pid."""
        return self.process.pid

    @property
    def url(self) -> str:
        """http://host:port, reachable from this machine."""
        return f"http://{self._probe_host}:{self.port}"

    @property
    def _probe_host(self) -> str:
        return HOST if self.host == "0.0.0.0" else self.host

    def command(self) -> list[str]:
        """The production start command with this config and app, after the prefix.

        app.server.serve checks the settings, then execs gunicorn in the same process: the
        pid, process group (is_group) and whatever preexec_fn set (rlimits, cgroup) are the
        gunicorn master's. The prefix is e.g. `systemd-run --scope ...` (loadtests.emulate).
        """
        args = ["--config", str(self.config), self.app]
        return [*self.command_prefix, sys.executable, "-m", serve.__name__, *args]

    def start(self) -> GunicornServer:
        """Start the master (once) and return self; it is not ready yet, see wait_ready()."""
        if self._process is not None:
            return self
        with contextlib.ExitStack() as stack:
            log = stack.enter_context(self.log_path.open("wb")) if self.log_path else None
            self._process = subprocess.Popen(
                self.command(),
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT if log else None,
                start_new_session=self.is_group,
                preexec_fn=self.preexec_fn,
            )
        return self

    def wait_ready(self, workers: int = 0) -> float:
        """Wait until ready_path answers 200 (and `workers` workers logged WORKER_READY_TEXT).

        Returns the seconds waited. Counting workers needs log_path and the app's INFO log.

        Raises:
            ServerStartError: gunicorn exited first, or was not ready in ready_timeout_seconds.
        """
        started = time.monotonic()
        while time.monotonic() - started < self.ready_timeout_seconds:
            code = self.process.poll()
            if code is not None:
                msg = f"gunicorn ({self.app}) exited with code {code} before it was ready"
                raise ServerStartError(self._with_log_tail(msg))
            if workers <= 0 or self.log().count(WORKER_READY_TEXT) >= workers:
                with contextlib.suppress(OSError):
                    url = f"{self.url}{self.ready_path}"
                    with urllib.request.urlopen(url, timeout=2.0) as response:
                        if response.status == 200:
                            return time.monotonic() - started
            time.sleep(0.1)
        msg = (
            f"gunicorn ({self.app}) not ready on {self.url}{self.ready_path} after "
            f"{self.ready_timeout_seconds:g} s"
        )
        raise ServerStartError(self._with_log_tail(msg))

    def stop(self, timeout_seconds: float | None = None) -> int:
        """SIGTERM, then SIGKILL after the timeout (default stop_timeout_seconds); exit code."""
        timeout = self.stop_timeout_seconds if timeout_seconds is None else timeout_seconds
        return stop_process(self.process, timeout=timeout, is_group=self.is_group)

    def log_bytes(self) -> bytes:
        """What the server wrote to log_path so far (empty without a log file)."""
        if self.log_path is None or not self.log_path.exists():
            return b""
        return self.log_path.read_bytes()

    def log(self) -> str:
        """log_bytes() as text, undecodable bytes replaced."""
        return self.log_bytes().decode(errors="replace")

    def _with_log_tail(self, msg: str) -> str:
        if self.log_path is None:
            return f"{msg}; its output is above"
        tail = "\n".join(self.log().splitlines()[-LOG_TAIL_LINES:])
        return f"{msg}; last lines of {self.log_path}:\n{tail}"

    def __enter__(self) -> GunicornServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
