"""Exceptions raised by memsafe."""

from __future__ import annotations


class MemsafeError(Exception):
    """Base class for memsafe's own errors (bad arguments raise ValueError or TypeError).

    Thread safety: holds no shared state; an instance is owned by the code that raised it.
    """
