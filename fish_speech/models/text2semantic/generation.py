"""Sampling and the prefill + decode loop, reproducing the released S1 inference behaviour
(including its repetition-penalty window and the dropped final frame).

Randomness enters only through a *noise source* that returns Exponential(1) samples; the
sampler picks ``argmax(probs / noise)``, an exact categorical draw. Keeping the draw outside
the step function makes the step pure (so it can be compiled) and lets tests inject the
original's recorded noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ...engine.base import Cancelled
from .model import RESIDUAL_CODEBOOK_SIZE, DualARTransformer

# The original penalises repeats within a 16-frame window of the decode history.
REPETITION_WINDOW = 16

NoiseSource = Callable[[tuple[int, ...]], Tensor]
"""Returns a float32 tensor of the given shape filled with Exponential(1) samples."""


def exponential_noise(generator: torch.Generator) -> NoiseSource:
    def draw(shape: tuple[int, ...]) -> Tensor:
        return torch.empty(shape, device=generator.device).exponential_(1, generator=generator)

    return draw


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_p: float = 0.8
    repetition_penalty: float = 1.1

    def __post_init__(self) -> None:
        # The original's bounds, except that repetition_penalty 2.0 is allowed: the API
        # documents 0.9-2.0 and the maths is fine there (the original's assert made it a 500).
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 < self.temperature < 2:
            raise ValueError(f"temperature must be in (0, 2), got {self.temperature}")
        if not 0 < self.repetition_penalty <= 2:
            raise ValueError(f"repetition_penalty must be in (0, 2], got {self.repetition_penalty}")

    def as_tensors(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """0-dim tensors, so a compiled step does not specialise on the values."""
        return tuple(  # type: ignore[return-value]
            torch.tensor(v, dtype=torch.float32, device=device)
            for v in (self.temperature, self.top_p, self.repetition_penalty)
        )


def penalize(logits: Tensor, ids: Tensor, repetition_penalty: Tensor) -> Tensor:
    """Weaken the logits at ``ids``: divide positive ones by the penalty, multiply negative
    ones. A repeated id is penalised once."""
    score = logits.gather(0, ids)
    score = torch.where(score < 0, score * repetition_penalty, score / repetition_penalty)
    return logits.scatter(0, ids, score)


def probabilities(logits: Tensor, temperature: Tensor, top_p: Tensor) -> Tensor:
    """Top-p on the un-tempered logits, then temperature, then softmax.

    An entry is removed when the cumulative mass *including* it exceeds top_p (stricter
    than Hugging Face's rule); the best entry always stays.
    """
    sorted_logits, order = logits.sort(descending=True)
    remove = sorted_logits.softmax(-1).cumsum(-1) > top_p
    remove[0] = False
    logits = logits.masked_fill(remove.scatter(0, order, remove), float("-inf"))
    return (logits / temperature.clamp(min=1e-5)).softmax(-1)


def sample(
    logits: Tensor,
    noise: Tensor,
    temperature: Tensor,
    top_p: Tensor,
    repetition_penalty: Tensor,
    penalty_ids: Tensor | None = None,
) -> Tensor:
    """Draw one id (0-dim int64) from 1-D ``logits``, computed in float32 whatever the
    model dtype: penalty, top-p, temperature, then ``argmax(probs / noise)``."""
    logits = logits.float()
    if penalty_ids is not None:
        logits = penalize(logits, penalty_ids, repetition_penalty)
    return (probabilities(logits, temperature, top_p) / noise).argmax()


def decode_step(
    model: DualARTransformer,
    tokens: Tensor,
    input_pos: Tensor,
    kv_len: int | None,
    window: Tensor | None,
    params: tuple[Tensor, Tensor, Tensor],
    noise_slow: Tensor,
    noise_fast: Tensor,
) -> Tensor:
    """One frame: slow token from ``tokens`` (1, C+1, S) at ``input_pos``, then the residual
    codes from the fast transformer. Returns ``[token, code_0, ..., code_{C-1}]`` (int64).

    ``window`` (C+1, REPETITION_WINDOW) is the penalty history or None (no penalty). The slow
    token is penalised at the ids in the window's first *column* and codebook k at the
    window's row k+1 — the original's (odd but released) behaviour.
    """
    num_codebooks = model.config.num_codebooks
    width = min(RESIDUAL_CODEBOOK_SIZE, model.config.codebook_size)
    logits, hidden = model.forward_slow(tokens, input_pos, kv_len)
    token = sample(logits[0, -1], noise_slow, *params, None if window is None else window[:, 0])
    # Code 0 is not predicted by the fast model: it is the slow token's semantic index. Any
    # other token (text, special, or vocab padding above the semantic range) maps to 0; the
    # original clamped only ids below the range and crashed on those above it.
    # The fast cache needs no clearing: position k attends only to positions 0..k, which
    # this frame has just written. Position 0's logits are unused, so only its cache is filled.
    model.fast_hidden(hidden, 0)
    semantic = (token >= model.semantic_begin_id) & (token <= model.semantic_end_id)
    code = torch.where(semantic, token - model.semantic_begin_id, 0)
    frame = [token, code]
    for k in range(1, num_codebooks):
        fast_logits = model.forward_fast(model.fast_embeddings(code).view(1, 1, -1), k, width)
        code = sample(
            fast_logits[0, 0],
            noise_fast[k - 1],
            *params,
            None if window is None else window[k + 1],
        )
        frame.append(code)
    return torch.stack(frame)


StepFn = Callable[..., Tensor]


@torch.inference_mode()
def generate_frames(
    model: DualARTransformer,
    prompt: Tensor,
    *,
    im_end_id: int,
    max_new_tokens: int,
    params: SamplingParams,
    noise: NoiseSource,
    cancel: Callable[[], bool] | None = None,
    compiled_step: StepFn | None = None,
) -> Tensor:
    """Prefill ``prompt`` (C+1, T), then decode until ``<|im_end|>`` or the step limit.

    ``max_new_tokens`` counts generated frames including the stop frame (0 = until the
    context is full). Returns every generated frame, (C+1, G) int64; the caller drops the
    last one as the original does. ``compiled_step`` is a compiled :func:`decode_step`,
    used for decode steps with static shapes (``kv_len=None``); the prefill is always eager.
    """
    device = model.embeddings.weight.device
    num_rows, prompt_len = prompt.shape
    context = model.config.max_seq_len
    if prompt_len >= context:
        raise ValueError(f"prompt length {prompt_len} exceeds max_seq_len {context}")
    limit = context - prompt_len
    steps = min(max_new_tokens, limit) if max_new_tokens > 0 else limit
    width = min(RESIDUAL_CODEBOOK_SIZE, model.config.codebook_size)
    tensors = params.as_tensors(device)

    def noise_pair() -> tuple[Tensor, Tensor]:
        slow = noise((model.config.vocab_size,)).to(device)
        return slow, noise((num_rows - 2, width)).to(device)

    def check_cancel() -> None:
        if cancel is not None and cancel():
            raise Cancelled()

    check_cancel()
    tokens = prompt.to(device=device, dtype=torch.long)[None]
    positions = torch.arange(prompt_len, device=device)
    first = decode_step(model, tokens, positions, prompt_len, None, tensors, *noise_pair())

    # Frames from the decode loop only (the prefill frame never enters the penalty window);
    # at least a window wide, since early windows read not-yet-written zero columns.
    history = torch.zeros(
        (num_rows, max(steps, REPETITION_WINDOW)), dtype=torch.long, device=device
    )
    step = compiled_step or decode_step
    current, done = first, 0
    for i in range(steps - 1):
        check_cancel()
        start = max(i - REPETITION_WINDOW, 0)
        # Contiguous, so a compiled step sees the same strides and offset every time.
        window = history[:, start : start + REPETITION_WINDOW].contiguous()
        pos = prompt_len + i
        current = step(
            model,
            current.view(1, num_rows, 1),
            torch.tensor([pos], device=device),
            None if compiled_step else pos + 1,
            window,
            tensors,
            *noise_pair(),
        ).clone()
        history[:, i] = current
        done = i + 1
        if int(current[0]) == im_end_id:
            break
    return torch.cat([first[:, None], history[:, :done]], dim=1)
