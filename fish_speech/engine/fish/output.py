"""The output stage: the frames sequences generate become audio for their sinks, while they
are generated.

The engine loop tells the stage after every step which sequences have a new frame. Each
request's codes are one continuous codec stream (across its text chunks), decoded piece by
piece: the pieces join exactly to a decode of all the codes (fish_speech.models.dac
streaming), so streaming changes when audio arrives, never what it is. A piece is cut when
enough new frames have come (the request's ``latency`` sets the first piece; each later one
doubles, up to a cap) or when a chunk ends. All pieces cut in one step decode in one codec
batch, on the engine thread between decode steps (``decode_s`` reports what it costs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fish_speech.engine.base import AudioSegment
from fish_speech.engine.fish.sequence import Sequence, Status

# Frames in a request's first audio piece, by latency mode (21.5 frames = 1 s of audio). Small
# first pieces give early audio; every later piece is twice the one before, up to the cap,
# because each piece also decodes ~10 frames of context again (the codec's convolutions).
FIRST_PIECE_FRAMES = {"low": 8, "balanced": 16, "normal": 32}
MAX_PIECE_FRAMES = 128


class OutputStage(Protocol):
    def frames_added(self, seq: Sequence) -> None:
        """``seq``'s current chunk has a new frame (``seq.state`` holds them all)."""

    def flush(self) -> None:
        """End of an engine step: deliver what is ready."""


@dataclass
class _Stream:
    decoder: Any  # the codec's DecodeStream for this request
    piece_frames: int  # size of the next piece
    chunk: int = -1  # the chunk whose frames ``sent`` counts
    sent: int = 0  # frames of that chunk already cut into pieces


@dataclass(frozen=True)
class _Piece:
    seq: Sequence
    stream: _Stream
    codes: np.ndarray  # (num_codebooks, frames)
    progress: float


class AudioOutput:
    def __init__(self, codec: Any, dtype: Any = None) -> None:
        self.codec = codec  # fish_speech.models.dac.Codec
        self.dtype = dtype  # the precision speech is decoded in (None: the codec's own)
        self._streams: dict[Sequence, _Stream] = {}
        self._ready: list[_Piece] = []
        self.decode_s = 0.0  # total codec time so far
        self.decoded_audio_s = 0.0  # total audio it produced

    def frames_added(self, seq: Sequence) -> None:
        """Cut a piece of ``seq``'s new codes when enough have come or its chunk ended."""
        stream = self._streams.get(seq)
        if stream is None:
            first = FIRST_PIECE_FRAMES[seq.latency]
            stream = self._streams[seq] = _Stream(self.codec.new_stream(), first)
        if stream.chunk != seq.chunk:
            stream.chunk, stream.sent = seq.chunk, 0
        finished = seq.state is not None and seq.state.finished
        codes = seq.chunk_codes()
        new = codes.shape[1] - stream.sent
        if new <= 0 or (new < stream.piece_frames and not finished):
            return
        piece = codes[:, stream.sent :].cpu().numpy()
        stream.sent = codes.shape[1]
        stream.piece_frames = min(2 * stream.piece_frames, MAX_PIECE_FRAMES)
        # Text progress is known per chunk: a piece inside a chunk reports the chunks before.
        done = seq.progress[seq.chunk] if finished else seq.progress_before_chunk
        self._ready.append(_Piece(seq, stream, piece, done))

    def flush(self) -> None:
        """Decode every piece cut in this step in one codec batch and send each its audio."""
        for seq in [s for s in self._streams if s.status is Status.FINISHED]:
            del self._streams[seq]  # retired: its codec state goes with it
        ready, self._ready = self._ready, []
        live = [piece for piece in ready if not piece.seq.cancel.cancelled]
        if not live:
            return
        started = time.perf_counter()
        audio = self.codec.decode_pieces(
            [piece.stream.decoder for piece in live], [piece.codes for piece in live], self.dtype
        )
        self.decode_s += time.perf_counter() - started
        for piece, samples in zip(live, audio, strict=True):
            self.decoded_audio_s += len(samples) / self.codec.sample_rate
            piece.seq.sink.put(
                AudioSegment(
                    samples.astype(np.float32, copy=False),
                    progress=piece.progress,
                    frames=piece.codes.shape[1],
                )
            )
