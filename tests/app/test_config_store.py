"""Store and coherence settings: URLs from the platform env only, masked, bounds cross-checked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from app.core.config import SettingsError, load_settings
from tests.app.conftest import ROOT, ProfileWriter


@pytest.mark.parametrize(
    ("section", "key", "env"),
    [("store", "database_url", "DATABASE_URL"), ("coherence", "redis_url", "REDIS_URL")],
)
def test_a_url_in_a_file_is_rejected_naming_the_env_var(
    write_profile: ProfileWriter, section: str, key: str, env: str
) -> None:
    path = write_profile({section: {key: "postgresql://u:hunter2@h/db"}})
    with pytest.raises(SettingsError, match=rf"{section}\.{key}.*{env}") as info:
        load_settings(path)
    assert "hunter2" not in str(info.value)


def test_platform_urls_are_read_and_masked(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw1@db/x")
    monkeypatch.setenv("REDIS_URL", "redis://:pw2@kv:6379")
    settings = load_settings(write_profile())
    assert settings.store.database_url is not None
    assert settings.store.database_url.get_secret_value() == "postgresql://u:pw1@db/x"
    assert settings.coherence.redis_url is not None
    masked = str(settings.masked())
    assert "pw1" not in masked
    assert "pw2" not in masked


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"store": {"pool_min_size": 5, "pool_max_size": 2}}, "store.pool_min_size=5"),
        (
            {"coherence": {"reconnect_min_seconds": 9, "reconnect_max_seconds": 1}},
            "coherence.reconnect_min_seconds=9",
        ),
        ({"store": {"database_schema": "Bad-Name"}}, "store.database_schema"),
        ({"store": {"max_page_size": 0}}, "store.max_page_size"),
    ],
)
def test_bad_store_settings_name_the_key(
    write_profile: ProfileWriter, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        load_settings(write_profile(overrides))


def test_the_embedded_default_imports_no_server_client() -> None:
    # redis-py and psycopg add ~6 and ~9 MiB per worker: only DATABASE_URL/REDIS_URL load them.
    code = (
        "import sys; from app.main import create_app; from app.core.config import load_settings; "
        "create_app(load_settings('config/local.yaml')); "
        "print(sorted(m for m in ('redis', 'psycopg', 'psycopg_pool') if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"
