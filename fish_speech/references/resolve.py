"""Turning a request's voice (saved id or inline uploads) into decoded reference audio."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fish_speech.audio.io import AudioDecodeError, decode_audio, decode_each
from fish_speech.engine.base import ReferenceAudio
from fish_speech.references.base import ReferenceStore
from fish_speech.utils.schema import GenerationFields


@dataclass(frozen=True)
class VoiceLimits:
    """Bounds on one request's voice (None = unbounded)."""

    max_inline: int | None = None  # inline references per request
    max_seconds: float | None = None  # length of each reference clip


class TooManyReferences(ValueError):
    """More inline references than the server allows (a 400)."""


def resolve_references(
    store: ReferenceStore,
    reference_id: str | None,
    inline: Sequence[tuple[bytes, str]],
    limits: VoiceLimits = VoiceLimits(),
) -> list[ReferenceAudio]:
    """A saved voice wins over inline references, as the API document says.

    Raises ReferenceNotFound (404), TooManyReferences or AudioDecodeError (400) with a
    message naming the offending input or limit.
    """
    if reference_id is not None:
        voices = []
        for sample in store.samples(reference_id):
            try:
                decoded = decode_audio(sample.audio, limits.max_seconds)
            except AudioDecodeError as exc:
                raise AudioDecodeError(f"reference '{reference_id}': {exc}") from exc
            voices.append(
                ReferenceAudio(
                    decoded.samples,
                    decoded.sample_rate,
                    sample.text,
                    stored=sample.prompt,
                )
            )
        return voices
    if limits.max_inline is not None and len(inline) > limits.max_inline:
        raise TooManyReferences(
            f"references: {len(inline)} given, the limit is {limits.max_inline} per request"
        )
    decoded = decode_each([audio for audio, _ in inline], "references", limits.max_seconds)
    return [
        ReferenceAudio(clip.samples, clip.sample_rate, text)
        for clip, (_, text) in zip(decoded, inline, strict=True)
    ]


def request_voice(
    store: ReferenceStore, fields: GenerationFields, limits: VoiceLimits = VoiceLimits()
) -> list[ReferenceAudio]:
    """The voice of a /v1/tts or async-task request."""
    inline = [(ref.audio, ref.text) for ref in fields.references]
    return resolve_references(store, fields.reference_id, inline, limits)
