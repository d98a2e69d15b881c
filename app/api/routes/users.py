"""GET /users/{user_id}: one user, read through the LRU cache."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response, status
from pydantic import BaseModel

from app.api.deps import UsersDep
from app.api.errors import StoreUnavailableBody

CACHE_HEADER = "X-Cache"
MAX_USER_ID = 2**63 - 1  # SQLite INTEGER range; larger ids would overflow the driver

router = APIRouter(tags=["users"])


class User(BaseModel):
    """A demo user from the SQLite store."""

    id: int
    name: str
    email: str
    city: str
    created_at: str


@router.get(
    "/users/{user_id}",
    responses={
        404: {"description": "No user with this id"},
        503: {"model": StoreUnavailableBody, "description": "The store cannot answer"},
    },
)
async def get_user(
    user_id: Annotated[int, Path(ge=1, le=MAX_USER_ID, description="User id, 1 or more")],
    users: UsersDep,
    response: Response,
) -> User:
    """The user with `user_id`; 404 when unknown, 422 when the id is not a positive integer.

    X-Cache: hit | miss says whether the users cache answered (the load test counts it per
    scenario; it says nothing a client could not time for itself).
    """
    user, is_hit = await users.lookup_async(user_id)
    cache_header = {CACHE_HEADER: "hit" if is_hit else "miss"}
    if user is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail={
                "error": "user_not_found",
                "user_id": user_id,
                "message": f"no user with id {user_id}",
            },
            headers=cache_header,
        )
    response.headers.update(cache_header)
    return User.model_validate(user)
