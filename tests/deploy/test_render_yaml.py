"""render.yaml is a valid, current Blueprint that a user can apply as it is."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest
import yaml

from tests.deploy.blueprint_spec import check_blueprint

ROOT = pathlib.Path(__file__).resolve().parents[2]


# The one-click Blueprint and the scale-out one (README "Scaling out") pass the same checks.
BLUEPRINTS = ("render.yaml", "render.scale.yaml")


def _blueprint(name: str = "render.yaml") -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(params=BLUEPRINTS)
def blueprint(request: pytest.FixtureRequest) -> dict[str, Any]:
    return _blueprint(request.param)


def _web(doc: dict[str, Any]) -> dict[str, Any]:
    (web,) = [s for s in doc["services"] if s["type"] == "web"]
    assert isinstance(web, dict)
    return web


def _env(web: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["key"]: item for item in web["envVars"]}


def test_blueprint_passes_the_spec_checker(blueprint: dict[str, Any]) -> None:
    assert check_blueprint(blueprint) == []


def test_one_docker_web_service_on_starter_with_health_check(blueprint: dict[str, Any]) -> None:
    web = _web(blueprint)
    assert web["runtime"] == "docker"
    assert web["plan"] == "starter"
    assert web["healthCheckPath"] == "/health"
    assert web["autoDeployTrigger"] in {"commit", "checksPass"}


def test_env_selects_the_starter_profile_and_generates_the_admin_token(
    blueprint: dict[str, Any],
) -> None:
    env = _env(_web(blueprint))
    assert env["APP_CONFIG"]["value"] == "config/starter.yaml"
    assert env["ADMIN_TOKEN"] == {"key": "ADMIN_TOKEN", "generateValue": True}


def test_metrics_are_protected_by_a_generated_token(blueprint: dict[str, Any]) -> None:
    env = _env(_web(blueprint))
    assert env["METRICS_TOKEN"] == {"key": "METRICS_TOKEN", "generateValue": True}


def test_every_file_the_blueprint_names_exists(blueprint: dict[str, Any]) -> None:
    web = _web(blueprint)
    assert (ROOT / web["dockerfilePath"]).is_file()
    assert (ROOT / web["dockerContext"]).is_dir()
    assert (ROOT / _env(web)["APP_CONFIG"]["value"]).is_file()


def test_shutdown_delay_covers_the_starter_graceful_timeout(blueprint: dict[str, Any]) -> None:
    profile = yaml.safe_load((ROOT / "config" / "starter.yaml").read_text())
    graceful = profile["server"]["graceful_timeout_seconds"]
    assert _web(blueprint)["maxShutdownDelaySeconds"] >= graceful


MUTATIONS = [
    ("env", "docker", "deprecated"),
    ("autoDeploy", True, "deprecated"),
    ("plan", "hobby", "is not one of"),
    ("runtime", "python3", "is not one of"),
    ("region", "mars", "is not one of"),
    ("autoDeployTrigger", "yes", "is not one of"),
    ("maxShutdownDelaySeconds", 301, "outside 1-300"),
    ("maxShutdownDelaySeconds", "45", "expected int"),
    ("healthCheckPath", "health", "must start with"),
    ("numInstances", 0, "must be >= 1"),
    ("startCommand", "gunicorn app.main:app", "not allowed with runtime docker"),
    ("colour", "blue", "unknown service field"),
]


@pytest.mark.parametrize(("key", "value", "message"), MUTATIONS)
def test_checker_rejects_a_broken_blueprint(key: str, value: object, message: str) -> None:
    doc = copy.deepcopy(_blueprint())
    _web(doc)[key] = value
    errors = check_blueprint(doc)
    assert any(message in e and key in e for e in errors), errors


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"key": "A", "value": 2}, "must be a string"),
        ({"key": "A", "sync": True}, "must be false"),
        ({"key": "A", "generateValue": False}, "must be true"),
        ({"key": "A"}, "exactly one of"),
        ({"key": "A", "value": "x", "sync": False}, "exactly one of"),
        ({"value": "x"}, "required string"),
    ],
)
def test_checker_rejects_a_broken_env_var(item: dict[str, object], message: str) -> None:
    doc = copy.deepcopy(_blueprint())
    _web(doc)["envVars"].append(item)
    assert any(message in e for e in check_blueprint(doc))


def test_checker_rejects_unknown_root_and_missing_fields() -> None:
    errors = check_blueprint({"servicez": [], "services": [{"type": "web"}]})
    assert any("unknown root field" in e for e in errors)
    assert any("'name'" in e for e in errors)
    assert any("'runtime'" in e for e in errors)
