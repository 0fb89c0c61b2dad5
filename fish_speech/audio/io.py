"""Decoding uploads, and the PCM and WAV-header helpers the encoders share.

Input: anything libsndfile reads (wav, flac, ogg/vorbis/opus, mp3). Encoding replies is in
``fish_speech.audio.encode``.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf

UNREADABLE = "not an audio file we can read (wav, mp3, flac, ogg)"


class AudioDecodeError(ValueError):
    """The bytes are not audio we can read, or hold no samples."""


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32, mono
    sample_rate: int
    container: str  # libsndfile's format name, e.g. "WAV", "MP3"

    @property
    def extension(self) -> str:
        return {"WAV": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3"}.get(self.container, "wav")


# No real recording is above this; a header that claims more is hostile or broken.
MAX_SAMPLE_RATE = 384_000
# Frames per channel read at a time: with many channels a block stays about 4 MB.
_BLOCK_VALUES = 2**20
# libsndfile's frame count for a file whose header leaves the length open (SF_COUNT_MAX),
# as a streamed FLAC does (see fish_speech.audio.encode).
_UNKNOWN_LENGTH = 2**63 - 1


def _blocks(f: sf.SoundFile, blocksize: int) -> Iterator[np.ndarray]:
    """The file's frames, (n, channels) float32, a block at a time."""
    if f.frames != _UNKNOWN_LENGTH:
        yield from f.blocks(blocksize=blocksize, dtype="float32", always_2d=True)
        return
    # soundfile seeks after every read to track its position, which libsndfile cannot do
    # in such a file: read through libsndfile directly until it runs dry.
    block = np.empty((blocksize, f.channels), dtype=np.float32)
    pointer = sf._ffi.cast("float *", block.ctypes.data)
    while (count := sf._snd.sf_readf_float(f._file, pointer, blocksize)) > 0:
        yield block[:count]


def decode_audio(data: bytes, max_seconds: float | None = None) -> DecodedAudio:
    """Decode audio file bytes to mono float32 (channel mean).

    ``max_seconds`` bounds the decoded length: a few kilobytes of FLAC can hold hours of
    silence, so the audio is read block by block and refused once it passes the limit,
    without ever holding more than that in memory.
    """
    if not data:
        raise AudioDecodeError("audio is empty")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            container, sample_rate = f.format, f.samplerate
            if not 0 < sample_rate <= MAX_SAMPLE_RATE:
                raise AudioDecodeError(f"unsupported sample rate {sample_rate} Hz")
            max_frames = None if max_seconds is None else int(max_seconds * sample_rate)
            pieces, frames = [], 0
            for block in _blocks(f, max(1024, _BLOCK_VALUES // f.channels)):
                pieces.append(block.mean(axis=1).astype(np.float32))
                frames += len(block)
                if max_frames is not None and frames > max_frames:
                    raise AudioDecodeError(f"audio is longer than the limit of {max_seconds:g} s")
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        # libsndfile's own text names the Python file object; say what the user can act on.
        raise AudioDecodeError(UNREADABLE) from exc
    if frames == 0:
        raise AudioDecodeError("audio holds no samples")
    mono = np.concatenate(pieces)
    if not np.isfinite(mono).all():
        raise AudioDecodeError("audio holds non-finite samples")
    return DecodedAudio(mono, sample_rate, container)


def decode_each(
    items: list[bytes], label: str, max_seconds: float | None = None
) -> list[DecodedAudio]:
    """Decode several uploads; a failure names the item, e.g. ``audios[2]: ...``."""
    decoded = []
    for index, data in enumerate(items):
        try:
            decoded.append(decode_audio(data, max_seconds))
        except AudioDecodeError as exc:
            raise AudioDecodeError(f"{label}[{index}]: {exc}") from exc
    return decoded


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float [-1, 1] to int16 with rounding and clipping (no wrap-around clicks at 1.0)."""
    return np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")


def wav_header(sample_rate: int, num_samples: int | None) -> bytes:
    """A 44-byte PCM16 mono header; ``None`` marks an open-ended stream (sizes at maximum)."""
    data_size = 0xFFFFFFFF - 36 if num_samples is None else num_samples * 2
    return b"".join(
        [
            b"RIFF",
            struct.pack("<I", (36 + data_size) & 0xFFFFFFFF),
            b"WAVEfmt ",
            struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16),
            b"data",
            struct.pack("<I", data_size),
        ]
    )


def finalize_streamed_wav(data: bytearray) -> None:
    """Write the real sizes into a saved stream's header (sent open-ended, see wav_header)."""
    data_size = len(data) - 44
    data[4:8] = struct.pack("<I", 36 + data_size)
    data[40:44] = struct.pack("<I", data_size)
