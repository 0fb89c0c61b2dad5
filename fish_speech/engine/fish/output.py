"""The output stage: codes the sequences generate become audio for their sinks.

Today a sequence hands over a whole chunk's codes when the chunk ends, and the codec
decodes every chunk that ended in the same engine step in one batch, on the engine thread
between decode steps (the batch waits meanwhile; ``decode_s`` reports what it costs). The
stage is the seam for decoding while generating: it may be handed frames as they come and
decide itself when to decode.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np
from torch import Tensor

from fish_speech.engine.base import AudioSegment
from fish_speech.engine.fish.sequence import Sequence


class OutputStage(Protocol):
    def chunk_done(self, seq: Sequence, codes: Tensor) -> None:
        """A sequence finished a chunk with these codes (C, frames)."""

    def flush(self) -> None:
        """End of an engine step: deliver what is ready."""


class AudioOutput:
    def __init__(self, codec: Any) -> None:
        self.codec = codec  # fish_speech.models.dac.Codec
        self._pending: list[tuple[Sequence, np.ndarray]] = []
        self.decode_s = 0.0  # total codec time so far
        self.decoded_audio_s = 0.0  # total audio it produced

    def chunk_done(self, seq: Sequence, codes: Tensor) -> None:
        """Queue a finished chunk's codes (C, frames) for decoding at the next flush."""
        if codes.shape[1] > 0:  # a chunk that stopped at once has nothing to say
            self._pending.append((seq, codes.cpu().numpy().astype(np.int32)))

    def flush(self) -> None:
        """Decode every queued chunk in one codec batch and send each its audio."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        live = [(seq, codes) for seq, codes in pending if not seq.cancel.cancelled]
        if not live:
            return
        started = time.perf_counter()
        audio = self.codec.decode_batch([codes for _, codes in live])
        self.decode_s += time.perf_counter() - started
        for (seq, _), samples in zip(live, audio, strict=True):
            self.decoded_audio_s += len(samples) / self.codec.sample_rate
            seq.sink.put(AudioSegment(samples.astype(np.float32)))
