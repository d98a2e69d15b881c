"""`make dev` and `make run`'s pre-check: app.core.dev and app.core.check."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from app.core import check, dev
from app.core.config import load_settings
from app.core.logging import log_config
from tests.app.conftest import ROOT


def test_dev_watches_only_the_sources_and_profiles() -> None:
    assert dev.WATCHED_DIRS == ["app", "memsafe", "config"]
    assert "*.yaml" in dev.WATCHED_PATTERNS
    assert all((ROOT / d).is_dir() for d in dev.WATCHED_DIRS)


def test_dev_logs_requests_once_in_the_app_format() -> None:
    config = log_config("INFO", "uvicorn")
    assert config["loggers"]["uvicorn.access"]["level"] == "WARNING"
    assert config["formatters"]["app"]["()"] == "app.core.logging.OneLineFormatter"


def test_dev_refuses_bad_settings_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "abc")
    assert dev.main(["--port", "1"]) == 2
    assert capsys.readouterr().err.startswith("invalid configuration: ")


def test_check_is_silent_when_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert check.main() == 0
    assert capsys.readouterr() == ("", "")


def _run_check(**env: str) -> subprocess.CompletedProcess[str]:
    """`python -m app.core.check` with only PATH, the local profile and `env`."""
    return subprocess.run(
        [sys.executable, "-m", "app.core.check"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "APP_CONFIG": "config/local.yaml", **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_check_names_a_bad_web_concurrency_where_gunicorn_would_crash() -> None:
    result = _run_check(WEB_CONCURRENCY="abc")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "invalid configuration: invalid settings in env WEB_CONCURRENCY: 'abc' is not a worker "
        "count; allowed: an integer 1-32, or unset (server.workers from the profile)"
    ]


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_docker_build_without_the_command_says_what_is_missing() -> None:
    result = _make("docker-build", "DOCKER=/nonexistent/docker")
    assert result.returncode != 0
    assert "docker-build: no '/nonexistent/docker' command; install Docker" in result.stderr
    assert "Cannot connect" not in result.stderr


def test_docker_run_without_an_engine_says_it_is_not_running() -> None:
    result = _make("docker-run", "DOCKER=false")  # a command that exists; its `info` fails
    assert result.returncode != 0
    assert "docker-run: 'false' is installed but its engine is not running" in result.stderr


def test_first_install_says_what_it_is_doing() -> None:
    result = _make("-n", "-W", "requirements/dev.lock", "install")
    assert "Installing the locked dependencies into .venv" in result.stdout


def test_check_leaves_a_stray_app_variable_to_the_apps_own_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("APP_NOT_A_SETTING", "1")
    logger = logging.getLogger(check.CONFIG_LOGGER)
    level = logger.level
    assert check.main() == 0
    assert not caplog.records
    assert logger.level == level  # restored: the app's own load still warns
    load_settings()
    assert [r.getMessage() for r in caplog.records] == [
        "env APP_NOT_A_SETTING matches no settings key and is ignored"
    ]


def test_check_prints_nothing_for_a_stray_app_variable() -> None:
    """Not even through logging's last-resort handler (logging is not configured there)."""
    result = _run_check(APP_NOT_A_SETTING="1")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
