"""memsafe: bounded caches and memory control for Python web services on small instances."""

from __future__ import annotations

from memsafe.errors import MemsafeError

__all__ = ["MemsafeError"]
__version__ = "0.1.0"
