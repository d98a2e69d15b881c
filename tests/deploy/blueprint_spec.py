"""A checker for render.yaml written from Render's Blueprint spec (nothing fetched at test time).

Ref: https://render.com/docs/blueprint-spec
It covers the fields this template uses and rejects the deprecated ones (`env`, `autoDeploy`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ROOT_KEYS = {"services", "databases", "envVarGroups", "previews", "projects", "ungrouped"}
SERVICE_TYPES = {"web", "pserv", "worker", "cron", "keyvalue", "redis"}
RUNTIMES = {"docker", "elixir", "go", "image", "node", "python", "ruby", "rust", "static"}
PLANS = {"free", "starter", "standard", "pro", "pro plus", "pro max", "pro ultra"}
REGIONS = {"oregon", "ohio", "virginia", "frankfurt", "singapore"}
AUTO_DEPLOY_TRIGGERS = {"commit", "checksPass", "off"}
MAX_SHUTDOWN_DELAY_RANGE = (1, 300)
DEPRECATED = {"env": "runtime", "autoDeploy": "autoDeployTrigger"}
ENV_VAR_SOURCES = {"value", "generateValue", "sync", "fromDatabase", "fromService", "fromGroup"}

# Field name -> accepted Python type(s) for a web/pserv/worker service.
SERVICE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "type": str,
    "name": str,
    "runtime": str,
    "plan": str,
    "region": str,
    "repo": str,
    "branch": str,
    "rootDir": str,
    "buildCommand": str,
    "startCommand": str,
    "preDeployCommand": str,
    "dockerfilePath": str,
    "dockerContext": str,
    "dockerCommand": str,
    "registryCredential": dict,
    "image": dict,
    "numInstances": int,
    "scaling": dict,
    "healthCheckPath": str,
    "autoDeployTrigger": str,
    "maxShutdownDelaySeconds": int,
    "domains": list,
    "envVars": list,
    "disk": dict,
    "buildFilter": dict,
    "previews": dict,
    "ipAllowList": list,
    "maxmemoryPolicy": str,
    "schedule": str,
}
DATABASE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "plan": str,
    "region": str,
    "databaseName": str,
    "user": str,
    "postgresMajorVersion": str,
    "diskSizeGB": int,
    "ipAllowList": list,
    "highAvailability": dict,
    "readReplicas": list,
}
MAXMEMORY_POLICIES = {
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "noeviction",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
}
# Fields a Docker-runtime service must not carry (Docker builds from the Dockerfile).
DOCKER_FORBIDDEN = {"buildCommand", "startCommand"}


def check_blueprint(doc: object) -> list[str]:
    """Return every violation of the spec in `doc` (a parsed render.yaml), as readable lines."""
    if not isinstance(doc, Mapping):
        return [f"root: expected a mapping, got {type(doc).__name__}"]
    errors = [f"root.{key}: unknown root field" for key in doc if key not in ROOT_KEYS]
    services = doc.get("services", [])
    if not isinstance(services, list):
        return [*errors, "services: expected a list"]
    names: set[str] = set()
    for index, service in enumerate(services):
        where = f"services[{index}]"
        if not isinstance(service, Mapping):
            errors.append(f"{where}: expected a mapping")
            continue
        errors.extend(_check_service(where, service))
        name = service.get("name")
        if name in names:
            errors.append(f"{where}.name: duplicate service name {name!r}")
        if isinstance(name, str):
            names.add(name)
    databases = doc.get("databases", []) or []
    db_names = {db.get("name") for db in databases if isinstance(db, Mapping)}
    for index, db in enumerate(databases):
        errors.extend(_check_database(f"databases[{index}]", db))
    for index, service in enumerate(services):
        if isinstance(service, Mapping):
            errors.extend(_check_references(f"services[{index}]", service, names, db_names))
    return errors


def _check_database(where: str, db: object) -> list[str]:
    if not isinstance(db, Mapping):
        return [f"{where}: expected a mapping"]
    errors = [f"{where}.{key}: unknown database field" for key in db if key not in DATABASE_FIELDS]
    errors += [
        f"{where}.{key}: expected {_type_name(DATABASE_FIELDS[key])}, got {value!r}"
        for key, value in db.items()
        if key in DATABASE_FIELDS and not isinstance(value, DATABASE_FIELDS[key])
    ]
    if "name" not in db:
        errors.append(f"{where}: missing required field 'name'")
    return errors


def _check_references(
    where: str, service: Mapping[str, Any], services: set[str], databases: set[object]
) -> list[str]:
    errors: list[str] = []
    policy = service.get("maxmemoryPolicy")
    if policy is not None and policy not in MAXMEMORY_POLICIES:
        errors.append(
            f"{where}.maxmemoryPolicy: {policy!r} is not one of {sorted(MAXMEMORY_POLICIES)}"
        )
    for index, item in enumerate(service.get("envVars", []) or []):
        if not isinstance(item, Mapping):
            continue
        ref = item.get("fromDatabase")
        if isinstance(ref, Mapping) and ref.get("name") not in databases:
            errors.append(f"{where}.envVars[{index}].fromDatabase: no database {ref.get('name')!r}")
        ref = item.get("fromService")
        if isinstance(ref, Mapping) and ref.get("name") not in services:
            errors.append(f"{where}.envVars[{index}].fromService: no service {ref.get('name')!r}")
    return errors


def _check_service(where: str, service: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    for key, value in service.items():
        if key in DEPRECATED:
            errors.append(f"{where}.{key}: deprecated, use {DEPRECATED[key]!r}")
        elif key not in SERVICE_FIELDS:
            errors.append(f"{where}.{key}: unknown service field")
        elif isinstance(value, bool) or not isinstance(value, SERVICE_FIELDS[key]):
            expected = SERVICE_FIELDS[key]
            errors.append(f"{where}.{key}: expected {_type_name(expected)}, got {value!r}")
    for key in ("type", "name"):
        if key not in service:
            errors.append(f"{where}: missing required field {key!r}")
    errors.extend(_check_enum(where, service, "type", SERVICE_TYPES))
    errors.extend(_check_enum(where, service, "plan", PLANS))
    errors.extend(_check_enum(where, service, "region", REGIONS))
    errors.extend(_check_enum(where, service, "autoDeployTrigger", AUTO_DEPLOY_TRIGGERS))
    if service.get("type") in {"web", "pserv", "worker", "cron"}:
        if "runtime" not in service:
            errors.append(f"{where}: missing required field 'runtime'")
        errors.extend(_check_enum(where, service, "runtime", RUNTIMES))
    if service.get("runtime") == "docker":
        errors.extend(
            f"{where}.{key}: not allowed with runtime docker (use dockerCommand)"
            for key in sorted(DOCKER_FORBIDDEN & service.keys())
        )
    delay = service.get("maxShutdownDelaySeconds")
    low, high = MAX_SHUTDOWN_DELAY_RANGE
    if isinstance(delay, int) and not low <= delay <= high:
        errors.append(f"{where}.maxShutdownDelaySeconds: {delay} outside {low}-{high}")
    instances = service.get("numInstances")
    if isinstance(instances, int) and instances < 1:
        errors.append(f"{where}.numInstances: {instances} must be >= 1")
    path = service.get("healthCheckPath")
    if isinstance(path, str) and not path.startswith("/"):
        errors.append(f"{where}.healthCheckPath: {path!r} must start with '/'")
    for index, item in enumerate(service.get("envVars", []) or []):
        errors.extend(_check_env_var(f"{where}.envVars[{index}]", item))
    return errors


def _check_env_var(where: str, item: object) -> list[str]:
    if not isinstance(item, Mapping):
        return [f"{where}: expected a mapping"]
    errors = [f"{where}.{k}: unknown field" for k in item if k not in ENV_VAR_SOURCES | {"key"}]
    sources = ENV_VAR_SOURCES & item.keys()
    if len(sources) != 1:
        errors.append(
            f"{where}: needs exactly one of {sorted(ENV_VAR_SOURCES)}, got {sorted(sources)}"
        )
    if "fromGroup" not in item and not isinstance(item.get("key"), str):
        errors.append(f"{where}.key: required string")
    if "value" in item and not isinstance(item["value"], str):
        errors.append(f"{where}.value: must be a string (quote numbers), got {item['value']!r}")
    if "generateValue" in item and item["generateValue"] is not True:
        errors.append(f"{where}.generateValue: must be true")
    if "sync" in item and item["sync"] is not False:
        errors.append(f"{where}.sync: must be false (prompt for the value in the dashboard)")
    return errors


def _check_enum(where: str, service: Mapping[str, Any], key: str, allowed: set[str]) -> list[str]:
    value = service.get(key)
    if value is None or value in allowed:
        return []
    return [f"{where}.{key}: {value!r} is not one of {sorted(allowed)}"]


def _type_name(expected: type | tuple[type, ...]) -> str:
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return expected.__name__
