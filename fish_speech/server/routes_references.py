"""/v1/references/*: saved voices (add, list, delete, rename)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from fish_speech.server.http import body_schema, negotiated, parse_body
from fish_speech.server.state import get_state
from fish_speech.utils.schema import (
    AddReferenceRequest,
    AddReferenceResponse,
    DeleteReferenceRequest,
    DeleteReferenceResponse,
    ListReferencesResponse,
    UpdateReferenceRequest,
    UpdateReferenceResponse,
)

router = APIRouter(prefix="/v1/references", tags=["references"])


@router.post(
    "/add",
    response_model=AddReferenceResponse,
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["id", "audio", "text"],
                        "properties": {
                            "id": {"type": "string", "pattern": r"^[a-zA-Z0-9\-_ ]+$"},
                            "audio": {"type": "string", "format": "binary"},
                            "text": {"type": "string"},
                        },
                    }
                }
            }
        }
    },
)
async def add_reference(request: Request) -> Response:
    req = await parse_body(request, AddReferenceRequest)
    await run_in_threadpool(get_state(request).store.add, req.id, req.audio, req.text)
    return negotiated(
        request,
        AddReferenceResponse(
            success=True,
            message=f"Reference voice '{req.id}' added successfully",
            reference_id=req.id,
        ),
    )


@router.get("/list", response_model=ListReferencesResponse)
async def list_references(request: Request) -> Response:
    ids = await run_in_threadpool(get_state(request).store.list_ids)
    return negotiated(
        request,
        ListReferencesResponse(
            success=True, reference_ids=ids, message=f"Found {len(ids)} reference voices"
        ),
    )


@router.delete(
    "/delete",
    response_model=DeleteReferenceResponse,
    openapi_extra=body_schema(DeleteReferenceRequest),
)
async def delete_reference(request: Request) -> Response:
    req = await parse_body(request, DeleteReferenceRequest)
    await run_in_threadpool(get_state(request).store.delete, req.reference_id)
    return negotiated(
        request,
        DeleteReferenceResponse(
            success=True,
            message=f"Reference voice '{req.reference_id}' deleted successfully",
            reference_id=req.reference_id,
        ),
    )


@router.post(
    "/update",
    response_model=UpdateReferenceResponse,
    openapi_extra=body_schema(UpdateReferenceRequest),
)
async def update_reference(request: Request) -> Response:
    req = await parse_body(request, UpdateReferenceRequest)
    old, new = req.old_reference_id, req.new_reference_id
    await run_in_threadpool(get_state(request).store.rename, old, new)
    return negotiated(
        request,
        UpdateReferenceResponse(
            success=True,
            message=f"Reference voice renamed from '{old}' to '{new}' successfully",
            old_reference_id=old,
            new_reference_id=new,
        ),
    )
