"""render.scale.yaml: the one documented step from one instance to several."""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

from tests.deploy.blueprint_spec import check_blueprint

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(doc, dict)
    return doc


def _by_type(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    (service,) = [s for s in doc["services"] if s["type"] == kind]
    assert isinstance(service, dict)
    return service


def test_one_click_blueprint_has_no_paid_extras() -> None:
    doc = _load("render.yaml")
    assert "databases" not in doc
    assert [s["type"] for s in doc["services"]] == ["web"]
    assert _by_type(doc, "web")["numInstances"] == 1
    assert "DESIGN.md" not in (ROOT / "render.yaml").read_text()


def test_scale_out_adds_postgres_key_value_and_instances() -> None:
    doc = _load("render.scale.yaml")
    assert check_blueprint(doc) == []
    web, kv = _by_type(doc, "web"), _by_type(doc, "keyvalue")
    assert web["numInstances"] >= 2 or "scaling" in web
    assert (kv["ipAllowList"], kv["maxmemoryPolicy"]) == ([], "allkeys-lru")
    (db,) = doc["databases"]
    env = {item["key"]: item for item in web["envVars"]}
    assert env["DATABASE_URL"]["fromDatabase"] == {
        "name": db["name"],
        "property": "connectionString",
    }
    assert env["REDIS_URL"]["fromService"] == {
        "type": "keyvalue",
        "name": kv["name"],
        "property": "connectionString",
    }
    # Same service name as render.yaml: the scale-out file takes over the same web service.
    assert web["name"] == _by_type(_load("render.yaml"), "web")["name"]


def test_checker_catches_a_dangling_reference_and_a_bad_policy() -> None:
    doc = _load("render.scale.yaml")
    doc["databases"][0]["name"] = "other-db"
    _by_type(doc, "keyvalue")["maxmemoryPolicy"] = "lru"
    doc["databases"][0]["colour"] = "blue"
    errors = check_blueprint(doc)
    assert any("fromDatabase: no database 'memsafe-db'" in e for e in errors), errors
    assert any("maxmemoryPolicy" in e for e in errors), errors
    assert any("unknown database field" in e for e in errors), errors
