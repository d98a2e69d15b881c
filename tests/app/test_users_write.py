"""POST/PATCH/DELETE /users and paginated GET /users, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.api.errors import RETRY_AFTER_SECONDS
from app.core.config import load_settings
from tests.app.conftest import (
    ADMIN_TOKEN,
    TEST_SEED_USERS,
    ClientFactory,
    ProfileWriter,
    TestClient,
)
from tests.servers import database_url, drop_schema, unique_name

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NEW = {"name": "Grace Hopper", "email": "grace@example.com", "city": "Arlington"}


@pytest.fixture(params=["sqlite", "postgres"])
def api(
    request: pytest.FixtureRequest,
    write_profile: ProfileWriter,
    make_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[TestClient]:
    monkeypatch.setenv("ADMIN_TOKEN", ADMIN_TOKEN)
    if request.param == "sqlite":
        yield make_client(load_settings(write_profile()))
        return
    url, schema = database_url(), unique_name()
    monkeypatch.setenv("DATABASE_URL", url)
    try:
        yield make_client(load_settings(write_profile({"store": {"database_schema": schema}})))
    finally:
        drop_schema(url, schema)


def test_create_is_201_with_location_and_readable(api: TestClient) -> None:
    response = api.post("/users", json=NEW, headers=AUTH)
    assert response.status_code == 201
    body = response.json()
    assert body["id"] > TEST_SEED_USERS
    assert response.headers["location"] == f"/users/{body['id']}"
    assert api.get(response.headers["location"]).json() == body


def test_a_patch_shows_on_the_next_read_of_this_worker(api: TestClient) -> None:
    before = api.get("/users/5").json()  # now cached
    response = api.patch("/users/5", json={"city": "Reykjavik"}, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {**before, "city": "Reykjavik"}
    assert api.get("/users/5").json()["city"] == "Reykjavik"


def test_delete_is_204_then_404(api: TestClient) -> None:
    assert api.get("/users/6").status_code == 200
    assert api.delete("/users/6", headers=AUTH).status_code == 204
    assert api.get("/users/6").status_code == 404
    assert api.delete("/users/6", headers=AUTH).status_code == 404
    assert api.patch("/users/6", json={"city": "x"}, headers=AUTH).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**NEW, "email": "not-an-email"}, "email"),
        ({"name": "x", "city": "y"}, "email"),
        ({**NEW, "name": ""}, "name"),
        ({**NEW, "admin": True}, "admin"),
    ],
)
def test_invalid_create_is_422_naming_the_field(
    api: TestClient, body: dict[str, object], field: str
) -> None:
    response = api.post("/users", json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", field]


@pytest.mark.parametrize(
    ("body", "field"), [({}, "name"), ({"city": None}, "city"), ({"email": "@"}, "email")]
)
def test_invalid_patch_is_422_naming_the_field(
    api: TestClient, body: dict[str, object], field: str
) -> None:
    response = api.patch("/users/2", json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", field]


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, 401), ({"Authorization": "Bearer wrong"}, 403), ({"Authorization": "Basic x"}, 401)],
)
def test_writes_need_the_bearer_token(api: TestClient, headers: dict[str, str], code: int) -> None:
    assert api.post("/users", json=NEW, headers=headers).status_code == code
    assert api.patch("/users/2", json={"city": "x"}, headers=headers).status_code == code
    assert api.delete("/users/2", headers=headers).status_code == code
    assert api.get("/users/2").json()["city"] != "x"


def test_pages_walk_every_user_once(api: TestClient) -> None:
    seen: list[int] = []
    cursor = 0
    while True:
        page = api.get("/users", params={"limit": 100, "cursor": cursor}).json()
        seen += [user["id"] for user in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert seen == list(range(1, TEST_SEED_USERS + 1))


def test_page_size_above_the_maximum_is_422(api: TestClient) -> None:
    response = api.get("/users", params={"limit": 101})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "limit"]
    assert "store.max_page_size" in response.json()["detail"][0]["msg"]


def test_writes_are_off_without_an_admin_token(
    write_profile: ProfileWriter, make_client: ClientFactory
) -> None:
    c = make_client(load_settings(write_profile()))
    response = c.post("/users", json=NEW, headers=AUTH)
    assert response.status_code == 403
    assert "ADMIN_TOKEN" in response.json()["detail"]


def test_a_store_failure_is_a_503_naming_the_error(
    write_profile: ProfileWriter, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.store import StoreUnavailableError

    c = make_client(load_settings(write_profile()))
    store = c.app.state.runtime.store  # type: ignore[attr-defined]  # the app built by create_app

    async def down(*_args: object, **_kwargs: object) -> None:
        raise StoreUnavailableError("postgres store: OperationalError: server closed")

    monkeypatch.setattr(store, "get_user", down)  # the database edge of this unit test
    response = c.get("/users/77")
    assert response.status_code == 503
    assert response.json()["error"] == "store_unavailable"
    assert "OperationalError" not in response.text  # internals stay in the log
    assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
