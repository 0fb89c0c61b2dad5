"""One request as the batching engine sees it: its text chunks and their prompts, its slot and
progress, its sampling settings and private noise source, its cancel token and its sink."""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence as Seq
from typing import Protocol

import torch
from torch import Tensor

from fish_speech.engine.base import SegmentSink
from fish_speech.models.text2semantic.generation import DecodeState, SamplingParams, exponential
from fish_speech.utils.cancel import CancelToken

# What torch.Generator.manual_seed takes; checked when a request is submitted, since a bad
# seed found inside the engine loop would take every other request down with it.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


class ChunkPrompts(Protocol):
    """The prompts of a request's text chunks, each made when its chunk starts."""

    def __len__(self) -> int: ...

    def prompt(self, index: int, previous: Tensor | None) -> Tensor:
        """The (C+1, T) prompt of chunk ``index``; ``previous`` holds the codes (C, frames)
        chunk ``index - 1`` generated (None for the first chunk)."""


class FixedPrompts:
    """Prompts known in advance, whatever the chunks before generated."""

    def __init__(self, prompts: Seq[Tensor]) -> None:
        self._prompts = list(prompts)

    def __len__(self) -> int:
        return len(self._prompts)

    def prompt(self, index: int, previous: Tensor | None) -> Tensor:
        return self._prompts[index]


class Status(enum.Enum):
    WAITING = "waiting"  # queued, no slot yet
    RUNNING = "running"  # holds a slot
    FINISHED = "finished"  # done, failed or cancelled; slot given back


class Sequence:
    """A request's state from submission to its last segment.

    Each text chunk is one generation: the slot is prefilled again for every chunk with the
    prompt ``prompts`` makes when the chunk starts (it may carry the previous chunk's codes
    as context), and a given ``seed`` seeds each chunk's draws, so a chunk's codes equal what
    ``Text2Semantic.generate`` gives for that prompt alone, whatever else shares the batch,
    since the noise comes from this sequence's own generator.
    """

    def __init__(
        self,
        prompts: ChunkPrompts,
        params: SamplingParams,
        max_new_tokens: int,
        seed: int | None,
        cancel: CancelToken,
        sink: SegmentSink,
        device: torch.device,
        progress: list[float] | None = None,
        latency: str = "normal",
    ) -> None:
        if seed is not None and not SEED_MIN <= seed <= SEED_MAX:
            raise ValueError(f"seed must be an integer from {SEED_MIN} to {SEED_MAX}")
        self.prompts = prompts
        # The next chunk's prompt: the first is made now, so a bad request fails at submission.
        self.next_prompt: Tensor = prompts.prompt(0, None)
        # Fraction of the request's text spoken once each chunk is (even steps if not given).
        self.progress = progress or [(i + 1) / len(prompts) for i in range(len(prompts))]
        self.latency = latency  # sets the size of the first audio piece (output stage)
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
        return self.next_prompt

    def chunk_codes(self) -> Tensor:
        """The current chunk's codes so far (C, frames). Every generated frame is final but
        the one that ends the chunk (the stop frame, or the last one allowed), which the
        original drops."""
        assert self.state is not None
        frames = self.state.frames()[1:]
        return frames[:, :-1] if self.state.finished else frames

    def end_chunk(self) -> None:
        """The chunk has ended and its output was taken: make the next one's prompt, with
        this chunk's codes at hand (raises what the prompt maker raises)."""
        assert self.state is not None and self.state.finished
        codes = self.chunk_codes()
        self.state = None
        if self.has_more_chunks:
            self.next_prompt = self.prompts.prompt(self.chunk + 1, codes)

    @property
    def progress_before_chunk(self) -> float:
        """Fraction of the text spoken once the chunks before the current one are."""
        return self.progress[self.chunk - 1] if self.chunk > 0 else 0.0

    @property
    def has_more_chunks(self) -> bool:
        return self.chunk + 1 < len(self.prompts)

    def draw_noise(self, vocab_size: int, fast_shape: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """This step's Exponential(1) noise, slow then fast, in the batch-1 draw order."""
        return exponential(vocab_size, self.generator), exponential(fast_shape, self.generator)
