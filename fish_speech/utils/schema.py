"""Request and response models of the Fish Speech HTTP API.

Client code imports these names (``from fish_speech.utils.schema import ServeTTSRequest``),
builds them locally and sends them as msgpack or JSON, so field names, types and defaults
follow the API document exactly. Unlike the original, the documented ranges are enforced.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    StringConstraints,
    ValidationError,
    field_serializer,
)

REFERENCE_ID_PATTERN = r"^[a-zA-Z0-9\-_ ]+$"
_REFERENCE_ID_RE = re.compile(r"[a-zA-Z0-9\-_ ]{1,255}")

AudioFormat = Literal["wav", "pcm", "mp3"]
TaskStatus = Literal["pending", "processing", "completed", "failed", "cancelled"]


def describe_validation_error(error: ValidationError) -> str:
    """One readable line per problem: ``field.path: message``."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "Invalid request: " + "; ".join(parts)


def is_valid_reference_id(value: str) -> bool:
    """True if ``value`` is a safe reference folder name (fullmatch: no trailing newline)."""
    return bool(_REFERENCE_ID_RE.fullmatch(value)) and value.strip() == value


def _check_reference_id(value: object) -> object:
    if isinstance(value, str) and not is_valid_reference_id(value):
        raise ValueError(
            "reference id must be 1-255 characters of letters, digits, '-', '_' or inner spaces"
        )
    return value


ReferenceId = Annotated[str, BeforeValidator(_check_reference_id)]


def _decode_base64_audio(value: object) -> object:
    """JSON cannot carry bytes, so a string ``audio`` is Base64 (strictly decoded)."""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("audio must be bytes or a valid Base64 string") from exc
    return value


AudioBytes = Annotated[bytes, BeforeValidator(_decode_base64_audio)]


class ServeReferenceAudio(BaseModel):
    audio: AudioBytes
    text: str

    def __repr__(self) -> str:  # keep logs readable: never print the audio bytes
        return f"ServeReferenceAudio(text={self.text!r}, audio=<{len(self.audio)} bytes>)"


class GenerationFields(BaseModel):
    """Fields shared by /v1/tts and the async task route."""

    text: str
    chunk_length: Annotated[int, Field(ge=100, le=300)] = 200
    references: list[ServeReferenceAudio] = []
    reference_id: ReferenceId | None = None
    seed: int | None = None
    use_memory_cache: Literal["on", "off"] = "off"
    normalize: bool = True
    top_p: Annotated[float, Field(ge=0.1, le=1.0)] = 0.8
    repetition_penalty: Annotated[float, Field(ge=0.9, le=2.0)] = 1.1
    temperature: Annotated[float, Field(ge=0.1, le=1.0)] = 0.8


class ServeTTSRequest(GenerationFields):
    format: AudioFormat = "wav"
    streaming: bool = False
    max_new_tokens: Annotated[int, Field(ge=0)] = 1024


class AsyncGenerateRequest(GenerationFields):
    step_id: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    format: AudioFormat = "mp3"
    max_new_tokens: Annotated[int, Field(ge=0)] = 2048


class ServeVQGANEncodeRequest(BaseModel):
    audios: list[AudioBytes]


class ServeVQGANEncodeResponse(BaseModel):
    tokens: list[list[list[int]]]


class ServeVQGANDecodeRequest(BaseModel):
    tokens: list[list[list[int]]]


class ServeVQGANDecodeResponse(BaseModel):
    audios: list[bytes]

    @field_serializer("audios", when_used="json")
    def _audios_as_base64(self, audios: list[bytes]) -> list[str]:
        # JSON cannot hold bytes: JSON replies carry each PCM buffer as standard Base64.
        return [base64.b64encode(audio).decode("ascii") for audio in audios]


class AddReferenceRequest(BaseModel):
    id: ReferenceId
    audio: AudioBytes
    text: Annotated[str, StringConstraints(min_length=1)]


class AddReferenceResponse(BaseModel):
    success: bool
    message: str
    reference_id: str


class ListReferencesResponse(BaseModel):
    success: bool
    reference_ids: list[str]
    message: str = "Success"


class DeleteReferenceRequest(BaseModel):
    reference_id: ReferenceId


class DeleteReferenceResponse(BaseModel):
    success: bool
    message: str
    reference_id: str


class UpdateReferenceRequest(BaseModel):
    old_reference_id: ReferenceId
    new_reference_id: ReferenceId


class UpdateReferenceResponse(BaseModel):
    success: bool
    message: str
    old_reference_id: str
    new_reference_id: str


class AsyncGenerateResponse(BaseModel):
    success: bool
    message: str
    step_id: str
    status: TaskStatus


class TaskStatusResponse(BaseModel):
    success: bool
    step_id: str
    status: TaskStatus
    created_at: float | None = None
    started_at: float | None = None
    completed_at: float | None = None
    download_url: str | None = None
    error: str | None = None


class StopTaskResponse(BaseModel):
    success: bool
    message: str
    step_id: str | None = None


class HealthResponse(BaseModel):
    status: str = "ok"
    engine: str | None = None
    capabilities: dict | None = None
    # running, waiting, slots_total, slots_free; batching engines add the decode step time.
    load: dict | None = None
