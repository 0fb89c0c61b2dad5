"""Async generation tasks: create, poll, download, cancel (routes of the API document).

Status and download accept the id as a path segment (as documented) or as ``?step_id=``
(the form later clients of the fork use).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import ormsgpack
from fastapi import APIRouter, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from fish_speech.audio.formats import MEDIA_TYPES
from fish_speech.engine.service import synthesis_request
from fish_speech.server.http import body_schema, negotiated, parse_body
from fish_speech.server.routes_tts import check_text, resolve_voice
from fish_speech.server.state import get_state
from fish_speech.tasks.base import ACTIVE, Task
from fish_speech.utils.schema import (
    AsyncGenerateRequest,
    AsyncGenerateResponse,
    StopTaskResponse,
    TaskListResponse,
    TaskStatusResponse,
    TaskSummary,
    is_valid_reference_id,
)

router = APIRouter(tags=["async tasks"])
TEXT_PREVIEW = 120  # characters of a task's text shown in the task list
AUDIO_RESPONSE = {
    200: {"description": "The audio file", "content": {m: {} for m in MEDIA_TYPES.values()}}
}


def _check_step_id(step_id: str) -> None:
    # The rule of reference ids: no id can name a path, and download_url stays one segment.
    if not is_valid_reference_id(step_id):
        raise HTTPException(
            400,
            f"Invalid step_id {step_id!r}: use 1-255 letters, digits, '-', '_' or inner spaces",
        )


def _find(request: Request, step_id: str | None) -> Task:
    step_id = step_id or request.query_params.get("step_id")
    if not step_id:
        raise HTTPException(400, "step_id is required")
    _check_step_id(step_id)
    task = get_state(request).tasks.get(step_id)  # called in a thread: it may block
    if task is None:
        raise HTTPException(404, f"Task {step_id} not found")
    return task


@router.post(
    "/generate_audio_enhanced_async",
    response_model=AsyncGenerateResponse,
    openapi_extra=body_schema(AsyncGenerateRequest),
)
async def create_task(request: Request) -> Response:
    state = get_state(request)
    req = await parse_body(request, AsyncGenerateRequest)
    check_text(state, req.text)
    state.service.engine.check_request(synthesis_request(req))  # e.g. a latency it lacks
    await resolve_voice(state, req)  # unknown voice or bad audio: 4xx now, not a failed task
    try:
        payload = ormsgpack.packb(req.model_dump())
    except TypeError as exc:  # e.g. an integer beyond 64 bits, which msgpack cannot hold
        raise HTTPException(400, f"Invalid request: {exc}") from exc
    await run_in_threadpool(state.tasks.create, req.step_id, req.format, payload)
    state.runner.notify()
    return negotiated(
        request,
        AsyncGenerateResponse(
            success=True, message="Task created and started", step_id=req.step_id, status="pending"
        ),
    )


def _status_fields(task: Task) -> dict:
    completed = task.status == "completed"
    return {
        "success": True,
        "step_id": task.step_id,
        "status": task.status,
        "created_at": task.created_at,
        "started_at": task.started_at,
        "completed_at": task.completed_at,
        "download_url": f"/download_result/{quote(task.step_id, safe='')}" if completed else None,
        "error": task.error,
        "progress": task.reported_progress,
    }


async def _status(request: Request, step_id: str | None) -> Response:
    task = await run_in_threadpool(_find, request, step_id)
    return negotiated(request, TaskStatusResponse(**_status_fields(task)))


def _summary(task: Task) -> TaskSummary:
    text = ormsgpack.unpackb(task.request).get("text", "")
    preview = text if len(text) <= TEXT_PREVIEW else text[: TEXT_PREVIEW - 1] + "…"
    return TaskSummary(**_status_fields(task), format=task.format, text=preview)


@router.get(
    "/v1/tasks",
    response_model=TaskListResponse,
    summary="List recent tasks (extension)",
    description="Not in the Fish Speech API document: the newest tasks first, for the web "
    "page and dashboards. `limit` is 1-500 (default 50).",
)
async def list_tasks(request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Response:
    tasks = await run_in_threadpool(get_state(request).tasks.recent, limit)
    return negotiated(request, TaskListResponse(success=True, tasks=[_summary(t) for t in tasks]))


@router.get("/get_task_status/{step_id}", response_model=TaskStatusResponse)
async def task_status(request: Request, step_id: str) -> Response:
    return await _status(request, step_id)


@router.get("/get_task_status", response_model=TaskStatusResponse)
async def task_status_by_query(request: Request) -> Response:
    return await _status(request, None)


async def _download(request: Request, step_id: str | None) -> Response:
    state = get_state(request)
    task = await run_in_threadpool(_find, request, step_id)
    if task.status != "completed":
        raise HTTPException(
            400, f"Task {task.step_id} is not completed, current status: {task.status}"
        )
    data = await run_in_threadpool(state.tasks.read_result, task)
    if data is None:
        raise HTTPException(404, f"The result of task {task.step_id} is missing (expired?)")
    return Response(
        data,
        media_type=MEDIA_TYPES[task.format],
        headers={"Content-Disposition": f"attachment; filename=audio.{task.format}"},
    )


@router.get("/download_result/{step_id}", responses=AUDIO_RESPONSE)
async def download_result(request: Request, step_id: str) -> Response:
    return await _download(request, step_id)


@router.get("/download_result", responses=AUDIO_RESPONSE)
async def download_result_by_query(request: Request) -> Response:
    return await _download(request, None)


@router.post("/stop_generation", response_model=StopTaskResponse)
async def stop_all(request: Request) -> Response:
    stopped = await run_in_threadpool(get_state(request).tasks.cancel_all)
    return negotiated(request, StopTaskResponse(success=True, message=f"Stopped {stopped} task(s)"))


@router.post("/stop_async_task/{step_id}", response_model=StopTaskResponse)
async def stop_one(request: Request, step_id: str) -> Response:
    _check_step_id(step_id)
    task = await run_in_threadpool(get_state(request).tasks.cancel, step_id)
    if task is None:
        raise HTTPException(404, f"Task {step_id} not found")
    message = (
        f"Task {step_id} stopped"
        if task.status in ACTIVE
        else f"Task {step_id} already {task.status}"
    )
    return negotiated(request, StopTaskResponse(success=True, message=message, step_id=step_id))
