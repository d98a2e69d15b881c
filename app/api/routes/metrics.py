"""GET /metrics: Prometheus text built from this worker's live state, labelled by pid."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import TOKEN_RESPONSES, require_metrics_token

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(require_metrics_token)],
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        **TOKEN_RESPONSES,
    },
)
async def metrics(request: Request) -> Response:
    """Requests and latency per route template, caches, RSS and cleanup events.

    With METRICS_TOKEN set, only `Authorization: Bearer <METRICS_TOKEN>` may scrape.
    """
    body = generate_latest(request.app.state.prometheus_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
