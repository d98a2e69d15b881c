"""GET /payload?size_kib=N: a large response, bounded by settings.payload.max_size_kib."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

DEFAULT_SIZE_KIB = 64


def build_router(max_size_kib: int) -> APIRouter:
    """The /payload route with `max_size_kib` as the schema's maximum (and FastAPI's check).

    Built per app so the served OpenAPI schema states the profile's limit: a schema-valid
    size is then never refused.
    """
    router = APIRouter(tags=["demo"])
    default = min(DEFAULT_SIZE_KIB, max_size_kib)

    @router.get(
        "/payload",
        response_class=Response,
        responses={
            200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}},
            422: {"description": "size_kib is not 1..payload.max_size_kib"},
        },
    )
    async def payload(
        # Query() as the default, not in Annotated: the annotation is a string under
        # `from __future__ import annotations` and could not see this closure's limit.
        size_kib: int = Query(
            default,
            ge=1,
            le=max_size_kib,
            description=f"Body size in KiB, 1..{max_size_kib} (payload.max_size_kib)",
        ),
    ) -> Response:
        """`size_kib` KiB of zero bytes: exercises large allocations per request."""
        return Response(bytes(size_kib * 1024), media_type="application/octet-stream")

    return router
