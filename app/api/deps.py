"""FastAPI dependencies: the objects the lifespan built, and the admin bearer-token check."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from pydantic import BaseModel, SecretStr

from app.core.config import Settings

if TYPE_CHECKING:
    from app.cache_redis import RedisTier
    from app.core.commands import CommandBus
    from app.core.history import WorkerHistory
    from app.core.request_metrics import RequestMetrics
    from app.core.shared_snapshots import SharedSnapshots
    from app.services.users import UserDataService
    from app.store import StoreBackend
    from memsafe import CacheManager, InvalidationListener, MemoryCleanupService, MemoryMonitor


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
    history: WorkerHistory | None = None
    commands: CommandBus | None = None


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


class ErrorBody(BaseModel):
    """An error answer: what went wrong, in words."""

    detail: str


# OpenAPI entries of the bearer-token checks below, for routers and routes that use them.
TOKEN_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No `Authorization: Bearer <token>` header"},
    403: {"model": ErrorBody, "description": "The bearer token is wrong"},
}


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, stripped; None without one."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        return None
    return given


def token_matches(given: str | None, expected: SecretStr | None) -> bool:
    """True when `given` equals the configured token (constant-time compare)."""
    if given is None or expected is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.get_secret_value().encode("utf-8"))


def has_admin_token(request: Request) -> bool:
    """True when the request carries the configured admin token (no error either way)."""
    return token_matches(bearer_token(request), _state(request).settings.admin.token)


def _require_token(request: Request, expected: SecretStr, what: str) -> None:
    given = bearer_token(request)
    if given is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"{what} needs 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not token_matches(given, expected):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"{what} token is wrong")


async def require_admin(request: Request) -> None:
    """Allow the request only with `Authorization: Bearer <ADMIN_TOKEN>` (constant-time compare).

    Raises:
        HTTPException: 401 without a bearer token, 403 with a wrong one.
    """
    token = _state(request).settings.admin.token
    if token is None:  # routes are not mounted then; kept as a second guard
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not Found")
    _require_token(request, token, "admin endpoints")


async def require_metrics_token(request: Request) -> None:
    """With metrics.token set (env METRICS_TOKEN), allow only `Authorization: Bearer <it>`.

    Raises:
        HTTPException: 401 without a bearer token, 403 with a wrong one.
    """
    token = _state(request).settings.metrics.token
    if token is not None:
        _require_token(request, token, "/metrics")


async def require_write_token(request: Request) -> None:
    """Writes need `Authorization: Bearer <ADMIN_TOKEN>`: a deployed demo cannot be defaced.

    Raises:
        HTTPException: 401 without a bearer token, 403 with a wrong one or when no
            ADMIN_TOKEN is set (writes are then off).
    """
    token = _state(request).settings.admin.token
    if token is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "writes are disabled: set ADMIN_TOKEN to enable them"
        )
    _require_token(request, token, "writes")
