"""Start the real gunicorn with config/gunicorn.conf.py on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from loadtests.server import free_port

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).parent / "gunicorn"
START_TIMEOUT_SECONDS = 20.0


@dataclass
class Server:
    """A running gunicorn master; `log()` reads what it printed so far."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, workers: int) -> None:
        """Wait until `workers` distinct workers have logged that they are ready."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited early:\n{self.log()}")
            if self.log().count("worker ready:") >= workers:
                with httpx.Client(base_url=self.url, timeout=2.0) as client:
                    try:
                        if client.get("/health").status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
            time.sleep(0.05)
        raise AssertionError(f"gunicorn not ready in {START_TIMEOUT_SECONDS}s:\n{self.log()}")

    def stop(self, timeout_seconds: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


ServerFactory = Callable[..., Server]


def spawn(
    tmp_path: Path,
    env_overrides: dict[str, str],
    profile: str = "local",
    app: str = "app.main:app",
    port: int | None = None,
) -> Server:
    """Start gunicorn exactly like `make run`, with a private data dir and the given env."""
    port = port or free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("APP_")
        and key not in {"WEB_CONCURRENCY", "ADMIN_TOKEN", "METRICS_TOKEN", "PORT", "HOST"}
    }
    env.update(
        {
            "APP_CONFIG": f"config/{profile}.yaml",
            "PORT": str(port),
            "APP_STORE__PATH": str(tmp_path / "data" / "app.sqlite3"),
            "APP_LOGGING__ACCESS_LOG": "false",
            "PYTHONUNBUFFERED": "1",
            "MALLOC_ARENA_MAX": "2",
        }
    )
    env.update(env_overrides)
    log_path = tmp_path / f"gunicorn-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(GUNICORN), "-c", "config/gunicorn.conf.py", app],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return Server(process=process, port=port, log_path=log_path, env=env)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start gunicorn servers for a test; every one still running is stopped at the end."""
    servers: list[Server] = []

    def start(env: dict[str, str] | None = None, *, workers: int = 2, wait: bool = True) -> Server:
        overrides = {"APP_SERVER__WORKERS": str(workers), **(env or {})}
        server = spawn(tmp_path, overrides)
        servers.append(server)
        if wait:
            server.wait_ready(workers)
        return server

    yield start
    for server in servers:
        server.stop()
