"""Turning a request's voice (saved id or inline uploads) into decoded reference audio."""

from __future__ import annotations

from collections.abc import Sequence

from fish_speech.audio.io import AudioDecodeError, decode_audio
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
    voices = []
    for index, (audio, text) in enumerate(inline):
        try:
            decoded = decode_audio(audio)
        except AudioDecodeError as exc:
            raise AudioDecodeError(f"references[{index}].audio: {exc}") from exc
        voices.append(ReferenceAudio(decoded.samples, decoded.sample_rate, text))
    return voices


def request_voice(store: ReferenceStore, fields: GenerationFields) -> list[ReferenceAudio]:
    """The voice of a /v1/tts or async-task request."""
    inline = [(ref.audio, ref.text) for ref in fields.references]
    return resolve_references(store, fields.reference_id, inline)
