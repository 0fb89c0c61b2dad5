"""The local voice library: ``<root>/<id>/<name>.<audio ext>`` + ``<name>.lab`` on disk.

Every id is validated before it touches a path, so nothing leaves the root. Changes are
made under an exclusive ``flock`` so several server processes (``--workers N``) can share
one folder, and an added voice appears atomically (written to a hidden temporary folder,
then renamed into place).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fish_speech.references.base import (
    ReferenceExists,
    ReferenceNotFound,
    StoredSample,
    check_id,
    check_new_voice,
    check_rename,
)
from fish_speech.utils.file import AUDIO_EXTENSIONS
from fish_speech.utils.schema import is_valid_reference_id

_LOCK_NAME = ".lock"


class StoredPrompt:
    """What an engine made of one saved sample, kept beside it (``.<name>.prompt``) with
    the key it was made for: the engine asks by key, so edited audio or an edited ``.lab``
    (another key) is prepared again, and renaming or deleting the voice takes it along."""

    def __init__(self, audio_path: Path) -> None:
        self.path = audio_path.with_name(f".{audio_path.stem}.prompt")

    def load(self, key: str) -> bytes | None:
        try:
            stored_key, newline, data = self.path.read_bytes().partition(b"\n")
        except OSError:
            return None
        return data if newline and stored_key == key.encode() else None

    def save(self, key: str, data: bytes) -> None:
        # Written aside and renamed: another worker reading it sees all of it or none.
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.part")
        partial.write_bytes(key.encode() + b"\n" + data)
        os.replace(partial, self.path)


class LocalReferenceStore:
    def __init__(self, root: str | Path, max_seconds: float | None = None) -> None:
        self.root = Path(root).resolve()
        self.max_seconds = max_seconds  # longest audio a new voice may have

    def _folder(self, reference_id: str) -> Path:
        return self.root / check_id(reference_id)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / _LOCK_NAME, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def add(self, reference_id: str, audio: bytes, text: str) -> None:
        """The audio keeps its real format's extension."""
        folder = self._folder(reference_id)
        extension = check_new_voice(audio, text, self.max_seconds)
        with self._locked():
            if folder.exists():
                raise ReferenceExists(f"Reference ID '{reference_id}' already exists")
            staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
            try:
                (staging / f"sample.{extension}").write_bytes(audio)
                (staging / "sample.lab").write_text(text, encoding="utf-8")
                os.rename(staging, folder)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise

    def list_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.is_dir() and is_valid_reference_id(entry.name) and self._audio_files(entry)
        )

    def delete(self, reference_id: str) -> None:
        folder = self._folder(reference_id)
        with self._locked():
            if not folder.is_dir():
                raise ReferenceNotFound(f"Reference ID '{reference_id}' not found")
            # Rename first so readers never see a half-deleted voice.
            doomed = Path(tempfile.mkdtemp(prefix=".del-", dir=self.root))
            os.rename(folder, doomed / "voice")
        shutil.rmtree(doomed, ignore_errors=True)

    def rename(self, old_id: str, new_id: str) -> None:
        check_rename(old_id, new_id)
        old, new = self._folder(old_id), self._folder(new_id)
        with self._locked():
            if not old.is_dir():
                raise ReferenceNotFound(f"Reference ID '{old_id}' not found")
            if new.exists():
                raise ReferenceExists(f"Reference ID '{new_id}' already exists")
            os.rename(old, new)

    def samples(self, reference_id: str) -> list[StoredSample]:
        """Audio files with their ``.lab`` transcripts, in a stable (sorted) order."""
        folder = self._folder(reference_id)
        if not folder.is_dir():
            raise ReferenceNotFound(f"Reference ID '{reference_id}' not found")
        found = [
            StoredSample(
                audio.read_bytes(),
                audio.with_suffix(".lab").read_text(encoding="utf-8").strip(),
                StoredPrompt(audio),
            )
            for audio in self._audio_files(folder)
        ]
        if not found:
            raise ReferenceNotFound(
                f"Reference ID '{reference_id}' has no audio file with a matching .lab transcript"
            )
        return found

    @staticmethod
    def _audio_files(folder: Path) -> list[Path]:
        return sorted(
            path
            for path in folder.rglob("*")
            if path.suffix.lower() in AUDIO_EXTENSIONS
            and path.is_file()
            and path.with_suffix(".lab").is_file()
        )
