"""Encoding replies: wav, pcm, mp3, Ogg Opus, FLAC and AAC, whole or incrementally.

mp3 comes from LAME (``lameenc``: exact bitrates). Ogg Opus and FLAC come from the
libsndfile that ``soundfile`` bundles: it writes both incrementally to any file-like
object (FLAC frames and Ogg pages as they fill), so no container is written by hand. The
one thing it cannot do in a stream is go back: at close it seeks to the start to write the
FLAC STREAMINFO totals, which a stream has already sent. A streamed FLAC therefore keeps
the "length unknown" header it started with, which the format allows and decoders read.

AAC (ADTS frames, for the OpenAI route) comes from FFmpeg's encoder through PyAV, an
optional dependency (the ``aac`` extra): nothing lighter encodes AAC.
"""

from __future__ import annotations

import importlib.util
import io

import lameenc
import numpy as np
import soundfile as sf

from fish_speech.audio.effects import AudioPipeline
from fish_speech.audio.formats import ENGINE_RATE, MEDIA_TYPES, default_rate
from fish_speech.audio.io import to_int16, wav_header

# libsndfile's Opus target is set through its compression level: bitrate per channel =
# (1 - level) * 250 kbit/s + 6 kbit/s (ogg_opus.c, SFC_SET_COMPRESSION_LEVEL).
_OPUS_MIN_BPS, _OPUS_SPAN_BPS = 6000, 250000
# Ogg pages are flushed when they hold this much audio (libsndfile's default is 1 s, which
# would hold the end of every sentence back until the next one).
_STREAM_PAGE_MS = 100.0
_SFC_SET_OGG_PAGE_LATENCY = 0x1303  # sndfile.h; takes a double in milliseconds
_AAC_KBPS = 128  # mono speech; OpenAI names no AAC bitrate


class _Sink(io.RawIOBase):
    """A write-only file for libsndfile and PyAV: hands out what was appended since the last
    take.

    In a stream, writes into bytes already handed out (libsndfile's header rewrite at close)
    are dropped; otherwise the whole file is kept, so the rewrite lands.
    """

    def __init__(self, keep_all: bool) -> None:
        self._keep_all = keep_all
        self._buffer = bytearray()
        self._base = 0  # file offset of _buffer[0]
        self._pos = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True  # soundfile asks; nothing reads in write mode

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        return 0

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        end = self._base + len(self._buffer)
        self._pos = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: end}[whence] + offset
        return self._pos

    def write(self, data) -> int:  # type: ignore[no-untyped-def]
        data = bytes(data)
        size = len(data)
        start = self._pos - self._base
        if start < 0:  # into bytes already handed out: keep only what lies after them
            data, start = data[-start:], 0
        self._buffer[start : start + len(data)] = data
        self._pos += size
        return size

    def take(self) -> bytes:
        """Bytes appended since the last take (nothing until the end when keeping all)."""
        if self._keep_all:
            return b""
        out = bytes(self._buffer)
        self._base += len(out)
        self._buffer.clear()
        return out

    def getvalue(self) -> bytes:
        return bytes(self._buffer)


class _SndfileEncoder:
    """Ogg Opus or FLAC through libsndfile, fed float32 blocks."""

    def __init__(self, fmt: str, sample_rate: int, streaming: bool, opus_bps: int | None) -> None:
        self._keep_all = not streaming
        self._sink = _Sink(keep_all=self._keep_all)
        if fmt == "opus":
            level = None
            if opus_bps is not None:
                level = 1.0 - (opus_bps - _OPUS_MIN_BPS + 0.5) / _OPUS_SPAN_BPS
            self._file = sf.SoundFile(
                self._sink, "w", sample_rate, 1, "OPUS", format="OGG", compression_level=level
            )
            if streaming:
                _set_page_latency(self._file, _STREAM_PAGE_MS)
        else:
            self._file = sf.SoundFile(self._sink, "w", sample_rate, 1, "PCM_16", format="FLAC")

    def encode(self, samples: np.ndarray) -> bytes:
        self._file.write(np.asarray(samples, dtype=np.float32))
        return self._sink.take()

    def finish(self) -> bytes:
        self._file.close()
        return self._sink.getvalue() if self._keep_all else self._sink.take()


class _AacEncoder:
    """ADTS AAC through PyAV; every ADTS frame carries its own header, so it streams."""

    def __init__(self, sample_rate: int, streaming: bool, kbps: int) -> None:
        import av  # optional: see aac_available()

        self._av = av
        self._keep_all = not streaming
        self._sink = _Sink(keep_all=self._keep_all)
        self._container = av.open(self._sink, mode="w", format="adts")
        self._stream = self._container.add_stream("aac", rate=sample_rate, layout="mono")
        self._stream.bit_rate = kbps * 1000
        self._rate = sample_rate
        self._pts = 0

    def _mux(self, frame) -> None:  # type: ignore[no-untyped-def]
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def encode(self, samples: np.ndarray) -> bytes:
        if len(samples):
            frame = self._av.AudioFrame.from_ndarray(
                np.asarray(samples, dtype=np.float32)[None, :], format="flt", layout="mono"
            )
            frame.sample_rate, frame.pts = self._rate, self._pts
            self._pts += len(samples)
            self._mux(frame)
        return self._sink.take()

    def finish(self) -> bytes:
        self._mux(None)
        self._container.close()
        return self._sink.getvalue() if self._keep_all else self._sink.take()


def aac_available() -> bool:
    return importlib.util.find_spec("av") is not None


def _set_page_latency(file: sf.SoundFile, milliseconds: float) -> None:
    """Shorter Ogg pages for streams; soundfile has no wrapper for this libsndfile command."""
    value = sf._ffi.new("double*", milliseconds)
    sf._snd.sf_command(file._file, _SFC_SET_OGG_PAGE_LATENCY, value, sf._ffi.sizeof("double"))


class StreamEncoder:
    """Turns float segments at the output rate into bytes for one format, chunk by chunk.

    With ``streaming=False`` the bytes may only come from ``finish()`` (a whole wav needs
    its length first); join everything either way.
    """

    def __init__(
        self,
        fmt: str,
        sample_rate: int,
        streaming: bool,
        mp3_kbps: int = 128,
        opus_bps: int | None = None,
    ) -> None:
        self.fmt = fmt
        self.sample_rate = sample_rate
        self._streaming = streaming
        self._mp3 = None
        self._codec: _SndfileEncoder | _AacEncoder | None = None
        self._pcm: list[bytes] = []
        if fmt == "mp3":
            self._mp3 = lameenc.Encoder()
            self._mp3.set_bit_rate(mp3_kbps)
            self._mp3.set_in_sample_rate(sample_rate)
            self._mp3.set_channels(1)
            self._mp3.set_quality(2)
        elif fmt in ("opus", "flac"):
            self._codec = _SndfileEncoder(fmt, sample_rate, streaming, opus_bps)
        elif fmt == "aac":
            self._codec = _AacEncoder(sample_rate, streaming, _AAC_KBPS)
        elif fmt not in ("wav", "pcm"):
            raise ValueError(f"unknown audio format {fmt!r}")
        self._header = wav_header(sample_rate, None) if fmt == "wav" and streaming else b""

    def encode(self, samples: np.ndarray) -> bytes:
        if self._codec is not None:
            return self._codec.encode(samples)
        pcm = to_int16(samples)
        if self._mp3 is not None:
            return bytes(self._mp3.encode(pcm.tobytes()))
        if self.fmt == "wav" and not self._streaming:
            self._pcm.append(pcm.tobytes())
            return b""
        header, self._header = self._header, b""
        return header + pcm.tobytes()

    def finish(self) -> bytes:
        if self._codec is not None:
            return self._codec.finish()
        if self._mp3 is not None:
            return bytes(self._mp3.flush())
        if self.fmt == "wav" and not self._streaming:
            data = b"".join(self._pcm)
            return wav_header(self.sample_rate, len(data) // 2) + data
        return b""


class AudioOutput:
    """Post-processing and encoding of one reply: engine segments in, file bytes out."""

    def __init__(
        self,
        fmt: str,
        sample_rate: int,
        streaming: bool,
        *,
        speed: float = 1.0,
        volume_db: float = 0.0,
        normalize_loudness: bool = False,
        mp3_kbps: int = 128,
        opus_bps: int | None = None,
        input_rate: int = ENGINE_RATE,
    ) -> None:
        self.media_type = MEDIA_TYPES[fmt]
        self._pipeline = AudioPipeline(
            input_rate, sample_rate, speed, volume_db, normalize_loudness
        )
        self._encoder = StreamEncoder(fmt, sample_rate, streaming, mp3_kbps, opus_bps)

    def feed(self, samples: np.ndarray) -> bytes:
        return self._encoder.encode(self._pipeline.process(samples))

    def finish(self) -> bytes:
        return self._encoder.encode(self._pipeline.finish()) + self._encoder.finish()


def encode_audio(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """A complete file in ``fmt`` at the format's default rate (resampled if needed)."""
    output = AudioOutput(fmt, default_rate(fmt), streaming=False, input_rate=sample_rate)
    return output.feed(samples) + output.finish()
