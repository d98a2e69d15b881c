"""FastAPI dependencies: the objects the lifespan built, and the admin bearer-token check."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request, status

from app.core.config import Settings

if TYPE_CHECKING:
    from app.cache_redis import RedisTier
    from app.core.metrics import RequestMetrics, SharedSnapshots
    from app.services.users import UserDataService
    from app.store import StoreBackend
    from memsafe.cleanup import MemoryCleanupService
    from memsafe.invalidation import InvalidationListener
    from memsafe.manager import CacheManager
    from memsafe.middleware import MemoryMonitor


@dataclass
class AppState:
    """What the lifespan built for this worker; stored as `app.state.runtime`."""

    settings: Settings
    started_at: float
    request_metrics: RequestMetrics
    monitor: MemoryMonitor | None
    manager: CacheManager | None = None
    store: StoreBackend | None = None
    users: UserDataService | None = None
    listener: InvalidationListener | None = None
    shared_tier: RedisTier | None = None
    cleanup: MemoryCleanupService | None = None
    shared: SharedSnapshots | None = None


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.runtime
    return state


async def get_state(request: Request) -> AppState:
    """The AppState of the app serving this request.

    Every dependency here is `async def` on purpose: FastAPI runs a plain `def` dependency in
    the threadpool, a thread hop (~40 us measured) for a dictionary read.
    """
    return _state(request)


async def get_user_service(request: Request) -> UserDataService:
    """The UserDataService; 503 when the lifespan has not started (or has stopped) the app."""
    service = _state(request).users
    if service is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "user store is not open")
    return service


async def get_manager(request: Request) -> CacheManager:
    """The worker's CacheManager; 503 before the lifespan has built it."""
    manager = _state(request).manager
    if manager is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "caches are not built")
    return manager


StateDep = Annotated[AppState, Depends(get_state)]
ManagerDep = Annotated["CacheManager", Depends(get_manager)]
UsersDep = Annotated["UserDataService", Depends(get_user_service)]


async def require_admin(request: Request) -> None:
    """Allow the request only with `Authorization: Bearer <ADMIN_TOKEN>` (constant-time compare).

    Raises:
        HTTPException: 401 without a bearer token, 403 with a wrong one.
    """
    token = _state(request).settings.admin.token
    if token is None:  # routes are not mounted then; kept as a second guard
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not Found")
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "admin endpoints need 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    expected = token.get_secret_value().encode("utf-8")
    if not hmac.compare_digest(given.strip().encode("utf-8"), expected):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin token is wrong")


async def require_write_token(request: Request) -> None:
    """Writes need `Authorization: Bearer <ADMIN_TOKEN>`: a deployed demo cannot be defaced.

    Raises:
        HTTPException: 401 without a bearer token, 403 with a wrong one or when no
            ADMIN_TOKEN is set (writes are then off).
    """
    if _state(request).settings.admin.token is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "writes are disabled: set ADMIN_TOKEN to enable them"
        )
    await require_admin(request)
