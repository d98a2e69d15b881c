"""/admin/ page, its token login and session cookie, and GET /admin/memory/history."""

from __future__ import annotations

import itertools
import re
import time

import pytest

from app.api.routes.admin_page import COOKIE_NAME, is_session_valid, session_value
from app.core.config import Settings, load_settings
from tests.app.conftest import ADMIN_TOKEN, ClientFactory, ProfileWriter, TestClient


def _login(client: TestClient, token: str = ADMIN_TOKEN, **headers: str) -> object:
    return client.post(
        "/admin/login", data={"token": token}, headers=headers, follow_redirects=False
    )


def test_page_without_session_is_the_token_form(client: TestClient) -> None:
    response = client.get("/admin/")
    assert response.status_code == 401
    assert 'type="password"' in response.text and 'method="post"' in response.text
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_login_sets_a_strict_httponly_cookie_without_the_token(client: TestClient) -> None:
    response = client.post("/admin/login", data={"token": ADMIN_TOKEN}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/admin/"
    cookie = response.headers["set-cookie"]
    assert re.search(r"(?i)httponly", cookie) and re.search(r"(?i)samesite=strict", cookie)
    assert "Path=/admin" in cookie and "Max-Age=28800" in cookie
    assert ADMIN_TOKEN not in cookie
    page = client.get("/admin/")
    assert page.status_code == 200
    assert page.text.count('<svg class="chart" data-series="rss"') == 1
    assert 'data-series="cache-users"' in page.text
    assert len(page.content) < 32 * 1024
    assert client.get("/admin/memory/history").status_code == 200


def test_wrong_token_is_403_and_sets_no_cookie(client: TestClient) -> None:
    response = client.post("/admin/login", data={"token": "nope"}, follow_redirects=False)
    assert response.status_code == 403 and "set-cookie" not in response.headers
    assert "wrong" in response.text


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}],
)
def test_cross_site_login_is_refused(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(
        "/admin/login", data={"token": ADMIN_TOKEN}, headers=headers, follow_redirects=False
    )
    assert response.status_code == 403 and "set-cookie" not in response.headers


def test_same_origin_login_is_accepted(client: TestClient) -> None:
    headers = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    response = client.post(
        "/admin/login", data={"token": ADMIN_TOKEN}, headers=headers, follow_redirects=False
    )
    assert response.status_code == 303


def test_oversized_login_body_is_413(client: TestClient) -> None:
    response = client.post("/admin/login", data={"token": "x" * 5000})
    assert response.status_code == 413


def test_session_cookie_does_not_authorize_state_changes(client: TestClient) -> None:
    client.post("/admin/login", data={"token": ADMIN_TOKEN}, follow_redirects=False)
    # A cookie rides along with any same-site request: POSTs still need the bearer header.
    assert client.post("/admin/caches/clear").status_code == 401
    assert client.post("/admin/cleanup").status_code == 401
    assert client.get("/admin/memory").status_code == 401


def test_logout_forgets_the_session(client: TestClient) -> None:
    client.post("/admin/login", data={"token": ADMIN_TOKEN}, follow_redirects=False)
    assert client.get("/admin/").status_code == 200
    client.post("/admin/logout", follow_redirects=False)
    assert client.get("/admin/").status_code == 401


def test_expired_tampered_or_foreign_sessions_are_invalid(
    client: TestClient, write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = client.app.state.runtime  # type: ignore[attr-defined]
    value = session_value(state)
    assert is_session_valid(state, value)
    assert not is_session_valid(state, value, now=time.time() + 9 * 3600)
    expiry, _, mac = value.partition(".")
    assert not is_session_valid(state, f"{int(expiry) + 100}.{mac}")
    assert not is_session_valid(state, "garbage")
    assert not is_session_valid(state, None)
    client.cookies.set(COOKIE_NAME, f"{expiry}.{'0' * 64}", path="/admin")
    assert client.get("/admin/").status_code == 401


def test_rotating_the_token_ends_sessions(
    make_client: ClientFactory, write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", "first-admin-token-0001")
    first = make_client(load_settings(write_profile()))
    value = session_value(first.app.state.runtime)  # type: ignore[attr-defined]
    monkeypatch.setenv("ADMIN_TOKEN", "second-admin-token-0002")
    second = make_client(load_settings(write_profile(name="second.yaml")))
    assert not is_session_valid(second.app.state.runtime, value)  # type: ignore[attr-defined]


def test_history_json_needs_the_token(client: TestClient, admin_headers: dict[str, str]) -> None:
    assert client.get("/admin/memory/history").status_code == 401
    client.get("/users/1")
    client.get("/users/1")
    client.app.state.runtime.history.sample()  # type: ignore[attr-defined]
    data = client.get("/admin/memory/history", headers=admin_headers).json()
    assert data["thresholds_mb"] == {
        "soft_limit_mb": 200,
        "hard_limit_mb": 240,
        "recycle_limit_mb": 280,
        "max_worker_rss_mb": 300,
    }
    (worker,) = data["workers"]
    assert worker["is_self"] and worker["is_alive"]
    assert len(worker["wall_time"]) >= 2
    assert worker["caches"]["users"]["hit_rate"][-1] == 0.5
    assert worker["events"][0]["kind"] == "start"


def test_history_off_is_503(
    make_client: ClientFactory, write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", ADMIN_TOKEN)
    settings: Settings = load_settings(write_profile({"history": {"interval_seconds": None}}))
    client = make_client(settings)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert client.get("/admin/memory/history", headers=headers).status_code == 503


def test_chart_scales_end_on_round_numbers() -> None:
    from app.core.admin_charts import _nice_ceiling

    assert [_nice_ceiling(v) for v in (0.3, 1.05, 10.5, 104, 315, 1001)] == [
        1.0,
        1.2,
        12.0,
        120.0,
        400.0,
        1200.0,
    ]


def test_threshold_labels_a_few_mib_apart_do_not_overlap() -> None:
    from app.core.admin_charts import LABEL_GAP, _label_rows

    # lines 6 px apart (recycle 280 / max worker rss 300 on a 400 MiB scale)
    rows = _label_rows([30.0, 36.0, 42.0, 48.0])
    for column in (rows[0::2], rows[1::2]):
        assert all(b - a >= LABEL_GAP for a, b in itertools.pairwise(column))
    assert rows[:2] == [28.0, 34.0]  # the top two sit just above their own lines
