"""Argument checks shared by memsafe containers, raising errors that name the value and the rule."""

from __future__ import annotations

import math


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


def _check_number(name: str, value: object, *, low: float, high: float, low_open: bool) -> float:
    """Return ``value`` as a float when it lies in the allowed range, else raise naming it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{name} must be a number, got {value!r} ({type(value).__name__})"
        raise TypeError(msg)
    number = float(value)
    too_low = number <= low if low_open else number < low
    if math.isnan(number) or too_low or number > high:
        bracket = "(" if low_open else "["
        msg = f"{name} must be in {bracket}{low:g}, {high:g}], got {value!r}"
        raise ValueError(msg)
    return number
