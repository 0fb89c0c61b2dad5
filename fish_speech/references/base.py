"""What every voice library offers (a local folder, or Redis shared by many instances).

A saved voice is audio, its transcript and, once an engine has prepared it, the engine's
prompt (for the Fish engine, the codec's codes), stored once beside the voice. Adding,
renaming and deleting are atomic: a reader sees a voice whole under one id, or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fish_speech.audio.io import decode_audio
from fish_speech.engine.base import PromptStore
from fish_speech.utils.schema import is_valid_reference_id


class ReferenceStoreError(Exception):
    """Refused input; subclasses say which kind (the server maps each to its status)."""


class InvalidReferenceId(ReferenceStoreError):
    pass


class ReferenceNotFound(ReferenceStoreError):
    pass


class ReferenceExists(ReferenceStoreError):
    pass


@dataclass(frozen=True)
class StoredSample:
    audio: bytes  # the file as uploaded
    text: str
    prompt: PromptStore  # where an engine keeps what it made of this sample


class ReferenceStore(Protocol):
    """Storage errors surface as ``StorageUnavailable`` (the server answers 503)."""

    def add(self, reference_id: str, audio: bytes, text: str) -> None:
        """Store a new voice; raises ReferenceExists, or ValueError for unusable audio."""

    def list_ids(self) -> list[str]: ...

    def delete(self, reference_id: str) -> None: ...

    def rename(self, old_id: str, new_id: str) -> None: ...

    def samples(self, reference_id: str) -> list[StoredSample]:
        """The voice's samples in a stable order; raises ReferenceNotFound."""


def check_id(reference_id: object) -> str:
    """The id if it is valid (it may name a folder or a key), else InvalidReferenceId."""
    if not isinstance(reference_id, str) or not is_valid_reference_id(reference_id):
        raise InvalidReferenceId(
            f"Invalid reference ID {reference_id!r}: use 1-255 letters, digits, '-', '_' "
            "or inner spaces"
        )
    return reference_id


def check_new_voice(audio: bytes, text: str, max_seconds: float | None) -> str:
    """The extension of the audio's real format, after checking the voice is usable."""
    if not text.strip():
        raise ReferenceStoreError("Reference text cannot be empty")
    # raises AudioDecodeError (a ValueError) -> 400, also when over the length limit
    return decode_audio(audio, max_seconds).extension


def check_rename(old_id: str, new_id: str) -> None:
    check_id(old_id)
    check_id(new_id)
    if old_id == new_id:
        raise ReferenceStoreError("New reference ID must be different from old reference ID")
