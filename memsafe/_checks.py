"""Argument checks shared by memsafe containers, raising errors that name the value and the rule."""

from __future__ import annotations


def _check_ttl(name: str, ttl_seconds: float | None) -> float | None:
    if ttl_seconds is None:
        return None
    if (
        isinstance(ttl_seconds, bool)
        or not isinstance(ttl_seconds, int | float)
        or not ttl_seconds > 0  # also rejects NaN
    ):
        msg = f"{name} must be a number > 0 or None, got {ttl_seconds!r}"
        raise ValueError(msg)
    return float(ttl_seconds)


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{name} must be an int >= 1, got {value!r}"
        raise ValueError(msg)
    return value


def _unhashable(key: object) -> TypeError:
    return TypeError(f"key must be hashable, got {key!r} of type {type(key).__name__}")
