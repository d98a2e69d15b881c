"""GET /payload?size_kib=N: exact sizes, bounded by payload.max_size_kib."""

from __future__ import annotations

import pytest

from tests.app.conftest import TestClient


def test_payload_has_the_requested_size(client: TestClient) -> None:
    response = client.get("/payload", params={"size_kib": 3})
    assert response.status_code == 200
    assert len(response.content) == 3 * 1024
    assert response.headers["content-type"] == "application/octet-stream"


def test_payload_default_size(client: TestClient) -> None:
    assert len(client.get("/payload").content) == 64 * 1024


def test_payload_at_the_limit_is_allowed(client: TestClient) -> None:
    assert client.get("/payload", params={"size_kib": 1024}).status_code == 200


def test_payload_over_the_limit_is_422_naming_the_max(client: TestClient) -> None:
    response = client.get("/payload", params={"size_kib": 1025})
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["query", "size_kib"]
    assert "1024" in error["msg"]
    assert error["ctx"] == {"le": 1024}


@pytest.mark.parametrize("raw", ["0", "-1", "big"])
def test_payload_malformed_size_is_422(client: TestClient, raw: str) -> None:
    assert client.get("/payload", params={"size_kib": raw}).status_code == 422
