"""Start the real gunicorn with config/gunicorn.conf.py on a free loopback port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadtests.launcher import GunicornServer, free_port, isolated_env

START_TIMEOUT_SECONDS = 20.0

ServerFactory = Callable[..., GunicornServer]


def spawn(
    tmp_path: Path,
    env_overrides: dict[str, str],
    profile: str = "local",
    app: str = "app.main:app",
    port: int | None = None,
) -> GunicornServer:
    """Start gunicorn exactly like `make run`, with a private data dir and the given env.

    Not ready yet: call wait_ready(workers), and stop() at the end.
    """
    port = port or free_port()
    env = isolated_env(
        {
            "APP_CONFIG": f"config/{profile}.yaml",
            "APP_STORE__PATH": str(tmp_path / "data" / "app.sqlite3"),
            "APP_LOGGING__ACCESS_LOG": "false",
            "PYTHONUNBUFFERED": "1",
            "MALLOC_ARENA_MAX": "2",
            **env_overrides,
        }
    )
    server = GunicornServer(
        app,
        env=env,
        port=port,
        log_path=tmp_path / f"gunicorn-{port}.log",
        ready_timeout_seconds=START_TIMEOUT_SECONDS,
    )
    return server.start()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start gunicorn servers for a test; every one still running is stopped at the end."""
    servers: list[GunicornServer] = []

    def start(
        env: dict[str, str] | None = None, *, workers: int = 2, wait: bool = True
    ) -> GunicornServer:
        overrides = {"APP_SERVER__WORKERS": str(workers), **(env or {})}
        server = spawn(tmp_path, overrides)
        servers.append(server)
        if wait:
            server.wait_ready(workers)
        return server

    yield start
    for server in servers:
        server.stop()
