"""The process-wide cleanup service of the seed's API: await start/stop_memory_cleanup()."""

from __future__ import annotations

import dataclasses
from typing import Any

from memsafe.cleanup import CleanupConfig, MemoryCleanupService

_default_service: MemoryCleanupService | None = None


def start_memory_cleanup_sync(
    config: CleanupConfig | None = None, **kwargs: Any
) -> MemoryCleanupService:
    """Start the process-wide cleanup service on the running loop and return it.

    The synchronous form of :func:`start_memory_cleanup`, for code on the event loop that
    cannot await. Keyword arguments naming CleanupConfig fields override ``config``; the
    others go to MemoryCleanupService. A second call returns the already running service
    unchanged.

    Raises:
        RuntimeError: no event loop runs in this thread, or a task that ignored cancellation
            still runs (never two loops).
    """
    global _default_service
    if _default_service is not None and _default_service.is_running:
        _default_service.start()  # raises while a task that ignored cancellation still runs
        return _default_service
    names = {f.name for f in dataclasses.fields(CleanupConfig)}
    overrides = {k: v for k, v in kwargs.items() if k in names}
    service_kwargs = {k: v for k, v in kwargs.items() if k not in names}
    base = config if config is not None else CleanupConfig()
    effective = dataclasses.replace(base, **overrides) if overrides else base
    service = MemoryCleanupService(effective, **service_kwargs)
    service.start()
    _default_service = service
    return service


async def start_memory_cleanup(
    config: CleanupConfig | None = None, **kwargs: Any
) -> MemoryCleanupService:
    """Start the process-wide cleanup service (the seed's ``await start_memory_cleanup()``).

    Awaitable from a startup handler or a lifespan; returns the running service. Same
    arguments as :func:`start_memory_cleanup_sync`.
    """
    return start_memory_cleanup_sync(config, **kwargs)


async def stop_memory_cleanup() -> None:
    """Stop the process-wide cleanup service started by start_memory_cleanup (if any)."""
    global _default_service
    service = _default_service
    if service is None:
        return
    await service.stop()
    # An abandoned task still running stays the default, so no second loop can start.
    if not service.is_running and _default_service is service:
        _default_service = None


def default_cleanup_service() -> MemoryCleanupService | None:
    """The service start_memory_cleanup started in this process, or None."""
    return _default_service


def _reset() -> None:
    """Forget the default service without stopping it (memsafe.testing.reset)."""
    global _default_service
    _default_service = None
