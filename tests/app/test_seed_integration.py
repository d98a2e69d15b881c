"""The seed's integration code for memsafe's cleanup service runs verbatim in a FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from memsafe import MemoryCleanupService, start_memory_cleanup, stop_memory_cleanup
from memsafe._default_cleanup import default_cleanup_service


# on_event is deprecated in FastAPI (pytest turns warnings into errors here); the seed's
# snippet uses it, so this test, and only this one, ignores that one DeprecationWarning.
@pytest.mark.filterwarnings("ignore:\\s*on_event is deprecated:DeprecationWarning")
def test_seed_on_event_snippet_starts_and_stops_the_service() -> None:
    app = FastAPI()

    # --- the seed's snippet, verbatim ---
    @app.on_event("startup")
    async def startup():  # type: ignore[no-untyped-def]  # the seed's code, unannotated
        await start_memory_cleanup()

    @app.on_event("shutdown")
    async def shutdown():  # type: ignore[no-untyped-def]  # the seed's code, unannotated
        await stop_memory_cleanup()

    # --- end of the seed's snippet ---

    with TestClient(app):
        service = default_cleanup_service()
        assert isinstance(service, MemoryCleanupService)
        assert service.is_running
    assert not service.is_running
    assert default_cleanup_service() is None


def test_awaited_in_a_lifespan_returns_the_running_service() -> None:
    seen: list[MemoryCleanupService] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        seen.append(await start_memory_cleanup(interval_seconds=60))
        yield
        await stop_memory_cleanup()

    with TestClient(FastAPI(lifespan=lifespan)):
        assert seen[0].is_running
        assert seen[0].config.interval_seconds == 60
    assert not seen[0].is_running
