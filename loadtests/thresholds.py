"""Load-test settings and verdict thresholds: config/loadtest.yaml, then env vars, then CLI."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_THRESHOLDS_PATH = Path("config/loadtest.yaml")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_INT_FIELDS = frozenset({"users", "prefill_max_passes"})
_DURATION_RE = re.compile(r"^\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s?)?\s*$")


@dataclass(frozen=True)
class LoadSettings:
    """Everything that shapes and judges one run; each field is a key of config/loadtest.yaml."""

    users: int = 50
    spawn_rate: float = 10.0
    duration_seconds: float = 120.0
    warmup_fraction: float = 0.5
    max_rss_mb: float = 400.0
    max_slope_mb_per_min: float = 1.0
    max_growth_mb_per_1k_requests: float = 1.0
    confidence: float = 0.95
    min_growth_mb: float = 4.0
    recycle_settle_seconds: float = 0.0
    max_error_ratio: float = 0.0
    max_p95_ms: float = 1000.0
    max_health_ms: float = 1000.0
    health_interval_seconds: float = 5.0
    prefill: bool = True
    prefill_max_passes: int = 3
    prefill_max_seconds: float = 90.0

    def __post_init__(self) -> None:
        _check_range("users", self.users, 1, 10_000)
        _check_range("spawn_rate", self.spawn_rate, 0.01, 10_000)
        _check_range("duration_seconds", self.duration_seconds, 5, 7 * 86_400)
        _check_range("warmup_fraction", self.warmup_fraction, 0.0, 0.95)
        _check_range("max_rss_mb", self.max_rss_mb, 1, 1 << 20)
        _check_range("max_slope_mb_per_min", self.max_slope_mb_per_min, 0.0, 1e6)
        _check_range("max_growth_mb_per_1k_requests", self.max_growth_mb_per_1k_requests, 0, 1e6)
        _check_range("confidence", self.confidence, 0.5, 0.999)
        _check_range("min_growth_mb", self.min_growth_mb, 0.0, 1e6)
        _check_range("recycle_settle_seconds", self.recycle_settle_seconds, 0.0, 3600)
        _check_range("max_error_ratio", self.max_error_ratio, 0.0, 1.0)
        _check_range("max_p95_ms", self.max_p95_ms, 1, 3_600_000)
        _check_range("max_health_ms", self.max_health_ms, 1, 3_600_000)
        _check_range("health_interval_seconds", self.health_interval_seconds, 0.1, 3600)
        _check_range("prefill_max_passes", self.prefill_max_passes, 1, 100)
        _check_range("prefill_max_seconds", self.prefill_max_seconds, 1, 3600)


@dataclass(frozen=True)
class Plan:
    """A Render plan's shape: a CFS CPU quota and a hard memory limit."""

    name: str
    cpu_quota_us: int
    cpu_period_us: int
    memory_limit_mb: int

    @property
    def cpus(self) -> float:
        """The CPU share the quota grants (0.5 for Starter)."""
        return self.cpu_quota_us / self.cpu_period_us

    @property
    def memory_limit_bytes(self) -> int:
        """The memory limit in bytes."""
        return self.memory_limit_mb * 1024 * 1024


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        msg = f"{name} must be within [{low}, {high}], got {value!r}"
        raise ValueError(msg)


def env_name(field: str) -> str:
    """The env var (and Makefile variable) that overrides a field: DURATION, USERS, MAX_RSS_MB."""
    return "DURATION" if field == "duration_seconds" else field.upper()


def parse_duration(text: str) -> float:
    """Seconds from "120", "90s", "2m", "1h30m" (Locust's --run-time syntax).

    Raises:
        ValueError: text is not such a duration.
    """
    match = _DURATION_RE.match(text)
    if not text.strip() or match is None or not any(match.groups()):
        msg = f"duration must look like 120, 90s, 2m or 1h30m, got {text!r}"
        raise ValueError(msg)
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def _coerce(field: str, value: object, source: str) -> float | int | bool:
    if field == "prefill":
        text = str(value).strip().lower()
        if isinstance(value, bool) or text in _TRUE | _FALSE:
            return value if isinstance(value, bool) else text in _TRUE
        msg = f"{source}: prefill must be true or false, got {value!r}"
        raise ValueError(msg)
    if field == "duration_seconds" and isinstance(value, str):
        return parse_duration(value)
    try:
        number = float(value)  # type: ignore[arg-type]  # str/int/float; anything else raises
    except (TypeError, ValueError):
        msg = f"{source}: {field} must be a number, got {value!r}"
        raise ValueError(msg) from None
    if field in _INT_FIELDS:
        if number != int(number):
            msg = f"{source}: {field} must be a whole number, got {value!r}"
            raise ValueError(msg)
        return int(number)
    return number


def _layer(
    target: dict[str, float | int | bool], layer: Mapping[str, Any] | None, source: str
) -> None:
    names = {f.name for f in dataclasses.fields(LoadSettings)}
    for key, value in (layer or {}).items():
        if key not in names:
            msg = f"{source}: unknown key {key!r}; allowed: {', '.join(sorted(names))}"
            raise ValueError(msg)
        if value is not None:
            target[key] = _coerce(key, value, source)


def read_config(path: Path = DEFAULT_THRESHOLDS_PATH) -> dict[str, Any]:
    """The parsed YAML file (a mapping), with a message naming the file when it is not one.

    Raises:
        ValueError: the file is not a YAML mapping.
    """
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        msg = f"{path}: expected a mapping at the top level, got {type(data).__name__}"
        raise ValueError(msg)
    return data


def resolve_settings(
    config: Mapping[str, Any],
    *,
    profile: str,
    is_smoke: bool = False,
    env: Mapping[str, str] | None = None,
    cli: Mapping[str, object] | None = None,
    source: str = str(DEFAULT_THRESHOLDS_PATH),
) -> LoadSettings:
    """Merge the layers: defaults < profiles[profile] < smoke (if is_smoke) < env < cli.

    env is read through env_name() (MAX_RSS_MB, DURATION, ...); None values in cli are skipped.

    Raises:
        ValueError: an unknown key, a value that is not a number, or one out of its range.
    """
    merged: dict[str, float | int | bool] = {}
    _layer(merged, config.get("defaults"), f"{source}: defaults")
    _layer(merged, (config.get("profiles") or {}).get(profile), f"{source}: profiles.{profile}")
    if is_smoke:
        _layer(merged, config.get("smoke"), f"{source}: smoke")
    names = [f.name for f in dataclasses.fields(LoadSettings)]
    env_layer = {n: (env or {}).get(env_name(n)) or None for n in names}
    _layer(merged, env_layer, "environment")
    _layer(merged, dict(cli or {}), "command line")
    try:
        return LoadSettings(**merged)  # type: ignore[arg-type]  # keys checked by _layer
    except ValueError as exc:
        msg = f"{source} (after env and CLI overrides): {exc}"
        raise ValueError(msg) from None


def resolve_plan(config: Mapping[str, Any], name: str, *, source: str = "") -> Plan:
    """The plan called name from the `plans` section.

    Raises:
        ValueError: no such plan, or a key is missing or not an integer.
    """
    plans = config.get("plans") or {}
    if name not in plans:
        msg = f"{source}: unknown plan {name!r}; allowed: {', '.join(sorted(plans)) or 'none'}"
        raise ValueError(msg)
    raw = plans[name]
    try:
        return Plan(
            name=name,
            cpu_quota_us=int(raw["cpu_quota_us"]),
            cpu_period_us=int(raw["cpu_period_us"]),
            memory_limit_mb=int(raw["memory_limit_mb"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        keys = "cpu_quota_us, cpu_period_us, memory_limit_mb"
        msg = f"{source}: plans.{name} needs integer {keys}: {exc}"
        raise ValueError(msg) from None
