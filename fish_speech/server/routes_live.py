"""WebSocket /v1/tts/live: the hosted Fish API's live protocol, as its SDKs speak it.

Every message is msgpack (JSON text frames are read too). The client sends ``start``
(``{"event": "start", "request": <ServeTTSRequest>}``), then any number of ``text``
(``{"event": "text", "text": "..."}``) and ``flush`` events, and ``stop``. The server
answers ``{"event": "audio", "audio": <bytes>}`` as audio is made and ends with
``{"event": "finish", "reason": "stop"}``; a failure is ``{"event": "finish", "reason":
"error", "message": "..."}`` (the SDKs raise on it).

Text may arrive token by token from a language model: it is spoken a sentence at a time,
once the sentence is known to be finished (see take_finished), on ``flush`` or at ``stop``.
The whole session is one audio stream in the requested format (one header, one Ogg stream).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import ormsgpack
from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from fish_speech.audio.encode import AudioOutput
from fish_speech.engine.base import ReferenceAudio
from fish_speech.engine.service import synthesis_request
from fish_speech.references.base import ReferenceStoreError
from fish_speech.server.model_names import check_model
from fish_speech.server.routes_tts import audio_output, resolve_voice, start_with_voice
from fish_speech.server.state import AppState
from fish_speech.storage import StorageUnavailable
from fish_speech.text.split import take_finished
from fish_speech.utils.schema import ServeTTSRequest, describe_validation_error

router = APIRouter(tags=["live"])
log = logging.getLogger(__name__)

# The SDKs' WebSocket client refuses messages over 64 KiB by default: send audio in pieces.
AUDIO_MESSAGE_BYTES = 32 * 1024
_STOP = object()


class LiveError(Exception):
    """A problem to report to the client as a finish event with reason "error"."""


def _decode(message: dict[str, Any]) -> dict[str, Any]:
    if message.get("bytes") is not None:
        data = ormsgpack.unpackb(message["bytes"])
    elif message.get("text") is not None:
        data = json.loads(message["text"])
    else:
        raise LiveError("empty message")
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        raise LiveError('every message must be a map with an "event" field')
    return data


async def _receive(ws: WebSocket) -> dict[str, Any]:
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    try:
        return _decode(message)
    except (ValueError, ormsgpack.MsgpackDecodeError) as exc:
        raise LiveError(f"not a msgpack or JSON event: {exc}") from exc


async def _send(ws: WebSocket, event: dict[str, Any]) -> None:
    await ws.send_bytes(ormsgpack.packb(event))


async def _send_audio(ws: WebSocket, data: bytes) -> None:
    for start in range(0, len(data), AUDIO_MESSAGE_BYTES):
        await _send(ws, {"event": "audio", "audio": data[start : start + AUDIO_MESSAGE_BYTES]})


class LiveSession:
    def __init__(self, ws: WebSocket, state: AppState, request: ServeTTSRequest) -> None:
        self.ws = ws
        self.state = state
        self.request = request
        self.output: AudioOutput = audio_output(request, streaming=True)
        self.references: list[ReferenceAudio] = []
        self.pieces: asyncio.Queue[object] = asyncio.Queue()
        self.buffer = ""

    def _add_text(self, text: str) -> None:
        self.buffer += text
        ready, self.buffer = take_finished(self.buffer, self.request.chunk_length)
        for piece in ready:
            self.pieces.put_nowait(piece)

    def _flush(self) -> None:
        if self.buffer.strip():
            self.pieces.put_nowait(self.buffer.strip())
        self.buffer = ""

    async def read_events(self) -> None:
        """Client events into the queue of pieces to speak; ends after stop."""
        while True:
            event = await _receive(self.ws)
            kind = event["event"]
            if kind == "text":
                text = event.get("text")
                if not isinstance(text, str):
                    raise LiveError('a "text" event needs a string "text" field')
                self._add_text(text)
            elif kind == "flush":
                self._flush()
            elif kind == "stop":
                self._flush()
                self.pieces.put_nowait(_STOP)
                return
            else:
                raise LiveError(f"unknown event {kind!r} (expected text, flush or stop)")

    async def speak(self) -> None:
        """Synthesise queued pieces in order and send their audio; ends at stop."""
        while (piece := await self.pieces.get()) is not _STOP:
            request = self.request.model_copy(update={"text": piece})
            segments = start_with_voice(self.state, request, self.references)
            try:
                async for segment in segments:
                    audio = await run_in_threadpool(self.output.feed, segment.samples)
                    await _send_audio(self.ws, audio)
            finally:
                await segments.aclose()
        await _send_audio(self.ws, await run_in_threadpool(self.output.finish))

    async def run(self) -> None:
        self.references = await resolve_voice(self.state, self.request)
        if self.request.text:
            self._add_text(self.request.text)
        reader = asyncio.create_task(self.read_events())
        speaker = asyncio.create_task(self.speak())
        try:
            # The reader only ends early by failing; the speaker ends after stop.
            done, _ = await asyncio.wait({reader, speaker}, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
            await speaker
        finally:
            for task in (reader, speaker):
                task.cancel()


def _start_request(event: dict[str, Any]) -> ServeTTSRequest:
    if event["event"] != "start":
        raise LiveError(f'the first event must be "start", not {event["event"]!r}')
    body = event.get("request")
    if not isinstance(body, dict):
        raise LiveError('the start event needs a "request" map (the /v1/tts fields)')
    try:
        return ServeTTSRequest.model_validate({**body, "text": body.get("text") or ""})
    except ValidationError as exc:
        raise LiveError(describe_validation_error(exc)) from exc


def _describe(exc: Exception) -> str:
    if isinstance(exc, HTTPException):
        return str(exc.detail)
    return str(exc) or type(exc).__name__


@router.websocket("/v1/tts/live")
async def live(ws: WebSocket) -> None:
    state: AppState = ws.app.state.fish
    await ws.accept()
    try:
        # Read start first: the SDKs send it at once and then expect an answer, not a close.
        request = _start_request(await _receive(ws))
        check_model(ws.headers.get("model"), state.service.engine.name, "model header")
        state.service.engine.check_request(synthesis_request(request))
        await LiveSession(ws, state, request).run()
    except WebSocketDisconnect:
        return  # the client left: the speaker task's cancellation stopped the engine
    except (LiveError, HTTPException, ReferenceStoreError, StorageUnavailable, ValueError) as exc:
        # ValueError: undecodable reference audio, or a request the engine cannot honour
        await _finish_with_error(ws, _describe(exc))
        return
    except Exception as exc:
        log.exception("Live session failed")
        await _finish_with_error(ws, f"internal error: {type(exc).__name__}: {exc}")
        return
    await _send(ws, {"event": "finish", "reason": "stop"})
    await ws.close()


async def _finish_with_error(ws: WebSocket, message: str) -> None:
    try:
        await _send(ws, {"event": "finish", "reason": "error", "message": message})
        await ws.close(code=1000)
    except (WebSocketDisconnect, RuntimeError):
        pass  # already gone
