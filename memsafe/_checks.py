"""Argument checks shared by every memsafe constructor: TypeError for a wrong type, ValueError
for a value out of range, each message naming the argument, the value and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

_S = TypeVar("_S", bound=str)


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _check_positive_int(name: str, value: object, *, or_none: str = "") -> int:
    """Return `value` if it is an int >= 1 (bool is not an int here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name} must be an int >= 1{or_none}, got {value!r} ({type(value).__name__})"
        raise TypeError(msg)
    if value < 1:
        msg = f"{name} must be an int >= 1{or_none}, got {value!r}"
        raise ValueError(msg)
    return value


def _check_optional_positive_int(name: str, value: object) -> int | None:
    """Return `value` if it is None or an int >= 1."""
    return None if value is None else _check_positive_int(name, value, or_none=" or None")


def _check_ttl(name: str, ttl_seconds: object) -> float | None:
    """Return `ttl_seconds` as a float if it is None or a number > 0 (NaN is refused)."""
    if ttl_seconds is None:
        return None
    if not _is_number(ttl_seconds):
        kind = type(ttl_seconds).__name__
        msg = f"{name} must be a number > 0 or None, got {ttl_seconds!r} ({kind})"
        raise TypeError(msg)
    if not ttl_seconds > 0:  # type: ignore[operator]  # a number, checked above; also rejects NaN
        msg = f"{name} must be a number > 0 or None, got {ttl_seconds!r}"
        raise ValueError(msg)
    return float(ttl_seconds)  # type: ignore[arg-type]  # a number, checked above


def _check_number(
    name: str, value: object, *, low: float, high: float, low_open: bool, prefix: str = ""
) -> float:
    """Return `value` as a float when it lies in the allowed range, else raise naming it."""
    if high == math.inf:
        allowed = f"{prefix}a number {'>' if low_open else '>='} {low:g}"
    else:
        allowed = f"{prefix}in {'(' if low_open else '['}{low:g}, {high:g}]"
    if not _is_number(value):
        msg = f"{name} must be {allowed}, got {value!r} ({type(value).__name__})"
        raise TypeError(msg)
    number = float(value)  # type: ignore[arg-type]  # a number, checked above
    too_low = number <= low if low_open else number < low
    if math.isnan(number) or too_low or number > high:
        msg = f"{name} must be {allowed}, got {value!r}"
        raise ValueError(msg)
    return number


def _check_optional_number(
    name: str, value: object, *, low: float, high: float, low_open: bool
) -> float | None:
    """None, or `value` checked by `_check_number`."""
    if value is None:
        return None
    return _check_number(name, value, low=low, high=high, low_open=low_open, prefix="None or ")


def _check_choice(name: str, value: object, allowed: Sequence[_S]) -> _S:
    """Return `value` if it is one of the `allowed` strings."""
    if not isinstance(value, str):
        msg = f"{name} must be one of {tuple(allowed)!r}, got {value!r} ({type(value).__name__})"
        raise TypeError(msg)
    for choice in allowed:
        if value == choice:
            return choice
    msg = f"{name} must be one of {tuple(allowed)!r}, got {value!r}"
    raise ValueError(msg)


def _check_callable(name: str, value: object, *, optional: bool = False) -> Any:
    """Return `value` if it is callable (or None when `optional`)."""
    if (value is None and optional) or callable(value):
        return value
    allowed = "callable or None" if optional else "callable"
    msg = f"{name} must be {allowed}, got {value!r} ({type(value).__name__})"
    raise TypeError(msg)


def _check_str(name: str, value: object, *, allow_empty: bool = True) -> str:
    """Return `value` if it is a str (non-empty unless `allow_empty`)."""
    if not isinstance(value, str):
        kind = "a str" if allow_empty else "a non-empty str"
        msg = f"{name} must be {kind}, got {value!r} ({type(value).__name__})"
        raise TypeError(msg)
    if not value and not allow_empty:
        msg = f"{name} must be a non-empty str, got {value!r}"
        raise ValueError(msg)
    return value


def _check_lock(name: str, value: Any) -> Any:
    """Return `value` if it is a context manager (a lock), else raise TypeError."""
    if hasattr(value, "__enter__") and hasattr(value, "__exit__"):
        return value
    msg = f"{name} must be a context manager (threading.RLock) or None, got {value!r}"
    raise TypeError(msg)


def _unhashable(key: object) -> TypeError:
    return TypeError(f"key must be hashable, got {key!r} of type {type(key).__name__}")
