"""Exceptions raised by memsafe."""

from __future__ import annotations


class MemsafeError(Exception):
    """Base class for memsafe's own errors (bad arguments raise ValueError or TypeError)."""
