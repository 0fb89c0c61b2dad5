"""Turning a request's voice (saved id or inline uploads) into decoded reference audio."""

from __future__ import annotations

from collections.abc import Sequence

from fish_speech.audio.io import decode_audio, decode_each
from fish_speech.engine.base import ReferenceAudio
from fish_speech.references.store import ReferenceStore
from fish_speech.utils.schema import GenerationFields


def resolve_references(
    store: ReferenceStore,
    reference_id: str | None,
    inline: Sequence[tuple[bytes, str]],
) -> list[ReferenceAudio]:
    """A saved voice wins over inline references, as the API document says.

    Raises ReferenceNotFound (404) or AudioDecodeError (400) with a message naming the
    offending input.
    """
    if reference_id is not None:
        voices = []
        for sample in store.samples(reference_id):
            decoded = decode_audio(sample.audio_path.read_bytes())
            voices.append(ReferenceAudio(decoded.samples, decoded.sample_rate, sample.text))
        return voices
    decoded = decode_each([audio for audio, _ in inline], "references")
    return [
        ReferenceAudio(clip.samples, clip.sample_rate, text)
        for clip, (_, text) in zip(decoded, inline, strict=True)
    ]


def request_voice(store: ReferenceStore, fields: GenerationFields) -> list[ReferenceAudio]:
    """The voice of a /v1/tts or async-task request."""
    inline = [(ref.audio, ref.text) for ref in fields.references]
    return resolve_references(store, fields.reference_id, inline)
