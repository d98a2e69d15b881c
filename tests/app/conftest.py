"""Fixtures for the app tests: a temporary settings profile and a TestClient with lifespan on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient as TestClient

from app.core.config import Settings, load_settings
from app.main import create_app

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token"
TEST_SEED_USERS = 500
_ENV_VARS = ("APP_CONFIG", "WEB_CONCURRENCY", "ADMIN_TOKEN", "METRICS_TOKEN", "PORT", "HOST")

ProfileWriter = Callable[..., Path]
ClientFactory = Callable[..., TestClient]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No APP_* or platform env var from the outer shell leaks into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("APP_") or name in _ENV_VARS:
            monkeypatch.delenv(name)
    yield


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


@pytest.fixture
def write_profile(tmp_path: Path) -> ProfileWriter:
    """Write config/local.yaml merged with overrides to a temporary file; return its path."""

    def write(overrides: dict[str, Any] | None = None, *, name: str = "profile.yaml") -> Path:
        data = yaml.safe_load((ROOT / "config" / "local.yaml").read_text())
        data["store"]["path"] = str(tmp_path / "data" / "app.sqlite3")
        data["store"]["seed_users"] = TEST_SEED_USERS
        data["logging"]["access_log"] = False
        _merge(data, overrides or {})
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return write


@pytest.fixture
def settings(write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings from a temporary copy of the local profile, with an admin token in the env."""
    monkeypatch.setenv("ADMIN_TOKEN", ADMIN_TOKEN)
    return load_settings(write_profile())


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A TestClient on create_app(settings), entered so the lifespan runs."""
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def make_client() -> Iterator[ClientFactory]:
    """Build and enter more TestClients (closed at the end of the test)."""
    opened: list[TestClient] = []

    def make(settings: Settings, **kwargs: Any) -> TestClient:
        c = TestClient(create_app(settings), **kwargs)
        c.__enter__()
        opened.append(c)
        return c

    yield make
    for c in reversed(opened):
        c.__exit__(None, None, None)


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
