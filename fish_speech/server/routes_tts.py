"""POST /v1/tts: text in, audio out (whole file, or streamed sentence by sentence)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from fish_speech.audio.encode import AudioOutput
from fish_speech.audio.formats import MEDIA_TYPES, default_rate, opus_bits_per_second
from fish_speech.engine.base import AudioSegment, Cancelled, ReferenceAudio
from fish_speech.engine.service import synthesis_request
from fish_speech.references.resolve import VoiceLimits, request_voice
from fish_speech.server.config import ServerConfig
from fish_speech.server.http import body_schema, parse_body
from fish_speech.server.model_names import check_model
from fish_speech.server.state import AppState, get_state
from fish_speech.utils.schema import GenerationFields, Prosody, ServeTTSRequest

router = APIRouter()
T = TypeVar("T")

NO_SPEECH = "No speech could be synthesised from this text (nothing speakable in it)"


def check_text(state: AppState, text: str) -> None:
    if not text.strip():
        raise HTTPException(400, "Text is empty")
    limit = state.config.max_text_length
    if limit > 0 and len(text) > limit:
        raise HTTPException(400, f"Text is too long, max length is {limit}")


def voice_limits(config: ServerConfig) -> VoiceLimits:
    return VoiceLimits(config.max_references, config.max_reference_seconds)


async def resolve_voice(state: AppState, req: GenerationFields) -> list[ReferenceAudio]:
    return await run_in_threadpool(request_voice, state.store, req, voice_limits(state.config))


def start_with_voice(
    state: AppState, req: GenerationFields, references: list[ReferenceAudio]
) -> AsyncIterator[AudioSegment]:
    """Queue a checked request on the inference thread (UnsupportedRequest: a 400 now)."""
    check_text(state, req.text)
    return state.service.synthesize(
        synthesis_request(req), references, req.use_memory_cache == "on", state.lifecycle.token()
    )


async def start_synthesis(state: AppState, req: GenerationFields) -> AsyncIterator[AudioSegment]:
    """Validate the request and its voice, then queue it on the inference thread."""
    return start_with_voice(state, req, await resolve_voice(state, req))


def audio_output(req: ServeTTSRequest, streaming: bool) -> AudioOutput:
    prosody = req.prosody or Prosody()
    return AudioOutput(
        req.format,
        req.sample_rate or default_rate(req.format),
        streaming,
        speed=prosody.speed,
        volume_db=prosody.volume,
        normalize_loudness=prosody.normalize_loudness,
        mp3_kbps=req.mp3_bitrate,
        opus_bps=opus_bits_per_second(req.opus_bitrate),
    )


def audio_headers(state: AppState, fmt: str, uses_voice: bool) -> dict[str, str]:
    headers = {"Content-Disposition": f"attachment; filename=audio.{fmt}"}
    if uses_voice:
        headers["X-Voice-Match"] = state.service.engine.voice_match
    return headers


async def audio_response(
    request: Request,
    segments: AsyncIterator[AudioSegment],
    output: AudioOutput,
    streaming: bool,
    headers: dict[str, str],
) -> Response:
    """The reply for a queued synthesis: one body, or a stream sent segment by segment."""
    if not streaming:

        async def whole() -> list[bytes]:
            parts = []
            try:
                async for segment in segments:
                    parts.append(await run_in_threadpool(output.feed, segment.samples))
            finally:
                await segments.aclose()
            return parts

        parts = await while_connected(request, whole())
        if not parts:
            raise HTTPException(400, NO_SPEECH)
        parts.append(await run_in_threadpool(output.finish))
        return Response(b"".join(parts), media_type=output.media_type, headers=headers)

    # Wait for the first sentence before committing to a 200, so a failure that happens
    # at the start still reaches the client as a proper error instead of a cut stream.
    first = await anext(segments, None)
    if first is None:
        raise HTTPException(400, NO_SPEECH)

    async def body() -> AsyncIterator[bytes]:
        try:
            if chunk := await run_in_threadpool(output.feed, first.samples):
                yield chunk
            try:
                async for segment in segments:
                    if chunk := await run_in_threadpool(output.feed, segment.samples):
                        yield chunk
            except Cancelled:  # the server is shutting down: end cleanly with what was made
                pass
            if tail := await run_in_threadpool(output.finish):
                yield tail
        finally:
            await segments.aclose()  # client gone or error: stop the engine

    return StreamingResponse(body(), media_type=output.media_type, headers=headers)


async def while_connected(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result; a client that hangs up first cancels it (freeing its slot)."""
    working = asyncio.ensure_future(work)
    hangup = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({working, hangup}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hangup.cancel()
        if not working.done():
            working.cancel()  # the engine sees the cancel within one step
    return working.result()  # raises CancelledError when the client left


async def _disconnected(request: Request) -> None:
    # The body has been read, so the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


def wants_stream(request: Request, req: ServeTTSRequest) -> bool:
    """``streaming`` when given; else the hosted API's habit: its SDKs (which send the
    ``model`` header and no ``streaming`` field) get audio as it is made."""
    if "streaming" in req.model_fields_set:
        return req.streaming
    return "model" in request.headers


@router.post(
    "/v1/tts",
    openapi_extra=body_schema(ServeTTSRequest),
    responses={200: {"content": {m: {} for m in MEDIA_TYPES.values()}}},
)
async def tts(request: Request) -> Response:
    state = get_state(request)
    req = await parse_body(request, ServeTTSRequest)
    check_model(request.headers.get("model"), state.service.engine.name, "model header")
    streaming = wants_stream(request, req)
    segments = await start_synthesis(state, req)
    uses_voice = req.reference_id is not None or bool(req.references)
    headers = audio_headers(state, req.format, uses_voice)
    return await audio_response(request, segments, audio_output(req, streaming), streaming, headers)
