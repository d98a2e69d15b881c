"""The Dockerfile keeps its invariants, and its exact start command serves /health."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import time
import urllib.request

import pytest

from app.server import serve
from loadtests.launcher import free_port
from tests.deploy.dockerfile import Stage, parse

ROOT = pathlib.Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(ROOT / "Dockerfile")


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_multi_stage_on_python_311_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert all(s.base == "python:3.11-slim" for s in stages)


def test_dependencies_come_from_the_lock_in_their_own_layer(stages: list[Stage]) -> None:
    builder = stages[0]
    copies = builder.all("COPY")
    assert copies and copies[0].startswith("requirements/base.lock"), copies
    (install,) = [r for r in builder.all("RUN") if "pip install" in r]
    assert "--require-hashes" in install
    assert "base.lock" in install
    # Application code is copied only after the install, so code edits keep the cache.
    assert not any(c.split()[0] in {".", "app", "memsafe"} for c in copies)


def test_runs_as_a_non_root_user(runtime: Stage) -> None:
    users = runtime.all("USER")
    assert users, "no USER in the final stage"
    assert users[-1] not in {"root", "0"}
    last_user = max(i for i, (kw, _) in enumerate(runtime.instructions) if kw == "USER")
    assert all(kw != "RUN" for kw, _ in runtime.instructions[last_user:])


def test_memory_and_logging_env(runtime: Stage) -> None:
    env = runtime.env()
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert env["HOST"] == "0.0.0.0", "Render routes to $PORT on every interface"
    assert (ROOT / env["APP_CONFIG"]).is_file()


def test_start_is_exec_form_settings_check_then_gunicorn(runtime: Stage) -> None:
    cmd = runtime.exec_form("CMD")
    assert cmd is not None, "CMD must be the exec (JSON array) form"
    assert cmd == ["python", "-m", "app.server.serve"]
    assert serve.gunicorn_argv()[1:] == [
        "-m",
        "gunicorn",
        "--config",
        "config/gunicorn.conf.py",
        "app.main:app",
    ]


def _image_env(runtime: Stage, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **{k: v for k, v in runtime.env().items() if k != "PATH"},
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra,
    }


def test_the_image_start_command_names_a_bad_web_concurrency(runtime: Stage) -> None:
    """Render's WEB_CONCURRENCY with a typo: one line naming it, not gunicorn's traceback."""
    cmd = runtime.exec_form("CMD")
    assert cmd is not None
    done = subprocess.run(
        cmd,
        cwd=ROOT,
        env=_image_env(runtime, WEB_CONCURRENCY="abc"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.strip() == (
        "invalid configuration: invalid settings in env WEB_CONCURRENCY: 'abc' is not a worker "
        "count; allowed: an integer 1-32, or unset (server.workers from the profile)"
    )


def test_health_check_probes_health_in_exec_form(runtime: Stage) -> None:
    probe = runtime.exec_form("HEALTHCHECK")
    assert probe is not None
    assert "/health" in " ".join(probe)


def test_dockerignore_keeps_tests_reports_and_venv_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", "tests", "reports", ".git"} <= ignored


@pytest.mark.slow
@pytest.mark.e2e
def test_the_image_start_command_serves_health(runtime: Stage, tmp_path: pathlib.Path) -> None:
    """Run the CMD exactly as the image would, with the image's ENV, outside a container."""
    cmd = runtime.exec_form("CMD")
    assert cmd is not None
    port = free_port()
    env = _image_env(runtime, PORT=str(port), APP_STORE__PATH=str(tmp_path / "app.sqlite3"))
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    status = r.status
                    break
            except OSError:
                time.sleep(0.3)
        assert status == 200, (tmp_path / "server.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == 0, (tmp_path / "server.log").read_text()
    text = (tmp_path / "server.log").read_text()
    # exec, not a child: gunicorn's master is the process the image starts (PID 1 there)
    assert f"Listening at: http://0.0.0.0:{port} ({proc.pid})" in text
