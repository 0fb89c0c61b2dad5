"""GET /v1/ready: whether a load balancer should send traffic here (/v1/health is liveness)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from fish_speech.server.http import negotiated
from fish_speech.server.lifecycle import RETRY_AFTER_S
from fish_speech.server.state import get_state
from fish_speech.utils.schema import ReadyResponse

router = APIRouter(tags=["health"])


@router.get(
    "/v1/ready",
    response_model=ReadyResponse,
    responses={503: {"description": "Warming up, shutting down, or the engine failed"}},
)
async def ready(request: Request) -> Response:
    state = get_state(request)
    reason = state.lifecycle.not_ready(state.service)
    if reason is not None:
        return JSONResponse(
            {"ready": False, "status": "not_ready", "detail": reason},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    return negotiated(
        request, ReadyResponse(ready=True, status="ready", engine=state.service.engine.name)
    )
