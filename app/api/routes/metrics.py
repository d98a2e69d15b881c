"""GET /metrics: Prometheus text built from this worker's live state, labelled by pid."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Requests and latency per route template, caches, RSS and cleanup events."""
    body = generate_latest(request.app.state.prometheus_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
