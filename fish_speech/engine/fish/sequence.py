"""One request as the batching engine sees it: its text chunks and their prompts, its slot and
progress, its sampling settings and private noise source, its cancel token and its sink."""

from __future__ import annotations

import enum
import os

import torch
from torch import Tensor

from fish_speech.engine.base import SegmentSink
from fish_speech.models.text2semantic.generation import DecodeState, SamplingParams
from fish_speech.utils.cancel import CancelToken

# What torch.Generator.manual_seed takes; checked when a request is submitted, since a bad
# seed found inside the engine loop would take every other request down with it.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


class Status(enum.Enum):
    WAITING = "waiting"  # queued, no slot yet
    RUNNING = "running"  # holds a slot
    FINISHED = "finished"  # done, failed or cancelled; slot given back


class Sequence:
    """A request's state from submission to its last segment.

    Each text chunk is generated as one independent generation (prompt = voice references +
    the chunk), as the serial engine did: the slot is prefilled again for every chunk, and a
    given ``seed`` seeds each chunk's draws, so a chunk's codes equal what
    ``Text2Semantic.generate`` gives for it alone — whatever else shares the batch, since the
    noise comes from this sequence's own generator.
    """

    def __init__(
        self,
        prompts: list[Tensor],
        params: SamplingParams,
        max_new_tokens: int,
        seed: int | None,
        cancel: CancelToken,
        sink: SegmentSink,
        device: torch.device,
        progress: list[float] | None = None,
    ) -> None:
        if seed is not None and not SEED_MIN <= seed <= SEED_MAX:
            raise ValueError(f"seed must be an integer from {SEED_MIN} to {SEED_MAX}")
        self.prompts = prompts  # one (C+1, T) prompt per text chunk
        # Fraction of the request's text spoken once each chunk is (even steps if not given).
        self.progress = progress or [(i + 1) / len(prompts) for i in range(len(prompts))]
        self.params = params
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self.cancel = cancel
        self.sink = sink
        self.generator = torch.Generator(device=device)
        self.status = Status.WAITING
        self.slot: int | None = None
        self.chunk = -1  # index of the chunk being generated; -1 before the first
        self.state: DecodeState | None = None
        self.admitted_at = 0.0  # when it got its slot (time.monotonic)

    @property
    def needs_prefill(self) -> bool:
        """True when the next chunk must be started (also before the first one)."""
        return self.state is None

    @property
    def decoding(self) -> bool:
        return self.state is not None and not self.state.finished

    @property
    def filled(self) -> int:
        """Cache positions of this sequence's slot that hold its current chunk."""
        return 0 if self.state is None else self.state.position

    def begin_chunk(self, state: DecodeState) -> Tensor:
        """Move on to the next chunk, re-seed the noise source, and return its prompt."""
        self.chunk += 1
        self.state = state
        seed = self.seed if self.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        self.generator.manual_seed(seed)
        return self.prompts[self.chunk]

    def end_chunk(self) -> None:
        """The chunk has ended and its output was taken: the next one needs a prefill."""
        assert self.state is not None and self.state.finished
        self.state = None

    @property
    def has_more_chunks(self) -> bool:
        return self.chunk + 1 < len(self.prompts)

    def draw_noise(self, vocab_size: int, fast_shape: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """This step's Exponential(1) noise, slow then fast, in the batch-1 draw order."""
        device = self.generator.device
        slow = torch.empty(vocab_size, device=device).exponential_(1, generator=self.generator)
        fast = torch.empty(fast_shape, device=device).exponential_(1, generator=self.generator)
        return slow, fast
