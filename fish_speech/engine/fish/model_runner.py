"""How one engine step runs on the model: a batch-1 prefill into a sequence's slot, and one
batched decode step for every decoding sequence."""

from __future__ import annotations

import math
import time

import torch

from fish_speech.engine.fish.sequence import Sequence
from fish_speech.models.text2semantic import Text2Semantic
from fish_speech.models.text2semantic.generation import DecodeState, decode_rows, stack_params
from fish_speech.models.text2semantic.model import RESIDUAL_CODEBOOK_SIZE

# With torch.compile the attended length is rounded up to a multiple of this, so a handful
# of shapes (CUDA graphs) serve every length; the mask hides the extra positions.
COMPILED_KV_BUCKET = 256
STEP_TIME_SMOOTHING = 0.2  # weight of the newest step in the reported step time
# Padded prompt positions one batched prefill may hold (rows x longest prompt).
PREFILL_TOKENS = 4096


class ModelRunner:
    def __init__(self, t2s: Text2Semantic, compile: bool = False) -> None:
        self.t2s = t2s
        self.model = t2s.model
        self.device = t2s.device
        c = self.model.config
        self.num_rows = c.num_codebooks + 1
        self.fast_shape = (c.num_codebooks - 1, min(RESIDUAL_CODEBOOK_SIZE, c.codebook_size))
        self.compiled = compile
        self._decode = decode_rows
        if compile:
            # Dynamic shapes: one graph for every batch size and attended length.
            on_cuda = self.device.type == "cuda"
            self._decode = torch.compile(
                decode_rows,
                fullgraph=True,
                dynamic=True,
                mode="reduce-overhead" if on_cuda else None,
            )
        self.step_s: float | None = None  # smoothed wall time of one batched decode step
        self.last_batch = 0
        # Running totals, for metrics and benchmarks (differences over an interval).
        self.decode_steps = 0
        self.decode_frames = 0
        self.decode_seconds = 0.0
        self.prefills = 0
        self.prefill_seconds = 0.0

    @torch.inference_mode()
    def prefill(self, seqs: list[Sequence]) -> None:
        """Start the next chunk of every sequence in ``seqs``: their prompts through the slow
        model into their slots, and each one's first frame. Prompts are right-padded and run
        together in groups of at most PREFILL_TOKENS padded positions: many rows make the
        matrix products several times more efficient than one prompt at a time."""
        group: list[Sequence] = []
        longest = 0
        for seq in seqs:
            length = seq.next_prompt.shape[1]
            if group and max(longest, length) * (len(group) + 1) > PREFILL_TOKENS:
                self._prefill_group(group)
                group, longest = [], 0
            group.append(seq)
            longest = max(longest, length)
        if group:
            self._prefill_group(group)

    def _prefill_group(self, seqs: list[Sequence]) -> None:
        started = time.perf_counter()
        prompts = []
        for seq in seqs:
            state = DecodeState(
                seq.next_prompt.shape[1],
                seq.max_new_tokens,
                self.model.max_seq_len,
                self.num_rows,
                self.t2s.tokenizer.im_end_id,
                self.device,
            )
            prompts.append(seq.begin_chunk(state))
        lengths = [prompt.shape[1] for prompt in prompts]
        longest = max(lengths)
        # Padding sits after each prompt, so causal attention keeps it out of the real
        # positions; the cache rows it fills are overwritten before any step reads them.
        tokens = torch.zeros((len(seqs), self.num_rows, longest), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            tokens[row, :, : prompt.shape[1]] = prompt
        noise = [seq.draw_noise(self.model.config.vocab_size, self.fast_shape) for seq in seqs]
        frames = decode_rows(
            self.model,
            tokens.to(self.device),
            torch.arange(longest, device=self.device),
            longest,
            None,
            stack_params([seq.params for seq in seqs], self.device),
            torch.stack([slow for slow, _ in noise]),
            torch.stack([fast for _, fast in noise]),
            rows=self._rows([seq.slot for seq in seqs]),
            # One prompt alone needs no padding: exactly the batch-1 prefill.
            last=None if len(seqs) == 1 else torch.tensor(lengths, device=self.device) - 1,
        )
        for seq, frame in zip(seqs, frames, strict=True):
            seq.state.start(frame)
        self.prefills += len(seqs)
        self.prefill_seconds += time.perf_counter() - started

    def _rows(self, slots: list[int]) -> int | torch.Tensor:
        """A dense range of slots as its first slot (a view), else an index tensor."""
        if slots == list(range(slots[0], slots[0] + len(slots))):
            return slots[0]
        return torch.tensor(slots, device=self.device)

    @torch.inference_mode()
    def decode(self, seqs: list[Sequence]) -> None:
        """One decode step for every sequence in ``seqs`` (ordered by slot), as one batch."""
        states = [seq.state for seq in seqs]
        batch = len(seqs)
        rows = self._rows([seq.slot for seq in seqs])
        positions = [state.position for state in states]
        kv_len = max(positions) + 1
        if self.compiled:
            # Always the per-row (masked) form: it serves the rounded-up length, and one
            # input layout keeps the compiled graph from recompiling.
            input_pos = torch.tensor(positions, device=self.device)[:, None]
            bucketed = math.ceil(kv_len / COMPILED_KV_BUCKET) * COMPILED_KV_BUCKET
            kv_len = min(self.model.cache_len, bucketed)
        elif len(set(positions)) == 1:
            # Every row at the same position: the shared-position form, no mask (for one
            # row this is exactly the batch-1 computation).
            input_pos = torch.tensor(positions[:1], device=self.device)
        else:
            input_pos = torch.tensor(positions, device=self.device)[:, None]
        started = time.perf_counter()
        noise = [seq.draw_noise(self.model.config.vocab_size, self.fast_shape) for seq in seqs]
        frames = self._decode(
            self.model,
            torch.stack([state.current for state in states])[:, :, None],
            input_pos,
            kv_len,
            torch.stack([state.window() for state in states]),
            stack_params([seq.params for seq in seqs], self.device),
            torch.stack([slow for slow, _ in noise]),
            torch.stack([fast for _, fast in noise]),
            rows=rows,
        ).clone()  # compiled (CUDA graph) outputs are overwritten by the next replay
        for state, frame in zip(states, frames, strict=True):
            state.accept(frame)  # reads the stop token: the step has finished on the device
        elapsed = time.perf_counter() - started
        self.step_s = (
            elapsed
            if self.step_s is None
            else STEP_TIME_SMOOTHING * elapsed + (1 - STEP_TIME_SMOOTHING) * self.step_s
        )
        self.last_batch = batch
        self.decode_steps += 1
        self.decode_frames += batch
        self.decode_seconds += elapsed
