"""File helpers that client code imports (``from fish_speech.utils.file import ...``)."""

from __future__ import annotations

from pathlib import Path

AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg")
"""Audio files the server decodes (libsndfile); also what a reference folder may hold."""


def audio_to_bytes(file_path: str | Path | None) -> bytes | None:
    """Read an audio file's bytes for a request; None (or a missing path) gives None."""
    if not file_path or not Path(file_path).exists():
        return None
    return Path(file_path).read_bytes()


def read_ref_text(ref_text: str) -> str:
    """A transcript given either as a path to a UTF-8 text file or as the text itself."""
    path = Path(ref_text)
    if len(ref_text) < 4096 and path.is_file():
        return path.read_text(encoding="utf-8")
    return ref_text
