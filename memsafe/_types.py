"""Type variables shared by memsafe's generic containers."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
"""Key type of a cache or mapping."""

V = TypeVar("V")
"""Value type of a cache or mapping."""

T = TypeVar("T")
"""Type of a caller-supplied default."""
