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
    def prefill(self, seq: Sequence) -> None:
        """Start the sequence's next chunk: its prompt through the slow model into its slot,
        and the first frame."""
        assert seq.slot is not None
        started = time.perf_counter()
        prompt_len = seq.prompts[seq.chunk + 1].shape[1]
        state = DecodeState(
            prompt_len,
            seq.max_new_tokens,
            self.model.max_seq_len,
            self.num_rows,
            self.t2s.tokenizer.im_end_id,
            self.device,
        )
        tokens = seq.begin_chunk(state).to(device=self.device, dtype=torch.long)[None]
        slow, fast = seq.draw_noise(self.model.config.vocab_size, self.fast_shape)
        frame = decode_rows(
            self.model,
            tokens,
            torch.arange(prompt_len, device=self.device),
            prompt_len,
            None,
            stack_params([seq.params], self.device),
            slow[None],
            fast[None],
            rows=seq.slot,
        )
        state.start(frame[0])
        self.prefills += 1
        self.prefill_seconds += time.perf_counter() - started

    @torch.inference_mode()
    def decode(self, seqs: list[Sequence]) -> None:
        """One decode step for every sequence in ``seqs`` (ordered by slot), as one batch."""
        states = [seq.state for seq in seqs]
        slots = [seq.slot for seq in seqs]
        batch = len(seqs)
        dense = slots == list(range(slots[0], slots[0] + batch))
        rows = slots[0] if dense else torch.tensor(slots, device=self.device)
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
