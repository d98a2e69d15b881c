"""/admin/*: bearer token in constant time; 401 without, 403 wrong, 404 when no token is set."""

from __future__ import annotations

import hmac
import os

import pytest

from app.core.config import Settings, load_settings
from app.main import create_app
from tests.app.conftest import ClientFactory, ProfileWriter, TestClient

ROUTES = [
    ("GET", "/admin/caches"),
    ("POST", "/admin/caches/clear"),
    ("POST", "/admin/cleanup"),
    ("GET", "/admin/memory"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_admin_without_token_is_401(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_admin_with_wrong_token_is_403(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, headers={"Authorization": "Bearer nope"})
    assert response.status_code == 403


def test_admin_with_other_scheme_is_401(client: TestClient) -> None:
    response = client.get("/admin/caches", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert response.status_code == 401


def test_token_is_compared_in_constant_time(
    client: TestClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert client.get("/admin/caches", headers=admin_headers).status_code == 200
    assert len(calls) == 1


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_admin_routes_do_not_exist_without_a_token(
    write_profile: ProfileWriter, make_client: ClientFactory, method: str, path: str
) -> None:
    c = make_client(load_settings(write_profile()))  # no ADMIN_TOKEN in this test's env
    assert c.request(method, path, headers={"Authorization": "Bearer x"}).status_code == 404
    assert path not in c.get("/openapi.json").text


def test_cache_stats(client: TestClient, admin_headers: dict[str, str]) -> None:
    client.get("/users/1")
    body = client.get("/admin/caches", headers=admin_headers).json()
    assert body["caches"]["users"]["size"] == 1
    assert body["totals"]["max_total_bytes"] == 64 * 1024 * 1024


def test_clear_caches(client: TestClient, admin_headers: dict[str, str]) -> None:
    client.get("/users/1")
    client.get("/users/2")
    body = client.post("/admin/caches/clear", headers=admin_headers).json()
    assert body == {"cleared": 2, "workers": [{"pid": os.getpid(), "cleared": 2}]}
    assert client.get("/health").json()["caches"]["caches"]["users"]["size"] == 0


def test_clear_one_cache_by_name(client: TestClient, admin_headers: dict[str, str]) -> None:
    client.get("/users/1")
    response = client.post("/admin/caches/clear", params={"name": "users"}, headers=admin_headers)
    assert response.json() == {
        "cleared": 1,
        "cache": "users",
        "workers": [{"pid": os.getpid(), "cleared": 1}],
    }


def test_clear_unknown_cache_is_404(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.post("/admin/caches/clear", params={"name": "nope"}, headers=admin_headers)
    assert response.status_code == 404
    assert "users" in response.json()["detail"]


@pytest.mark.parametrize("level", ["soft", "hard"])
def test_forced_cleanup_runs_a_pass(
    client: TestClient, admin_headers: dict[str, str], level: str
) -> None:
    client.get("/users/1")
    body = client.post("/admin/cleanup", params={"level": level}, headers=admin_headers).json()
    assert body["event"]["level"] == level
    assert body["event"]["actions"]
    assert [w["pid"] for w in body["workers"]] == [os.getpid()]


def test_cleanup_refuses_recycle_level(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.post("/admin/cleanup", params={"level": "recycle"}, headers=admin_headers)
    assert response.status_code == 422


def test_unforced_cleanup_follows_memory(client: TestClient, admin_headers: dict[str, str]) -> None:
    body = client.post("/admin/cleanup", headers=admin_headers).json()
    assert body["level"] == "normal"


def test_memory_report(client: TestClient, admin_headers: dict[str, str]) -> None:
    client.get("/users/1")
    body = client.get("/admin/memory", headers=admin_headers).json()
    assert body["rss_bytes"] > 0
    assert body["uss_bytes"] > 0
    assert body["caches"]["caches"]["users"]["size"] == 1
    assert body["cleanup"]["level"] == "normal"
    assert body["monitor"] is not None
    assert body["store_connections"] >= 1
    assert "frozen_objects" in body["gc"]


def test_admin_before_startup_is_503(settings: Settings, admin_headers: dict[str, str]) -> None:
    c = TestClient(create_app(settings))  # not entered: the lifespan has not run
    assert c.get("/admin/caches", headers=admin_headers).status_code == 503
    assert c.post("/admin/cleanup", headers=admin_headers).status_code == 503


def test_effective_settings_are_served_masked(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    body = client.get("/admin/settings", headers=admin_headers).json()
    assert body["server"]["workers"] == 2
    assert body["admin"]["token"] == "**********"
    assert body["history"]["max_samples"] == 360
    assert client.get("/admin/settings").status_code == 401
