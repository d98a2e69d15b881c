"""The load-test tools read the server's settings through the app's loader, env included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.core.config import Settings, SettingsError, load_settings
from loadtests import run
from loadtests.launcher import REPO_ROOT
from loadtests.server import server_env, server_settings


def _as_the_app(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """What the app itself loads in a process whose whole env is `env`, run from the repo."""
    for key in list(os.environ):
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(REPO_ROOT)
    return load_settings()


def test_env_overrides_are_honoured_exactly_as_the_app_honours_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    extra = [
        "APP_CACHES__USERS__MAX_SIZE=1234",
        "APP_CACHES__USERS__POLICY=slru",
        "APP_PAYLOAD__MAX_SIZE_KIB=64",
        "APP_STORE__SEED_USERS=77",
        "WEB_CONCURRENCY=3",  # Render's variable: the loader folds it into server.workers
    ]
    env = server_env("starter", extra)
    before = dict(os.environ)
    ours = server_settings(env)
    assert dict(os.environ) == before  # the loader read env (environ=), never os.environ
    assert ours.caches.users.max_size == 1234
    assert ours.caches.users.policy == "slru"
    assert (ours.payload.max_size_kib, ours.store.seed_users, ours.server.workers) == (64, 77, 3)
    app = _as_the_app(monkeypatch, env)
    # Only the path differs: the tools name the profile from the repo root, the app from cwd.
    assert ours.model_dump(exclude={"config_file"}) == app.model_dump(exclude={"config_file"})


def test_keys_the_profile_leaves_out_take_the_apps_defaults(tmp_path: Path) -> None:
    profile = tmp_path / "bare.yaml"
    profile.write_text("server:\n  workers: 1\n")
    settings = server_settings(server_env("starter", [f"APP_CONFIG={profile}"]))
    defaults = Settings.model_fields
    assert settings.caches.users.policy == defaults["caches"].default.users.policy
    assert settings.payload.max_size_kib == defaults["payload"].default.max_size_kib


def test_a_missing_profile_gives_the_loaders_message(monkeypatch: pytest.MonkeyPatch) -> None:
    env = server_env("no-such-profile", [])
    with pytest.raises(SettingsError) as ours:
        server_settings(env)
    monkeypatch.setenv("APP_CONFIG", str(REPO_ROOT / "config" / "no-such-profile.yaml"))
    with pytest.raises(SettingsError) as app:
        load_settings()
    assert str(ours.value) == str(app.value)
    assert "no-such-profile.yaml' (from APP_CONFIG) not found" in str(ours.value)


def test_an_invalid_env_value_is_named_as_the_app_names_it() -> None:
    with pytest.raises(SettingsError, match=r"in env APP_SERVER__WORKERS: key 'server\.workers'"):
        server_settings(server_env("starter", ["APP_SERVER__WORKERS=0"]))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--profile", "no-such-profile"], "no-such-profile.yaml' (from APP_CONFIG) not found"),
        (
            ["--server-env", "APP_SERVER__WORKERS=0"],
            "env APP_SERVER__WORKERS: key 'server.workers'",
        ),
        (["--server-env", "novalue"], "--server-env must be KEY=VALUE"),
    ],
)
def test_the_runner_prints_the_message_and_exits_2_before_any_report(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    argv: list[str],
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # run.main moves to the repo root; the fixture moves back
    reports = tmp_path / "reports"
    assert run.main([*argv, "--reports-dir", str(reports)]) == run.EXIT_BAD_ARGUMENTS
    err = capsys.readouterr().err
    assert err.startswith("loadtest: ")
    assert expected in err
    assert "Traceback" not in err
    assert not reports.exists()
