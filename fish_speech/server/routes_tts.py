"""POST /v1/tts: text in, audio out (whole file, or streamed sentence by sentence)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from fish_speech.audio.io import MEDIA_TYPES, StreamEncoder, encode_audio
from fish_speech.engine.base import OUTPUT_SAMPLE_RATE, AudioSegment, CancelToken, ReferenceAudio
from fish_speech.engine.service import collect_audio, synthesis_request
from fish_speech.references.resolve import request_voice
from fish_speech.server.http import body_schema, parse_body
from fish_speech.server.state import AppState, get_state
from fish_speech.utils.schema import GenerationFields, ServeTTSRequest

router = APIRouter()

NO_SPEECH = "No speech could be synthesised from this text (nothing speakable in it)"


def check_text(state: AppState, text: str) -> None:
    if not text.strip():
        raise HTTPException(400, "Text is empty")
    limit = state.config.max_text_length
    if limit > 0 and len(text) > limit:
        raise HTTPException(400, f"Text is too long, max length is {limit}")


async def resolve_voice(state: AppState, req: GenerationFields) -> list[ReferenceAudio]:
    return await run_in_threadpool(request_voice, state.store, req)


async def start_synthesis(state: AppState, req: ServeTTSRequest) -> AsyncIterator[AudioSegment]:
    """Validate the request and its voice, then queue it on the inference thread."""
    check_text(state, req.text)
    references = await resolve_voice(state, req)
    return state.service.synthesize(
        synthesis_request(req), references, req.use_memory_cache == "on", CancelToken()
    )


async def collect_while_connected(
    request: Request, segments: AsyncIterator[AudioSegment]
) -> np.ndarray | None:
    """The whole utterance; a client that hangs up first cancels it (freeing its slot)."""
    collecting = asyncio.ensure_future(collect_audio(segments))
    hangup = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({collecting, hangup}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hangup.cancel()
        if not collecting.done():
            collecting.cancel()  # the engine sees the cancel within one step
    return collecting.result()  # raises CancelledError when the client left


async def _disconnected(request: Request) -> None:
    # The body has been read, so the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


def audio_headers(state: AppState, req: ServeTTSRequest) -> dict[str, str]:
    headers = {"Content-Disposition": f"attachment; filename=audio.{req.format}"}
    if req.reference_id is not None or req.references:
        headers["X-Voice-Match"] = state.service.engine.voice_match
    return headers


@router.post(
    "/v1/tts",
    openapi_extra=body_schema(ServeTTSRequest),
    responses={200: {"content": {m: {} for m in MEDIA_TYPES.values()}}},
)
async def tts(request: Request) -> Response:
    state = get_state(request)
    req = await parse_body(request, ServeTTSRequest)
    segments = await start_synthesis(state, req)
    media_type = MEDIA_TYPES[req.format]
    headers = audio_headers(state, req)

    if not req.streaming:
        audio = await collect_while_connected(request, segments)
        if audio is None:
            raise HTTPException(400, NO_SPEECH)
        body = encode_audio(audio, OUTPUT_SAMPLE_RATE, req.format)
        return Response(body, media_type=media_type, headers=headers)

    # Wait for the first sentence before committing to a 200, so a failure that happens
    # at the start still reaches the client as a proper error instead of a cut stream.
    first = await anext(segments, None)
    if first is None:
        raise HTTPException(400, NO_SPEECH)
    encoder = StreamEncoder(req.format, OUTPUT_SAMPLE_RATE, streaming=True)

    async def body() -> AsyncIterator[bytes]:
        try:
            yield encoder.encode(first.samples)
            async for segment in segments:
                yield encoder.encode(segment.samples)
            if tail := encoder.finish():
                yield tail
        finally:
            await segments.aclose()  # client gone or error: stop the engine

    return StreamingResponse(body(), media_type=media_type, headers=headers)
