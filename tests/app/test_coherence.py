"""Two apps on one database behave like two workers: a write on one reaches the other."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app.core.config import load_settings
from tests.app.conftest import ADMIN_TOKEN, ClientFactory, ProfileWriter, TestClient
from tests.servers import database_url, drop_schema, unique_name

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
Pair = Callable[..., tuple[TestClient, TestClient]]


@pytest.fixture(params=["sqlite", "postgres"])
def pair(
    request: pytest.FixtureRequest,
    write_profile: ProfileWriter,
    make_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Pair]:
    monkeypatch.setenv("ADMIN_TOKEN", ADMIN_TOKEN)
    overrides: dict[str, Any] = {}
    url = schema = ""
    if request.param == "postgres":
        url, schema = database_url(), unique_name()
        monkeypatch.setenv("DATABASE_URL", url)
        overrides = {"store": {"database_schema": schema}}

    def make(poll_interval_seconds: float = 0.02) -> tuple[TestClient, TestClient]:
        settings = load_settings(
            write_profile(
                {
                    **overrides,
                    "store": {
                        **overrides.get("store", {}),
                        "poll_interval_seconds": poll_interval_seconds,
                    },
                }
            )
        )
        return make_client(settings), make_client(settings)

    yield make
    if schema:
        drop_schema(url, schema)


def _wait_fresh(client: TestClient, user_id: int, city: str, seconds: float) -> float | None:
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        if client.get(f"/users/{user_id}").json()["city"] == city:
            return time.perf_counter() - started
        time.sleep(0.005)
    return None


def _wait_connected(client: TestClient) -> None:
    for _ in range(200):
        if client.get("/health").json()["checks"]["invalidation"]["status"] == "ok":
            return
        time.sleep(0.01)
    raise AssertionError("invalidation channel never connected")


def test_a_write_on_one_worker_reaches_the_other(pair: Pair) -> None:
    a, b = pair()
    _wait_connected(b)
    assert b.get("/users/9").status_code == 200  # cached on b
    assert a.patch("/users/9", json={"city": "Nairobi"}, headers=AUTH).status_code == 200
    assert _wait_fresh(b, 9, "Nairobi", 2.0) is not None
    assert b.get("/health").json()["tiers"]["invalidations"] >= 1


@pytest.mark.parametrize("pair", ["sqlite"], indirect=True)
def test_without_the_change_channel_the_other_worker_stays_stale(pair: Pair) -> None:
    # The failing twin: the same write with the SQLite change-log poll slowed to 10 s stays
    # invisible on the other worker (NOTIFY cannot be slowed, so SQLite shows it).
    a, b = pair(poll_interval_seconds=10.0)
    _wait_connected(b)
    assert b.get("/users/9").status_code == 200
    assert a.patch("/users/9", json={"city": "Nairobi"}, headers=AUTH).status_code == 200
    assert _wait_fresh(b, 9, "Nairobi", 0.5) is None


def test_health_reports_both_tiers(pair: Pair) -> None:
    a, _ = pair()
    _wait_connected(a)
    a.get("/users/1")
    a.get("/users/1")
    body = a.get("/health").json()
    assert body["status"] == "ok"
    assert body["tiers"]["l1_hits"] == 1
    assert "l2_hit_rate" in body["tiers"]
    metrics = a.get("/metrics").text
    assert "app_users_l1_hits_total" in metrics
    assert "app_users_l2_hit_rate" in metrics
