"""Request and response models of the Fish Speech HTTP API.

Client code imports these names (``from fish_speech.utils.schema import ServeTTSRequest``),
builds them locally and sends them as msgpack or JSON, so field names, types and defaults
follow the API document exactly. Unlike the original, the documented ranges are enforced.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from fish_speech.audio.formats import MP3_BITRATES, OPUS_BITRATES, check_sample_rate

REFERENCE_ID_PATTERN = r"^[a-zA-Z0-9\-_ ]+$"
_REFERENCE_ID_RE = re.compile(r"[a-zA-Z0-9\-_ ]{1,255}")

AudioFormat = Literal["wav", "pcm", "mp3", "opus", "flac"]
# normal: one segment per sentence; balanced and low trade prosody for earlier audio
# (what each engine does with them is in its /v1/health capabilities).
LatencyMode = Literal["normal", "balanced", "low"]
Mp3Bitrate = Literal[MP3_BITRATES]
OpusBitrate = Literal[OPUS_BITRATES]
TaskStatus = Literal["pending", "processing", "completed", "failed", "cancelled"]


def describe_validation_error(error: ValidationError) -> str:
    """One readable line per problem: ``field.path: message``."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "body"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "Invalid request: " + "; ".join(parts)


def is_valid_reference_id(value: str) -> bool:
    """True if ``value`` is a safe reference folder name (fullmatch: no trailing newline)."""
    return bool(_REFERENCE_ID_RE.fullmatch(value)) and value.strip() == value


def _safe_id(label: str) -> Callable[[object], object]:
    """A validator of ids that may name a folder or a URL segment."""

    def check(value: object) -> object:
        if isinstance(value, str) and not is_valid_reference_id(value):
            raise ValueError(
                f"{label} must be 1-255 characters of letters, digits, '-', '_' or inner spaces"
            )
        return value

    return check


ReferenceId = Annotated[str, BeforeValidator(_safe_id("reference id"))]
# Task ids follow the reference id rule (UUIDs and numeric timestamps fit it).
StepId = Annotated[str, BeforeValidator(_safe_id("step_id"))]


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


class NullMeansDefault(BaseModel):
    """An explicit null for a field that has a default means that default.

    The legacy Fish Audio SDK sends every field, ``None`` included (``"prosody": null``).
    Required fields stay required: a null there is still an error.
    """

    @model_validator(mode="before")
    @classmethod
    def _nulls_to_defaults(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {
            key: value
            for key, value in data.items()
            if value is not None
            or key not in fields
            or fields[key].is_required()
            or fields[key].default is None
        }


class Prosody(NullMeansDefault):
    """Post-processing of the hosted Fish API, applied to any engine's output."""

    speed: Annotated[float, Field(ge=0.5, le=2.0)] = 1.0  # pitch-preserving time stretch
    volume: Annotated[float, Field(ge=-20.0, le=20.0)] = 0.0  # gain in dB
    normalize_loudness: bool = False  # each segment to the same loudness (BS.1770)


class GenerationFields(NullMeansDefault):
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
    latency: LatencyMode = "normal"


class ServeTTSRequest(GenerationFields):
    format: AudioFormat = "wav"
    streaming: bool = False
    max_new_tokens: Annotated[int, Field(ge=0)] = 1024
    # Fields of the hosted Fish Audio API (its SDKs send them); None: the format's default.
    sample_rate: int | None = None
    mp3_bitrate: Mp3Bitrate = 128  # kbps
    opus_bitrate: OpusBitrate = 32  # kbps or bit/s; -1000 lets the encoder choose
    prosody: Prosody | None = None

    @field_validator("sample_rate")
    @classmethod
    def _sample_rate_fits_format(cls, rate: int | None, info: ValidationInfo) -> int | None:
        if rate is not None and "format" in info.data:  # format is validated first
            check_sample_rate(info.data["format"], rate)
        return rate


class AsyncGenerateRequest(GenerationFields):
    step_id: StepId
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
    # Extension: fraction of the text done, 0-1 (0 while pending, 1 once completed).
    progress: float = 0.0


class TaskSummary(TaskStatusResponse):
    """A task as GET /v1/tasks lists it (an extension of the API)."""

    format: str
    text: str  # the start of the task's text


class TaskListResponse(BaseModel):
    success: bool
    tasks: list[TaskSummary]


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


class ReadyResponse(BaseModel):
    ready: bool
    status: str  # "ready"; 503 replies say why not in "detail"
    engine: str | None = None
