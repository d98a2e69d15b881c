"""GET /users/{user_id}: 200 from the cache or the store, 404 unknown, 422 malformed."""

from __future__ import annotations

import pytest

from app.api.routes.users import MAX_USER_ID
from app.core.config import load_settings
from tests.app.conftest import TEST_SEED_USERS, ClientFactory, ProfileWriter, TestClient


def test_known_user_is_returned(client: TestClient) -> None:
    response = client.get("/users/42")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == 42
    assert set(body) == {"id", "name", "email", "city", "created_at"}
    assert body["email"].endswith("42@example.com")


def test_seeded_users_are_stable_across_reads(client: TestClient) -> None:
    assert client.get("/users/7").json() == client.get("/users/7").json()


def test_unknown_user_is_404_with_a_useful_body(client: TestClient) -> None:
    response = client.get(f"/users/{TEST_SEED_USERS + 1}")
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert detail["error"] == "user_not_found"
    assert detail["user_id"] == TEST_SEED_USERS + 1


def test_unknown_user_is_cached_as_a_miss(client: TestClient) -> None:
    client.get("/users/999999")
    client.get("/users/999999")
    stats = client.get("/health").json()["caches"]["caches"]["users"]
    assert (stats["hits"], stats["misses"]) == (1, 1)


@pytest.mark.parametrize("raw", ["abc", "1.5", "0", "-3", str(MAX_USER_ID + 1), "1e3"])
def test_malformed_id_is_422(client: TestClient, raw: str) -> None:
    response = client.get(f"/users/{raw}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "user_id"]


def test_largest_id_is_404_not_500(client: TestClient) -> None:
    assert client.get(f"/users/{MAX_USER_ID}").status_code == 404


def test_reads_are_bounded_by_the_cache_size(
    write_profile: ProfileWriter, make_client: ClientFactory
) -> None:
    c = make_client(load_settings(write_profile({"caches": {"users": {"max_size": 10}}})))
    for user_id in range(1, 51):
        assert c.get(f"/users/{user_id}").status_code == 200
    stats = c.get("/health").json()["caches"]["caches"]["users"]
    assert stats["size"] == 10
    assert stats["evictions"] == 40


@pytest.mark.parametrize("offload", [True, False])
def test_reads_work_inline_and_offloaded(
    write_profile: ProfileWriter, make_client: ClientFactory, offload: bool
) -> None:
    c = make_client(load_settings(write_profile({"store": {"offload_reads": offload}})))
    assert c.get("/users/9").json()["id"] == 9
    assert c.get("/users/9").json()["id"] == 9


def test_x_cache_header_says_what_the_cache_did(client: TestClient) -> None:
    # The load test counts hits per scenario from this header: it must match the counters.
    first, second = client.get("/users/11"), client.get("/users/11")
    unknown = [client.get(f"/users/{TEST_SEED_USERS + 5}") for _ in range(2)]
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("miss", "hit")
    assert [r.headers["X-Cache"] for r in unknown] == ["miss", "hit"]
    stats = client.get("/health").json()["caches"]["caches"]["users"]
    assert (stats["hits"], stats["misses"]) == (2, 2)
