"""app.server.serve: the one start command (image CMD, make run, the launcher) and its args."""

from __future__ import annotations

import os
import sys

import pytest

from app.server import serve


def test_without_args_it_runs_the_shared_config_and_the_app() -> None:
    assert serve.gunicorn_argv() == [
        sys.executable, "-m", "gunicorn", "--config", "config/gunicorn.conf.py", "app.main:app"
    ]  # fmt: skip


def test_given_args_replace_the_defaults_as_gunicorn_reads_them() -> None:
    args = ["--config", "/x/conf.py", "tests.e2e.leaky_asgi:app"]
    assert serve.gunicorn_argv(args) == [sys.executable, "-m", "gunicorn", *args]


def test_main_checks_the_settings_then_execs_gunicorn_with_the_args(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append((path, list(argv))))
    monkeypatch.setattr(sys, "argv", ["serve", "--config", "c.py", "a:app"])
    serve.main()
    assert calls == [
        (sys.executable, [sys.executable, "-m", "gunicorn", "--config", "c.py", "a:app"])
    ]


def test_main_stops_before_gunicorn_on_invalid_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "abc")
    monkeypatch.setattr(os, "execv", lambda *_: pytest.fail("gunicorn was started"))
    assert serve.main([]) == 2
    assert capsys.readouterr().err.startswith("invalid configuration: ")
