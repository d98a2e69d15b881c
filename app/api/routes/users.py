"""Users: read one or a page (cached, paginated), and bearer-token writes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import TOKEN_RESPONSES, StateDep, UsersDep, require_write_token
from app.api.errors import StoreUnavailableBody

CACHE_HEADER = "X-Cache"

MAX_USER_ID = 2**63 - 1  # SQLite INTEGER and PostgreSQL BIGINT range
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"

router = APIRouter(tags=["users"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No user with this id"}}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": StoreUnavailableBody, "description": "The store cannot answer"}
}

UserId = Annotated[int, Path(ge=1, le=MAX_USER_ID, description="User id, 1 or more")]
Name = Annotated[str, Field(min_length=1, max_length=100)]
Email = Annotated[str, Field(min_length=3, max_length=254, pattern=EMAIL_PATTERN)]
City = Annotated[str, Field(min_length=1, max_length=100)]


class User(BaseModel):
    """A user as the API serves it."""

    id: int
    name: str
    email: str
    city: str
    created_at: str


class UserPage(BaseModel):
    """One page of users in id order; pass `next_cursor` as `cursor` for the next page."""

    items: list[User]
    next_cursor: int | None


class UserCreate(BaseModel):
    """Body of POST /users: every field required, nothing else allowed."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    email: Email
    city: City


class UserPatch(BaseModel):
    """Body of PATCH /users/{id}: any non-empty subset of the fields."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    email: Email | None = None
    city: City | None = None


def _not_found(user_id: int, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(
        status.HTTP_404_NOT_FOUND,
        detail={
            "error": "user_not_found",
            "user_id": user_id,
            "message": f"no user with id {user_id}",
        },
        headers=headers,
    )


@router.get("/users/{user_id}", responses={**NOT_FOUND, **UNAVAILABLE})
async def get_user(user_id: UserId, users: UsersDep, response: Response) -> User:
    """The user with `user_id`; 404 when unknown, 422 when the id is not a positive integer.

    X-Cache: hit | miss says whether this worker's cache answered (the load test counts it
    per scenario; it says nothing a client could not time for itself).
    """
    user, is_hit = await users.lookup(user_id)
    cache_header = {CACHE_HEADER: "hit" if is_hit else "miss"}
    if user is None:
        raise _not_found(user_id, cache_header)
    response.headers.update(cache_header)
    return User.model_validate(user)


@router.get("/users", responses=UNAVAILABLE)
async def list_users(
    users: UsersDep,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, description="Page size, at most store.max_page_size")] = 20,
    cursor: Annotated[int, Query(ge=0, le=MAX_USER_ID, description="Last id seen")] = 0,
) -> UserPage:
    """Users with ids above `cursor`, at most `limit` (capped by store.max_page_size: 422)."""
    max_page = state.settings.store.max_page_size
    if limit > max_page:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "loc": ["query", "limit"],
                    "msg": f"limit must be <= {max_page} (store.max_page_size), got {limit}",
                    "type": "less_than_equal",
                }
            ],
        )
    rows = await users.list_users(after_id=cursor, limit=limit)
    items = [User.model_validate(row) for row in rows]
    return UserPage(items=items, next_cursor=items[-1].id if len(items) == limit else None)


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(require_write_token)],
    responses={**TOKEN_RESPONSES, **UNAVAILABLE},
)
async def create_user(
    body: UserCreate, users: UsersDep, request: Request, response: Response
) -> User:
    """Create a user; 201 with `Location: /users/{id}`."""
    user = await users.create_user(body.model_dump())
    response.headers["Location"] = str(request.url_for("get_user", user_id=user["id"]).path)
    return User.model_validate(user)


@router.patch(
    "/users/{user_id}",
    dependencies=[Depends(require_write_token)],
    responses={**TOKEN_RESPONSES, **NOT_FOUND, **UNAVAILABLE},
)
async def update_user(user_id: UserId, body: UserPatch, users: UsersDep) -> User:
    """Change the fields given; 422 naming the field when one is invalid or none is given."""
    fields: dict[str, Any] = body.model_dump(exclude_unset=True)
    if not fields or any(value is None for value in fields.values()):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "loc": ["body", *(fields or ["name"])],
                    "msg": "give at least one of name, email, city, each a non-empty string",
                    "type": "missing",
                }
            ],
        )
    user = await users.update_user(user_id, fields)
    if user is None:
        raise _not_found(user_id)
    return User.model_validate(user)


@router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[Depends(require_write_token)],
    responses={**TOKEN_RESPONSES, **NOT_FOUND, **UNAVAILABLE},
)
async def delete_user(user_id: UserId, users: UsersDep) -> Response:
    """Delete a user; 204, or 404 when unknown."""
    if not await users.delete_user(user_id):
        raise _not_found(user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
