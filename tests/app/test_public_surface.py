"""What a stranger sees: /health without internals, /metrics behind a token, docs switchable."""

from __future__ import annotations

import pytest

from app.core.config import SettingsError, load_settings
from memsafe import UNMATCHED_ROUTE
from tests.app.conftest import ADMIN_TOKEN, ClientFactory, ProfileWriter, TestClient

RENDER_LIKE = {
    "health": {"details": False},
    "docs": {"openapi": False, "swagger_ui": False, "redoc": False},
}
METRICS_TOKEN = "metrics-token-0123456789"
INTERNALS = {"pid", "rss_bytes", "container", "caches", "cleanup_level", "uptime_seconds"}


def _render_like(write_profile: ProfileWriter, make_client: ClientFactory) -> TestClient:
    return make_client(load_settings(write_profile(RENDER_LIKE)))


def test_public_health_shows_status_version_and_checks_only(
    write_profile: ProfileWriter, make_client: ClientFactory
) -> None:
    c = _render_like(write_profile, make_client)
    response = c.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "version": "0.1.0",
        "checks": {
            "store": {"status": "ok"},
            "invalidation": {"status": "ok", "channel": "sqlite", "down_seconds": 0.0},
        },
    }


@pytest.mark.parametrize("token", [ADMIN_TOKEN, f"  {ADMIN_TOKEN}\t"])
def test_health_details_with_the_admin_token(
    write_profile: ProfileWriter,
    make_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
    token: str,
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", ADMIN_TOKEN)
    c = _render_like(write_profile, make_client)
    body = c.get("/health", headers={"Authorization": f"Bearer {token}"}).json()
    assert set(body) >= INTERNALS


def test_health_wrong_token_gets_the_public_view_not_an_error(
    write_profile: ProfileWriter, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", ADMIN_TOKEN)
    c = _render_like(write_profile, make_client)
    response = c.get("/health", headers={"Authorization": "Bearer wrong-token-0123456789"})
    assert response.status_code == 200
    assert not INTERNALS & set(response.json())


def test_health_details_on_in_the_local_profile(client: TestClient) -> None:
    body = client.get("/health").json()
    assert set(body) >= INTERNALS
    assert body["checks"]["store"] == {"status": "ok"}
    assert body["tiers"]["l1_hits"] == 0  # both tiers' hit rates are details


def test_docs_off_in_render_like_profile(
    write_profile: ProfileWriter, make_client: ClientFactory
) -> None:
    c = _render_like(write_profile, make_client)
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert c.get(path).status_code == 404, path


def test_each_docs_route_has_its_own_key(
    write_profile: ProfileWriter, make_client: ClientFactory
) -> None:
    docs = {"openapi": True, "swagger_ui": False, "redoc": True}
    c = make_client(load_settings(write_profile({"docs": docs})))
    assert c.get("/openapi.json").status_code == 200
    assert c.get("/docs").status_code == 404
    assert "redoc" in c.get("/redoc").text.lower()


def test_docs_pages_without_the_schema_are_refused(write_profile: ProfileWriter) -> None:
    path = write_profile({"docs": {"openapi": False, "swagger_ui": True, "redoc": False}})
    with pytest.raises(SettingsError, match=r"docs\.swagger_ui=true needs docs\.openapi=true"):
        load_settings(path)


def test_docs_routes_are_labelled_by_template_in_metrics(client: TestClient) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 200
    text = client.get("/metrics").text
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert f'route="{path}"' in text, path
    assert f'route="{UNMATCHED_ROUTE}"' not in text


def test_metrics_token_from_env_protects_metrics(
    write_profile: ProfileWriter, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METRICS_TOKEN", f"{METRICS_TOKEN}\n")
    c = make_client(load_settings(write_profile()))
    missing = c.get("/metrics")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert c.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 403
    ok = c.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert ok.status_code == 200
    assert "app_http_requests_total" in ok.text


def test_metrics_open_without_a_token(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 200


def test_metrics_token_in_a_file_is_refused(write_profile: ProfileWriter) -> None:
    path = write_profile({"metrics": {"token": "x" * 20}})
    with pytest.raises(SettingsError, match=r"metrics\.token.*METRICS_TOKEN"):
        load_settings(path)


@pytest.mark.parametrize("raw", ["0123456789abcdef\n", " 0123456789abcdef ", "0123456789abcdef"])
def test_admin_token_is_stripped_on_both_sides(
    write_profile: ProfileWriter,
    make_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
    raw: str,
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", raw)
    c = make_client(load_settings(write_profile()))
    headers = {"Authorization": "Bearer 0123456789abcdef"}
    assert c.get("/admin/caches", headers=headers).status_code == 200


@pytest.mark.parametrize(("name", "key"), [("ADMIN_TOKEN", "admin"), ("METRICS_TOKEN", "metrics")])
@pytest.mark.parametrize("raw", ["short", "  fifteen-chars-x  ", "   \n"])
def test_short_token_stops_startup_naming_the_key_not_the_value(
    write_profile: ProfileWriter,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    key: str,
    raw: str,
) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(SettingsError) as info:
        load_settings(write_profile())
    message = str(info.value)
    assert f"env {name}" in message
    assert f"'{key}.token' is invalid" in message
    assert "at least 16 characters" in message
    if raw.strip():
        assert raw.strip() not in message


def test_masked_settings_hide_the_metrics_token(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METRICS_TOKEN", METRICS_TOKEN)
    masked = load_settings(write_profile()).masked()
    assert masked["metrics"]["token"] == "**********"


def test_openapi_states_the_payload_limit_and_admin_errors(
    write_profile: ProfileWriter, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", ADMIN_TOKEN)
    c = make_client(load_settings(write_profile({"payload": {"max_size_kib": 300}})))
    schema = c.get("/openapi.json").json()
    (size,) = schema["paths"]["/payload"]["get"]["parameters"]
    assert size["schema"]["maximum"] == 300
    assert size["schema"]["minimum"] == 1
    assert c.get("/payload", params={"size_kib": 300}).status_code == 200
    assert c.get("/payload", params={"size_kib": 301}).status_code == 422
    for path, item in schema["paths"].items():
        if path.startswith("/admin"):
            for operation in item.values():
                assert {"401", "403"} <= set(operation["responses"]), path
    assert "503" in schema["paths"]["/users/{user_id}"]["get"]["responses"]
