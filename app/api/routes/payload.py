"""GET /payload?size_kib=N: a large response, bounded by settings.payload.max_size_kib."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from app.api.deps import StateDep

DEFAULT_SIZE_KIB = 64

router = APIRouter(tags=["demo"])


@router.get(
    "/payload",
    response_class=Response,
    responses={422: {"description": "size_kib is not 1..payload.max_size_kib"}},
)
async def payload(
    state: StateDep,
    size_kib: Annotated[
        int, Query(ge=1, description="Body size in KiB, 1..payload.max_size_kib")
    ] = DEFAULT_SIZE_KIB,
) -> Response:
    """`size_kib` KiB of zero bytes: exercises large allocations per request."""
    max_size_kib = state.settings.payload.max_size_kib
    if size_kib > max_size_kib:
        # Same shape as FastAPI's own validation errors, naming the limit.
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "type": "less_than_equal",
                    "loc": ["query", "size_kib"],
                    "msg": f"size_kib must be <= {max_size_kib} (payload.max_size_kib)",
                    "input": size_kib,
                    "ctx": {"le": max_size_kib},
                }
            ],
        )
    return Response(bytes(size_kib * 1024), media_type="application/octet-stream")
