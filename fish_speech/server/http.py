"""Request parsing and response encoding shared by every route.

Bodies arrive as msgpack, JSON or multipart form data (chosen by Content-Type); replies
that are documents (not audio) are JSON or msgpack, chosen by ``?format=`` or ``Accept``.
Every failure is ``{"detail": "..."}`` with a 4xx status that says whose fault it is.
"""

from __future__ import annotations

import json
import re
from typing import TypeVar

import ormsgpack
from fastapi import HTTPException, Request, Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from fish_speech.utils.schema import describe_validation_error

M = TypeVar("M", bound=BaseModel)

MSGPACK = "application/msgpack"
JSON = "application/json"
SUPPORTED_BODIES = f"{MSGPACK}, {JSON}, multipart/form-data"


async def _read_form(request: Request) -> dict:
    try:
        form = await request.form()
    except HTTPException:  # e.g. 413 from the body limit, raised while the form streams in
        raise
    except Exception as exc:  # the multipart parser raises several unrelated types
        raise HTTPException(400, f"Malformed multipart body: {exc}") from exc
    data: dict = {}
    for key, value in form.multi_items():
        data[key] = await value.read() if isinstance(value, UploadFile) else value
    return data


# A \uD800-\uDFFF escape: JSON can spell a lone surrogate, which no UTF-8 text can hold.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _load_json(body: bytes):
    try:
        data = json.loads(body)
    except RecursionError as exc:
        raise HTTPException(400, "Malformed JSON body: nested too deeply") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"Malformed JSON body: {exc}") from exc
    if _SURROGATE_ESCAPE.search(body):
        try:  # only when the raw text has such an escape: a real pair is fine
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            detail = "Malformed JSON body: a string holds a lone surrogate"
            raise HTTPException(400, detail) from exc
    return data


async def parse_body(request: Request, model: type[M]) -> M:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type in (MSGPACK, "application/x-msgpack"):
        try:
            data = ormsgpack.unpackb(await request.body())
        except (ormsgpack.MsgpackDecodeError, ValueError) as exc:
            raise HTTPException(400, f"Malformed msgpack body: {exc}") from exc
    elif media_type == JSON:
        data = _load_json(await request.body())
    elif media_type == "multipart/form-data":
        data = await _read_form(request)
    else:
        raise HTTPException(
            415,
            f"Unsupported Content-Type {media_type or '(none)'!r}: send {SUPPORTED_BODIES}",
            headers={"Accept": SUPPORTED_BODIES},
        )
    if not isinstance(data, dict):
        raise HTTPException(400, "The request body must be an object (a map of fields)")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HTTPException(400, describe_validation_error(exc)) from exc


def body_schema(model: type[BaseModel]) -> dict:
    """OpenAPI ``openapi_extra`` for a route that parses its body itself."""
    schema = {"schema": model.model_json_schema()}
    return {"requestBody": {"required": True, "content": {MSGPACK: schema, JSON: schema}}}


def wants_msgpack(request: Request) -> bool:
    """``?format=`` wins; then whichever of the two types ``Accept`` names first; else JSON."""
    fmt = request.query_params.get("format", "").strip().lower()
    if fmt in ("msgpack", MSGPACK):
        return True
    if fmt in ("json", JSON):
        return False
    accept = request.headers.get("accept", "").lower()
    msgpack_at, json_at = accept.find(MSGPACK), accept.find(JSON)
    return msgpack_at >= 0 and (json_at < 0 or msgpack_at < json_at)


def negotiated(request: Request, body: BaseModel, status_code: int = 200) -> Response:
    if wants_msgpack(request):
        return Response(ormsgpack.packb(body.model_dump()), status_code, media_type=MSGPACK)
    return Response(body.model_dump_json(), status_code, media_type=JSON)
