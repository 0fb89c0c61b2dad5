"""The output stage: the frames sequences generate become audio for their sinks.

The engine loop tells the stage after every step which sequences have a new frame (each
sequence's ``state`` holds every frame of its current chunk so far); the stage decides when
to decode. Today's policy: a whole chunk once it has ended, the last generated frame
dropped as the original does, and every chunk that ended in the same step in one codec
batch, on the engine thread between decode steps (the batch waits meanwhile; ``decode_s``
reports what it costs). Decoding every N frames while generating is a change of policy
here, not of the loop.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from fish_speech.engine.base import AudioSegment
from fish_speech.engine.fish.sequence import Sequence


class OutputStage(Protocol):
    def frames_added(self, seq: Sequence) -> None:
        """``seq``'s current chunk has a new frame (``seq.state`` holds them all)."""

    def flush(self) -> None:
        """End of an engine step: deliver what is ready."""


class AudioOutput:
    def __init__(self, codec: Any, dtype: Any = None) -> None:
        self.codec = codec  # fish_speech.models.dac.Codec
        self.dtype = dtype  # the precision speech is decoded in (None: the codec's own)
        # (sequence, its chunk's codes, the request's progress once the chunk is spoken)
        self._pending: list[tuple[Sequence, np.ndarray, float]] = []
        self.decode_s = 0.0  # total codec time so far
        self.decoded_audio_s = 0.0  # total audio it produced

    def frames_added(self, seq: Sequence) -> None:
        """Queue the chunk's codes for the next flush once the chunk has ended."""
        assert seq.state is not None
        if not seq.state.finished:
            return
        codes = seq.state.frames()[1:, :-1]
        if codes.shape[1] > 0:  # a chunk that stopped at once has nothing to say
            codes = codes.cpu().numpy().astype(np.int32)
            self._pending.append((seq, codes, seq.progress[seq.chunk]))

    def flush(self) -> None:
        """Decode every queued chunk in one codec batch and send each its audio."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        live = [item for item in pending if not item[0].cancel.cancelled]
        if not live:
            return
        started = time.perf_counter()
        audio = self.codec.decode_batch([codes for _, codes, _ in live], self.dtype)
        self.decode_s += time.perf_counter() - started
        for (seq, codes, progress), samples in zip(live, audio, strict=True):
            self.decoded_audio_s += len(samples) / self.codec.sample_rate
            segment = AudioSegment(
                samples.astype(np.float32), progress=progress, frames=codes.shape[1]
            )
            seq.sink.put(segment)
