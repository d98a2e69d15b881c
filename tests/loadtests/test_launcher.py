"""The one gunicorn launcher, process stop, the SIGTERM handler and the shared request name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from app.core.config import PLATFORM_ENV_VARS
from loadtests.launcher import (
    REPO_ROOT,
    GunicornServer,
    ServerStartError,
    http_get,
    isolated_env,
    stop_process,
)

# Prints "ready", sleeps, and says whether its `finally` ran when it is ended.
SLEEPER = """
import sys, time
{setup}
try:
    print("ready", flush=True)
    time.sleep(60)
finally:
    print("finally ran", flush=True)
"""


def _sleeper(setup: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", SLEEPER.format(setup=setup)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    return child


@pytest.mark.slow
def test_sigterm_unwinds_finally_blocks_with_exit_on_sigterm() -> None:
    child = _sleeper("from loadtests.launcher import exit_on_sigterm; exit_on_sigterm()")
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=10)
    assert out == "finally ran\n"
    assert child.returncode == 128 + signal.SIGTERM


@pytest.mark.slow
def test_without_the_handler_sigterm_skips_finally_blocks() -> None:
    """The failing twin: Python's default SIGTERM ends the process before any cleanup."""
    child = _sleeper("")
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=10)
    assert out == ""
    assert child.returncode == -signal.SIGTERM


@pytest.mark.slow
def test_stop_process_kills_a_single_process_that_ignores_sigterm() -> None:
    stubborn = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 60"])
    time.sleep(0.2)  # the trap is set
    started = time.monotonic()
    assert stop_process(stubborn, timeout=0.5, is_group=False) == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_isolated_env_drops_every_setting_of_the_callers_shell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every platform variable the settings loader reads, and gunicorn.conf.py's HOST and PORT.
    shell = {"APP_SERVER__WORKERS", *PLATFORM_ENV_VARS.values(), "HOST", "PORT"}
    for key in shell:
        monkeypatch.setenv(key, "1")
    monkeypatch.setenv("KEEP_ME", "yes")
    env = isolated_env({"APP_CONFIG": "config/local.yaml", "DATABASE_URL": "postgresql://x"})
    assert not (shell - {"DATABASE_URL"}) & set(env)
    assert (env["KEEP_ME"], env["APP_CONFIG"]) == ("yes", "config/local.yaml")
    assert env["DATABASE_URL"] == "postgresql://x"  # an override is kept


def test_the_command_is_the_production_start_command_with_the_config_and_app() -> None:
    server = GunicornServer("tests.e2e.leaky_asgi:app", port=1, config=Path("/x/conf.py"))
    serve = [sys.executable, "-m", "app.server.serve"]
    assert server.command() == [*serve, "--config", "/x/conf.py", "tests.e2e.leaky_asgi:app"]
    default = GunicornServer(port=1, command_prefix=["systemd-run", "--scope"])
    config = str(REPO_ROOT / "config" / "gunicorn.conf.py")
    assert default.command() == ["systemd-run", "--scope", *serve, "--config", config,
                                 "app.main:app"]  # fmt: skip


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return isolated_env(
        {
            "APP_CONFIG": "config/local.yaml",
            "APP_SERVER__WORKERS": "1",
            "APP_STORE__PATH": str(tmp_path / "app.sqlite3"),
            "APP_STORE__SEED_USERS": "10",
            **extra,
        }
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_server_serves_on_loopback_and_stops_with_exit_code_0(tmp_path: Path) -> None:
    log = tmp_path / "gunicorn.log"
    with GunicornServer(env=_env(tmp_path), log_path=log, is_group=True) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert http_get(server.port, "/health")[0] == 200
        assert server.wait_ready(1) < 1.0  # its one worker has logged that it is ready
        pid = server.pid
        # app.server.serve exec'd gunicorn: the process started is the master, no parent
        # lingers, and it leads the process group stop() signals.
        assert "app.server.serve" not in psutil.Process(pid).cmdline()
        assert os.getpgid(pid) == pid
    assert server.process.returncode == 0
    assert server.stop() == 0  # a second stop is harmless
    assert f"Listening at: http://127.0.0.1:{server.port} ({pid})" in server.log()


@pytest.mark.slow
@pytest.mark.e2e
def test_a_server_that_cannot_start_raises_with_the_end_of_its_log(tmp_path: Path) -> None:
    server = GunicornServer(
        env=_env(tmp_path, APP_CACHES__USERS__MAX_SIZE="0"), log_path=tmp_path / "gunicorn.log"
    )
    with pytest.raises(ServerStartError) as error, server:
        pass
    message = str(error.value)
    assert "exited with code 2 before it was ready" in message
    # The settings check of app.server.serve stops it, before gunicorn is imported.
    assert message.count("invalid configuration: ") == 1
    assert "gunicorn: invalid configuration" not in message
    assert "caches.users.max_size" in message


@pytest.mark.slow
def test_the_health_poller_name_is_shared_without_importing_locust() -> None:
    code = (
        "import sys; from loadtests import locust_io, scenario_hits; "
        "assert locust_io.HEALTH_NAME is scenario_hits.HEALTH_NAME; "
        "print('locust' in sys.modules, 'gevent' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout == "False False\n"
    locustfile = (REPO_ROOT / "loadtests" / "locustfile.py").read_text()
    assert "HEALTH_NAME =" not in locustfile  # it imports the one definition
