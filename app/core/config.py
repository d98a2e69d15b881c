"""Settings: a YAML profile, then APP_* env overrides, validated into one typed object."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from app.core.access_settings import (
    AdminSettings,
    DocsSettings,
    HealthSettings,
    MetricsSettings,
)
from app.core.config_checks import (
    all_keys,
    unmatched_env_vars,
    web_concurrency_problem,
    yaml_error_where,
)
from app.core.monitor_settings import HistorySettings, MonitorSettings, TraceSettings
from app.core.settings_base import _Section
from app.core.store_settings import CoherenceSettings, StoreSettings

logger = logging.getLogger(__name__)

CONFIG_ENV_VAR = "APP_CONFIG"
DEFAULT_CONFIG_PATH = "config/local.yaml"
ENV_PREFIX = "APP_"
MIB = 1024 * 1024

_yaml_path: ContextVar[Path | None] = ContextVar("_yaml_path", default=None)


class SettingsError(Exception):
    """Invalid configuration: the message names the file, the key, the value and what is allowed."""


class ServerSettings(_Section):
    """How gunicorn serves the app (read by config/gunicorn.conf.py)."""

    workers: int = Field(default=1, ge=1, le=32)
    worker_class: Literal["guarded", "asgi", "uvicorn"] = "guarded"
    timeout_seconds: int = Field(default=30, ge=5, le=600)
    graceful_timeout_seconds: int = Field(default=20, ge=1, le=300)
    keepalive_seconds: int = Field(default=5, ge=0, le=300)
    max_requests: int = Field(default=0, ge=0, le=10_000_000)
    max_requests_jitter: int = Field(default=0, ge=0, le=1_000_000)
    max_worker_rss_mb: int | None = Field(default=None, ge=32, le=65_536)
    rss_check_interval_seconds: float = Field(default=1.0, gt=0.0, le=600.0)
    recycle_overlap_max_workers: int = Field(default=1, ge=0, le=32)
    preload: bool = True
    forwarded_allow_ips: str = "127.0.0.1"
    # Slowloris and connection exhaustion (issue 10 section 2); applied by the "guarded" worker.
    head_timeout_seconds: float = Field(
        default=10.0,
        gt=0.0,
        le=300.0,
        description="Seconds from accept until a request head must be complete (total, not per "
        "byte); past it the client gets 408 and the connection closes.",
    )
    max_connections: int = Field(
        default=768,
        ge=1,
        le=1_000_000,
        description="Open connections per worker; lowered at start-up below RLIMIT_NOFILE minus "
        "160 reserved fds. At the cap the longest-waiting idle connection is shed.",
    )
    refusal_log_interval_seconds: float = Field(
        default=10.0,
        ge=1.0,
        le=3600.0,
        description="Seconds between two log lines counting refused and shed connections, head "
        "timeouts and accept() errors (at most one line per interval).",
    )


class CacheSettings(_Section):
    """One cache: count bound, default TTL, optional byte bound and eviction policy."""

    max_size: int = Field(default=10_000, ge=1, le=10_000_000)
    ttl_seconds: float | None = Field(default=300.0, gt=0, le=86_400 * 7)
    max_bytes: int | None = Field(default=None, ge=1024, le=64 * 1024 * MIB)
    policy: Literal["lru", "slru", "tinylfu"] = Field(
        default="tinylfu",
        description=(
            'Eviction policy: "lru" (least recently used), "slru" (segmented LRU) or "tinylfu" '
            "(W-TinyLFU: LRU window, segmented LRU main space, count-min frequency admission). "
            "tinylfu keeps hot entries through a cold scan; see memsafe.LRUCache."
        ),
    )


class CachesSettings(_Section):
    """Every named cache plus the byte budget they share."""

    total_budget_mb: int | None = Field(default=64, ge=1, le=65_536)
    users: CacheSettings = CacheSettings()


class MemorySettings(_Section):
    """Thresholds and cadence of the per-worker cleanup service."""

    soft_limit_mb: int | None = Field(default=None, ge=32, le=65_536)
    hard_limit_mb: int | None = Field(default=None, ge=32, le=65_536)
    recycle_limit_mb: int | None = Field(default=None, ge=32, le=65_536)
    soft_fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    hard_fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    recycle_fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    interval_seconds: float = Field(default=30.0, ge=0.5, le=3600.0)
    hysteresis_mb: int = Field(default=16, ge=0, le=4096)
    min_full_gc_gap_seconds: float = Field(default=60.0, ge=0.0, le=86_400.0)
    periodic_gc_seconds: float | None = Field(default=None, gt=0, le=86_400.0)
    shrink_fraction: float = Field(default=0.5, gt=0.0, le=1.0)


class PayloadSettings(_Section):
    """The /payload demo endpoint."""

    max_size_kib: int = Field(default=1024, ge=1, le=64 * 1024)


class LoggingSettings(_Section):
    """Log level and access log of the app (stdout, one line per event)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = False
    repeat_interval_seconds: float = Field(
        default=10.0,
        gt=0.0,
        le=3600.0,
        description=(
            "Seconds between two log lines about one repeated failure (e.g. a store that "
            "cannot answer); the ones in between are counted into the next line."
        ),
    )


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
        path = _yaml_path.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets replaced by '**********'."""
        data = self.model_dump(mode="json")
        for section in ("admin", "metrics"):
            if getattr(self, section).token is not None:
                data[section]["token"] = "**********"
        if self.store.database_url is not None:
            data["store"]["database_url"] = "**********"
        if self.coherence.redis_url is not None:
            data["coherence"]["redis_url"] = "**********"
        return data


class _PlatformEnvSource(PydanticBaseSettingsSource):
    """Un-prefixed platform env vars: WEB_CONCURRENCY, ADMIN_TOKEN, METRICS_TOKEN, DATABASE_URL,
    REDIS_URL."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ builds the whole mapping

    def __call__(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        concurrency = os.environ.get("WEB_CONCURRENCY", "").strip()
        if concurrency:
            data["server"] = {"workers": concurrency}
        for section, name in _TOKEN_ENV_VARS.items():
            token = os.environ.get(name, "")
            if token:
                data[section] = {"token": token}
        for env, section, key in (
            ("DATABASE_URL", "store", "database_url"),
            ("REDIS_URL", "coherence", "redis_url"),
        ):
            if value := os.environ.get(env, "").strip():
                data[section] = {key: value}
        return data


_TOKEN_ENV_VARS = {"admin": "ADMIN_TOKEN", "metrics": "METRICS_TOKEN"}


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


def _env_name(loc: tuple[str | int, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def _origin(loc: tuple[str | int, ...], path: Path | None) -> str:
    """Where a key's value came from: an env var when one is set, else the YAML file."""
    env_name = _env_name(loc)
    if env_name in os.environ:
        return f"env {env_name}"
    if loc == ("server", "workers") and os.environ.get("WEB_CONCURRENCY"):
        return "env WEB_CONCURRENCY"
    for section, name in _TOKEN_ENV_VARS.items():
        if loc[:1] == (section,) and os.environ.get(name):
            return f"env {name}"
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


def load_settings(path: str | Path | None = None) -> Settings:
    """Build settings from the YAML profile at `path` (default: $APP_CONFIG) plus env vars.

    Raises:
        SettingsError: one message naming the file or env var, the key, the value, what is allowed.
    """
    if path is None:
        path = os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH
    yaml_path = Path(path)
    data = _read_yaml(yaml_path)
    secrets = [(section, "token", env) for section, env in _TOKEN_ENV_VARS.items()]
    secrets += [("store", "database_url", "DATABASE_URL"), ("coherence", "redis_url", "REDIS_URL")]
    for section, key, env in secrets:
        part = data.get(section)
        if isinstance(part, dict) and key in part:
            msg = (
                f"invalid settings in file {str(yaml_path)!r}: key '{section}.{key}' must not be "
                f"in a file (a secret); allowed: env {env} or APP_{section.upper()}__{key.upper()}"
            )
            raise SettingsError(msg)
    if "config_file" in data:
        msg = f"invalid settings in file {str(yaml_path)!r}: unknown key 'config_file'"
        raise SettingsError(msg)
    problem = web_concurrency_problem(os.environ.get("WEB_CONCURRENCY", ""))
    if problem is not None:
        raise SettingsError(f"invalid settings in env WEB_CONCURRENCY: {problem}")
    with _yaml_source(yaml_path):
        try:
            settings = Settings(config_file=yaml_path)
        except ValidationError as exc:
            raise _from_validation_error(exc, yaml_path) from None
    for name, hint in unknown_env_vars():
        logger.warning("env %s matches no settings key and is ignored%s", name, hint)
    _check_cross_fields(settings, yaml_path)
    return settings


def unknown_env_vars(environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """APP_* variables that name no settings key, each with a '; did you mean ...' hint."""
    known = {_env_name(tuple(key.split("."))) for key in all_keys(Settings)}
    known |= {CONFIG_ENV_VAR, _env_name(("config_file",))}
    return unmatched_env_vars(os.environ if environ is None else environ, ENV_PREFIX, known)


@contextmanager
def _yaml_source(path: Path) -> Iterator[None]:
    token = _yaml_path.set(path)
    try:
        yield
    finally:
        _yaml_path.reset(token)


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
            logger.info("  %s: %s", section, _flatten(values))


def _flatten(data: Mapping[str, Any], prefix: str = "") -> str:
    parts: list[str] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            parts.append(_flatten(value, f"{name}."))
        else:
            parts.append(f"{name}={value}")
    return " ".join(parts)
