"""create_app and its lifespan: what starts, what stops, what follows the profile."""

from __future__ import annotations

import importlib
import logging

import pytest

import app.main as main_module
from app.api.deps import AppState
from app.core.config import Settings, load_settings
from app.main import create_app
from memsafe import recycle_worker
from tests.app.conftest import ROOT, ClientFactory, ProfileWriter, TestClient


def test_lifespan_builds_and_tears_down_worker_state(settings: Settings) -> None:
    app = create_app(settings)
    state: AppState = app.state.runtime
    assert state.users is None
    with TestClient(app) as c:
        assert c.get("/users/1").status_code == 200
        assert state.cleanup is not None
        assert state.cleanup.is_running
        assert state.manager is not None
        assert state.manager.names() == ["users"]
        store = state.store
        assert store is not None
        assert store.connections >= 1
        manager = state.manager
    assert state.users is None
    assert state.cleanup is None
    assert state.store is None
    assert store.connections == 0
    assert manager.names() == []


@pytest.mark.parametrize("policy", ["lru", "slru", "tinylfu"])
def test_users_cache_uses_the_policy_of_the_profile(
    write_profile: ProfileWriter, policy: str
) -> None:
    app = create_app(load_settings(write_profile({"caches": {"users": {"policy": policy}}})))
    state: AppState = app.state.runtime
    with TestClient(app) as c:
        assert c.get("/users/1").status_code == 200
        assert state.manager is not None
        cache = state.manager.get_cache("users")
        assert cache is not None
        assert cache.policy == policy


def test_store_is_created_on_first_start(settings: Settings) -> None:
    assert not settings.store.path.exists()
    with TestClient(create_app(settings)):
        assert settings.store.path.exists()


def test_requests_before_startup_get_503(settings: Settings) -> None:
    c = TestClient(create_app(settings))  # not entered: no lifespan
    assert c.get("/users/1").status_code == 503
    health = c.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "failing"
    assert health.json()["checks"]["store"] == {"status": "failing", "error": "store_not_open"}


def test_memory_headers_on_in_local_profile(client: TestClient) -> None:
    headers = client.get("/health").headers
    assert "x-memory-rss-mb" in headers


def test_memory_headers_off_when_profile_says_so(
    write_profile: ProfileWriter, make_client: ClientFactory
) -> None:
    c = make_client(load_settings(write_profile({"monitor": {"add_headers": False}})))
    assert not any(name.startswith("x-memory") for name in c.get("/health").headers)


def test_monitor_can_be_disabled(write_profile: ProfileWriter, make_client: ClientFactory) -> None:
    c = make_client(load_settings(write_profile({"monitor": {"enabled": False}})))
    assert c.get("/users/1").status_code == 200
    assert c.app.state.runtime.monitor is None  # type: ignore[attr-defined]  # FastAPI app


def test_recycle_without_gunicorn_only_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="memsafe.recycle"):
        assert recycle_worker("test") is False
    assert "no RSSRecycler in this process; staying up" in caplog.text


def test_the_cleaner_recycles_through_memsafe_public_recycle_worker(settings: Settings) -> None:
    with TestClient(create_app(settings)) as c:
        state: AppState = c.app.state.runtime  # type: ignore[attr-defined]  # FastAPI app
        assert state.cleanup is not None
        assert state.cleanup._recycle is recycle_worker


def test_module_app_is_built_lazily_from_app_config(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_CONFIG", str(write_profile({"payload": {"max_size_kib": 5}})))
    module = importlib.reload(main_module)
    try:
        # The profile named after import is the one used: nothing was built at import.
        monkeypatch.setenv("APP_CONFIG", str(write_profile({"payload": {"max_size_kib": 9}})))
        app = module.app
        assert module.app is app
        assert app.state.runtime.settings.payload.max_size_kib == 9
    finally:
        importlib.reload(main_module)


def test_unknown_module_attribute_raises() -> None:
    with pytest.raises(AttributeError, match="nope"):
        _ = main_module.nope


def test_openapi_lists_the_public_routes(client: TestClient) -> None:
    paths = set(client.get("/openapi.json").json()["paths"])
    assert {"/health", "/users/{user_id}", "/payload", "/metrics"} <= paths
    assert ROOT.exists()
