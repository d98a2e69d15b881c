"""Settings: a YAML profile, then APP_* env overrides, validated into one typed object."""

from __future__ import annotations

import functools
import itertools
import logging
import os
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

from app.core.access_settings import (
    AdminSettings,
    DocsSettings,
    HealthSettings,
    MetricsSettings,
)
from app.core.config_checks import (
    all_fields,
    all_keys,
    flat_items,
    unmatched_env_vars,
    web_concurrency_problem,
    yaml_error_where,
)
from app.core.memory_settings import MIB, CachesSettings, MemorySettings, PayloadSettings
from app.core.monitor_settings import HistorySettings, MonitorSettings, TraceSettings
from app.core.server_settings import LoggingSettings, ServerSettings
from app.core.store_settings import CoherenceSettings, StoreSettings

logger = logging.getLogger(__name__)

CONFIG_ENV_VAR = "APP_CONFIG"
DEFAULT_CONFIG_PATH = "config/local.yaml"
ENV_PREFIX = "APP_"


@dataclass(frozen=True)
class _Sources:
    """What one load_settings call reads: its YAML file and its environment."""

    yaml_path: Path
    environ: Mapping[str, str]


_sources: ContextVar[_Sources | None] = ContextVar("_sources", default=None)


def _environ() -> Mapping[str, str]:
    """The environment of the load_settings call in progress (os.environ by default)."""
    sources = _sources.get()
    return os.environ if sources is None else sources.environ


class SettingsError(Exception):
    """Invalid configuration: the message names the file, the key, the value and what is allowed."""


class Settings(BaseSettings):
    """Every setting of the service, from env > YAML profile > these defaults."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    server: ServerSettings = ServerSettings()
    caches: CachesSettings = CachesSettings()
    memory: MemorySettings = MemorySettings()
    monitor: MonitorSettings = MonitorSettings()
    history: HistorySettings = HistorySettings()
    trace: TraceSettings = TraceSettings()
    payload: PayloadSettings = PayloadSettings()
    store: StoreSettings = StoreSettings()
    coherence: CoherenceSettings = CoherenceSettings()
    logging: LoggingSettings = LoggingSettings()
    admin: AdminSettings = AdminSettings()
    health: HealthSettings = HealthSettings()
    metrics: MetricsSettings = MetricsSettings()
    docs: DocsSettings = DocsSettings()
    config_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            _PlatformEnvSource(settings_cls),
        ]
        given = _sources.get()
        if given is not None:
            if not isinstance(env_settings, EnvSettingsSource):
                msg = f"expected pydantic-settings' EnvSettingsSource, got {env_settings!r}"
                raise TypeError(msg)
            # Read the environment this load_settings call was given, not os.environ, parsed
            # by pydantic-settings' own rule.
            env_settings.env_vars = parse_env_vars(
                given.environ,
                env_settings.case_sensitive,
                env_settings.env_ignore_empty,
                env_settings.env_parse_none_str,
            )
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=given.yaml_path))
        return tuple(sources)

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets replaced by '**********'."""
        data = self.model_dump(mode="json")
        for key in secret_keys():
            section, name = key.split(".")
            if data[section][name] is not None:
                data[section][name] = "**********"
        return data


# Variables a platform (Render) sets, read without the APP_ prefix; the APP_ name wins over them.
PLATFORM_ENV_VARS = {
    "server.workers": "WEB_CONCURRENCY",
    "admin.token": "ADMIN_TOKEN",
    "metrics.token": "METRICS_TOKEN",
    "store.database_url": "DATABASE_URL",
    "coherence.redis_url": "REDIS_URL",
}


class _PlatformEnvSource(PydanticBaseSettingsSource):
    """The un-prefixed platform variables of PLATFORM_ENV_VARS."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ builds the whole mapping

    def __call__(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for dotted in PLATFORM_ENV_VARS:
            value = _platform_value(dotted)
            if value:
                section, key = dotted.split(".")
                data.setdefault(section, {})[key] = value
        return data


def _platform_value(dotted: str) -> str:
    """The value of a key's platform variable as read, "" when it is unset or blank."""
    raw = _environ().get(PLATFORM_ENV_VARS[dotted], "")
    # A token keeps its whitespace: its validator strips it and counts what is left.
    return raw if dotted.endswith(".token") else raw.strip()


def is_secret(field: FieldInfo) -> bool:
    """A SecretStr field (optional or not): read from the environment, never from a file."""
    return field.annotation is SecretStr or SecretStr in get_args(field.annotation)


@functools.cache
def secret_keys() -> tuple[str, ...]:
    """Dotted keys of the secrets (SecretStr fields): read from the environment, never a file."""
    return tuple(key for key, field in all_fields(Settings) if is_secret(field))


def env_name(key: str) -> str:
    """The APP_ variable of a dotted key: caches.users.max_size -> APP_CACHES__USERS__MAX_SIZE."""
    return ENV_PREFIX + "__".join(key.upper().split("."))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        msg = (
            f"settings file {str(path)!r} (from {CONFIG_ENV_VAR}) not found; "
            f"allowed: an existing YAML file such as config/local.yaml, "
            f"config/starter.yaml or config/standard.yaml"
        )
        raise SettingsError(msg)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "syntax error"
        msg = (
            f"settings file {str(path)!r} is not valid YAML{yaml_error_where(path, exc)}: "
            f"{problem}; allowed: a YAML mapping of the keys in config/local.yaml"
        )
        raise SettingsError(msg) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        msg = f"settings file {str(path)!r}: top level is {type(data).__name__}; allowed: a mapping"
        raise SettingsError(msg)
    return data


def _origin(loc: tuple[str | int, ...], path: Path | None) -> str:
    """Where a key's value came from: an env var when one is set, else the YAML file."""
    key = ".".join(str(part) for part in loc)
    environ = _environ()
    names = {name.upper(): name for name in environ}  # env names match in any case
    # The key's own variable, then its whole section as JSON (APP_SERVER='{"workers": 99}'),
    # then the platform's variable: the order pydantic-settings and _PlatformEnvSource apply.
    for candidate in (env_name(key), env_name(key.split(".")[0])):
        if candidate in names:
            return f"env {names[candidate]}"
    if key in PLATFORM_ENV_VARS and _platform_value(key):
        return f"env {PLATFORM_ENV_VARS[key]}"
    return f"file {str(path)!r}" if path is not None else "code defaults"


def _from_validation_error(exc: ValidationError, path: Path | None) -> SettingsError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    key = ".".join(str(part) for part in loc)
    value = first.get("input")
    if first["type"] == "extra_forbidden":
        allowed = "one of " + ", ".join(_known_keys(loc[:-1]))
        text = f"unknown key {key!r}"
    else:
        allowed = first["msg"]
        text = f"key {key!r} has invalid value {value!r}"
    if "token" in key or key.endswith("_url"):
        text = f"key {key!r} is invalid"
    more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
    msg = f"invalid settings in {_origin(loc, path)}: {text}; allowed: {allowed}{more}"
    return SettingsError(msg)


def _known_keys(section: tuple[str | int, ...]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in section:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(name for name in model.model_fields if name != "config_file")


_LEVELS = ("soft", "hard", "recycle")


def _present(pairs: list[tuple[str, float | None]]) -> list[tuple[str, float]]:
    return [(key, value) for key, value in pairs if value is not None]


def _check_cross_fields(settings: Settings, path: Path | None) -> None:
    """Rules that span keys: limit ordering and the cache budget under the memory limits."""
    mem = settings.memory

    def where(*keys: str) -> str:
        origins = dict.fromkeys(_origin(tuple(key.split(".")), path) for key in keys)
        return " and ".join(origins)

    present = _present(
        [(f"memory.{lvl}_limit_mb", getattr(mem, f"{lvl}_limit_mb")) for lvl in _LEVELS]
    )
    fractions = _present(
        [(f"memory.{lvl}_fraction", getattr(mem, f"{lvl}_fraction")) for lvl in _LEVELS]
    )
    for pairs in (present, fractions):
        for (low_key, low), (high_key, high) in itertools.pairwise(pairs):
            if low >= high:
                msg = (
                    f"invalid settings in {where(low_key, high_key)}: {low_key}={low} must be "
                    f"below {high_key}={high}; allowed: soft < hard < recycle"
                )
                raise SettingsError(msg)
    budget = settings.caches.total_budget_mb
    limits = [value for _, value in present]
    lowest = [key for key, value in present if limits and value == min(limits)]
    if budget is not None and limits and budget >= min(limits):
        msg = (
            f"invalid settings in {where('caches.total_budget_mb', *lowest)}: "
            f"caches.total_budget_mb={budget} is not below the "
            f"lowest memory limit ({min(limits)} MiB); allowed: 1..{min(limits) - 1}"
        )
        raise SettingsError(msg)
    users = settings.caches.users
    if budget is not None and users.max_bytes is not None and users.max_bytes > budget * MIB:
        msg = (
            f"invalid settings in {where('caches.users.max_bytes', 'caches.total_budget_mb')}: "
            f"caches.users.max_bytes={users.max_bytes} is above "
            f"caches.total_budget_mb={budget} MiB; allowed: 1024..{budget * MIB}"
        )
        raise SettingsError(msg)
    docs = settings.docs
    for key in ("swagger_ui", "redoc"):
        if getattr(docs, key) and not docs.openapi:
            msg = (
                f"invalid settings in {where(f'docs.{key}', 'docs.openapi')}: docs.{key}=true "
                "needs docs.openapi=true (the page loads /openapi.json); allowed: turn "
                f"docs.openapi on, or docs.{key} off"
            )
            raise SettingsError(msg)
    server = settings.server
    rss = server.max_worker_rss_mb
    for key, value in present:
        if rss is not None and value >= rss:
            # gunicorn recycles the worker at max_worker_rss_mb: a limit at or above it never
            # gets a chance to act.
            msg = (
                f"invalid settings in {where(key, 'server.max_worker_rss_mb')}: {key}={value} "
                f"must be below server.max_worker_rss_mb={rss}; allowed: 32..{rss - 1}"
            )
            raise SettingsError(msg)
    for low_key, high_key in (
        ("coherence.reconnect_min_seconds", "coherence.reconnect_max_seconds"),
        ("store.pool_min_size", "store.pool_max_size"),
    ):
        low, high = (_lookup_key(settings, key) for key in (low_key, high_key))
        if low > high:
            msg = (
                f"invalid settings in {where(low_key, high_key)}: {low_key}={low} is above "
                f"{high_key}={high}; allowed: {low_key} <= {high_key}"
            )
            raise SettingsError(msg)
    if server.max_requests and server.max_requests_jitter >= server.max_requests:
        msg = (
            f"invalid settings in {where('server.max_requests_jitter', 'server.max_requests')}: "
            "server.max_requests_jitter="
            f"{server.max_requests_jitter} must be below server.max_requests="
            f"{server.max_requests}; allowed: 0..{server.max_requests - 1}"
        )
        raise SettingsError(msg)


def _lookup_key(settings: Settings, dotted: str) -> Any:
    node: Any = settings
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build settings from the YAML profile at `path` (default: $APP_CONFIG) plus env vars.

    `environ` is the environment to read (default os.environ): a tool that starts a server
    with its own environment gets the settings that server will read, os.environ untouched.

    Raises:
        SettingsError: one message naming the file or env var, the key, the value, what is allowed.
    """
    if environ is None:
        environ = os.environ
    if path is None:
        path = environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH
    yaml_path = Path(path)
    data = _read_yaml(yaml_path)
    for secret in secret_keys():
        section, key = secret.split(".")
        part = data.get(section)
        if isinstance(part, dict) and key in part:
            names = " or ".join(filter(None, (PLATFORM_ENV_VARS.get(secret), env_name(secret))))
            msg = (
                f"invalid settings in file {str(yaml_path)!r}: key {secret!r} must not be "
                f"in a file (a secret); allowed: env {names}"
            )
            raise SettingsError(msg)
    if "config_file" in data:
        msg = f"invalid settings in file {str(yaml_path)!r}: unknown key 'config_file'"
        raise SettingsError(msg)
    problem = web_concurrency_problem(environ.get("WEB_CONCURRENCY", ""))
    if problem is not None:
        raise SettingsError(f"invalid settings in env WEB_CONCURRENCY: {problem}")
    token = _sources.set(_Sources(yaml_path, environ))
    try:
        try:
            settings = Settings(config_file=yaml_path)
        except ValidationError as exc:
            raise _from_validation_error(exc, yaml_path) from None
        for name, hint in unknown_env_vars(environ):
            logger.warning("env %s matches no settings key and is ignored%s", name, hint)
        _check_cross_fields(settings, yaml_path)
    finally:
        _sources.reset(token)
    return settings


def unknown_env_vars(environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """APP_* variables that name no settings key, each with a '; did you mean ...' hint."""
    known = {env_name(key) for key in all_keys(Settings)}
    known |= {CONFIG_ENV_VAR}
    return unmatched_env_vars(os.environ if environ is None else environ, ENV_PREFIX, known)


def get_settings() -> Settings:
    """Settings for this process, read from $APP_CONFIG (default config/local.yaml) and env."""
    return load_settings()


def log_settings(settings: Settings) -> None:
    """Log the effective settings once, one line per section, secrets masked.

    One 1,200-character line was unreadable in a terminal and in Render's log view; the
    whole set is also at GET /admin/settings (admin token).
    """
    data = settings.masked()
    logger.info("effective settings from %s (also at GET /admin/settings):", data["config_file"])
    for section, values in data.items():
        if isinstance(values, Mapping):
            logger.info("  %s: %s", section, " ".join(f"{k}={v}" for k, v in flat_items(values)))
