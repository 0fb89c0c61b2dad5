"""The OpenAI speech API (POST /v1/audio/speech, GET /v1/audio/voices, GET /v1/models).

It runs through the same service, voice library, auth and ``{"detail"}`` errors as /v1/tts.
``voice`` names a saved reference. OpenAI's own voice names (alloy, nova, ...) mean the
engine's built-in voice unless a reference of that name is saved, so OpenAI clients work
with their defaults; any other unknown voice is a 404.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from fish_speech.audio.encode import AudioOutput, aac_available
from fish_speech.audio.formats import default_rate
from fish_speech.engine.base import AudioSegment
from fish_speech.references.base import ReferenceNotFound
from fish_speech.references.resolve import resolve_references
from fish_speech.server.http import body_schema, parse_body
from fish_speech.server.model_names import check_model, served_models
from fish_speech.server.routes_tts import (
    NO_SPEECH,
    audio_headers,
    audio_response,
    start_with_voice,
)
from fish_speech.server.state import get_state
from fish_speech.utils.schema import ServeTTSRequest, is_valid_reference_id

router = APIRouter(prefix="/v1", tags=["openai"])

OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "cedar",
    "coral",
    "echo",
    "fable",
    "marin",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)
# OpenAI's pcm is 24 kHz (clients play it at that rate); Opus needs one of its own rates.
OPENAI_RATES = {"pcm": 24000}


class VoiceId(BaseModel):
    id: str


class SpeechRequest(BaseModel):
    model: str
    input: Annotated[str, Field(max_length=4096)]
    voice: str | VoiceId
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: Annotated[float, Field(ge=0.25, le=4.0)] = 1.0
    stream_format: Literal["audio", "sse"] = "audio"
    instructions: str | None = None

    @property
    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, VoiceId) else self.voice


async def _voice(request: Request, name: str) -> tuple[list, bool]:
    """The references for ``name`` and whether a saved voice is used."""
    store = get_state(request).store
    if not is_valid_reference_id(name):
        raise HTTPException(400, f"voice {name!r} is not a valid voice id")
    try:
        return await run_in_threadpool(resolve_references, store, name, []), True
    except ReferenceNotFound:
        if name.lower() in OPENAI_VOICES:
            return [], False  # the engine's own voice
        raise HTTPException(
            404,
            f"voice {name!r} not found: save it with POST /v1/references/add, or see "
            "GET /v1/audio/voices",
        ) from None


def _sse(segments: AsyncIterator[AudioSegment], output: AudioOutput, text: str) -> Response:
    """OpenAI's stream_format "sse": base64 audio deltas, then a done event."""

    async def events() -> AsyncIterator[bytes]:
        spoke = False
        try:
            async for segment in segments:
                spoke = True
                if chunk := await run_in_threadpool(output.feed, segment.samples):
                    yield _event({"type": "speech.audio.delta", "audio": _b64(chunk)})
            if tail := await run_in_threadpool(output.finish):
                yield _event({"type": "speech.audio.delta", "audio": _b64(tail)})
        finally:
            await segments.aclose()
        if not spoke:
            yield _event({"type": "error", "error": {"message": NO_SPEECH}})
            return
        tokens = len(text.split())  # words: this server has no token count of its own
        usage = {"input_tokens": tokens, "output_tokens": 0, "total_tokens": tokens}
        yield _event({"type": "speech.audio.done", "usage": usage})

    return StreamingResponse(events(), media_type="text/event-stream")


def _event(body: dict) -> bytes:
    return f"data: {json.dumps(body)}\n\n".encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@router.post("/audio/speech", openapi_extra=body_schema(SpeechRequest))
async def speech(request: Request) -> Response:
    state = get_state(request)
    req = await parse_body(request, SpeechRequest)
    check_model(req.model, state.service.engine.name, "model")
    if req.response_format == "aac" and not aac_available():
        raise HTTPException(
            400,
            "response_format 'aac' needs the optional PyAV package on the server "
            "(pip install 'fish-speech-server[aac]'); or use mp3, opus, flac, wav or pcm",
        )
    if req.instructions and req.instructions.strip():
        raise HTTPException(
            400,
            "instructions (steering the voice with a prompt) is not supported by the "
            f"{state.service.engine.name} engine; send a voice (a saved reference) instead",
        )
    references, saved = await _voice(request, req.voice_name)
    fields = ServeTTSRequest(text=req.input)
    segments = start_with_voice(state, fields, references)
    fmt = req.response_format
    output = AudioOutput(
        fmt, OPENAI_RATES.get(fmt, default_rate(fmt)), streaming=True, speed=req.speed
    )
    if req.stream_format == "sse":
        return _sse(segments, output, req.input)
    # OpenAI streams every format as it is made (a streamed wav has an open-ended header).
    return await audio_response(request, segments, output, True, audio_headers(state, fmt, saved))


@router.get("/audio/voices")
async def voices(request: Request) -> Response:
    """Saved voices first, then OpenAI's names that are not shadowed by one.

    Both ``voices`` (what Open WebUI reads) and ``data`` (OpenAI's list shape) are given.
    """
    ids = await run_in_threadpool(get_state(request).store.list_ids)
    saved = [{"id": i, "name": i, "object": "audio.voice", "type": "audio_sample"} for i in ids]
    builtin = [
        {"id": v, "name": f"{v} (built-in voice)", "object": "audio.voice", "type": "builtin"}
        for v in OPENAI_VOICES
        if v not in ids
    ]
    items = [*saved, *builtin]
    return JSONResponse({"object": "list", "data": items, "voices": items})


@router.get("/models")
async def models(request: Request) -> Response:
    engine = get_state(request).service.engine.name
    created = int(time.time())
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": f"fish-speech:{engine}"}
        for name in served_models(engine)
    ]
    return JSONResponse({"object": "list", "data": data})
