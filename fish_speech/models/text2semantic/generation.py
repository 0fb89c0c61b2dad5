"""Sampling and the prefill + decode loop, reproducing the released S1 inference behaviour
(including its repetition-penalty window and the dropped final frame).

Randomness enters only through a *noise source* that returns Exponential(1) samples; the
sampler picks ``argmax(probs / noise)``, an exact categorical draw. Keeping the draw outside
the step function makes the step pure (so it can be compiled) and lets tests inject the
original's recorded noise.

Everything here works on a batch of rows: :func:`decode_rows` runs one step for B sequences
with their own positions, sampling settings, penalty windows and noise, and
:class:`DecodeState` holds one sequence's progress. :func:`decode_step` and
:func:`generate_frames` are the batch-1 forms (the parity tests and the CLI use them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ...utils.cancel import Cancelled
from .model import RESIDUAL_CODEBOOK_SIZE, CacheRows, DualARTransformer

# The original penalises repeats within a 16-frame window of the decode history.
REPETITION_WINDOW = 16
# Largest entries searched for the top-p cut before falling back to a full sort.
NUCLEUS_CANDIDATES = 256

NoiseSource = Callable[[tuple[int, ...]], Tensor]
"""Returns a float32 tensor of the given shape filled with Exponential(1) samples."""


def exponential(shape: tuple[int, ...] | int, generator: torch.Generator | None = None) -> Tensor:
    """Exponential(1) samples by inversion, ``-log(U)`` with U uniform in [0, 1).

    On the CPU this is 4x faster than ``Tensor.exponential_`` (0.8 against 3.5 ms for one
    S1-mini vocabulary row; at 8 rows it was 7% of a decode step). U = 0 gives +inf, an entry
    that cannot win the race, never a 0 that would divide a zero probability into NaN.
    """
    device = generator.device if generator is not None else None
    return torch.rand(shape, generator=generator, device=device).log_().neg_()


def exponential_noise(generator: torch.Generator) -> NoiseSource:
    return lambda shape: exponential(shape, generator)


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


def stack_params(params: list[SamplingParams], device: torch.device) -> tuple[Tensor, ...]:
    """Per-row settings as three (B,) tensors: temperature, top_p, repetition_penalty."""
    values = [(p.temperature, p.top_p, p.repetition_penalty) for p in params]
    return tuple(torch.tensor(values, dtype=torch.float32, device=device).T)


def penalize(logits: Tensor, ids: Tensor, repetition_penalty: Tensor) -> Tensor:
    """Weaken the logits (..., V) at ``ids`` (..., W): divide positive ones by the penalty
    (0-dim, or one per row), multiply negative ones. A repeated id is penalised once."""
    penalty = repetition_penalty[..., None]
    score = logits.gather(-1, ids)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return logits.scatter(-1, ids, score)


def sorted_descending(logits: Tensor) -> Tensor:
    """Each row's values, largest first. Only the values are needed: on the CPU NumPy's
    vectorised sort gives them about 25x faster than torch.sort, which also computes indices
    (10 ms for one S1-mini row, most of the sampling time)."""
    if logits.device.type == "cpu" and not torch.compiler.is_compiling():
        return torch.from_numpy(np.sort(logits.numpy(), axis=-1)[..., ::-1].copy())
    return logits.sort(dim=-1, descending=True).values


def _kept(mass: Tensor, top_p: Tensor) -> Tensor:
    """How many leading entries of rows sorted largest first top-p keeps (at least one),
    from their inclusive cumulative mass."""
    return (mass <= top_p[..., None]).sum(-1, keepdim=True).clamp(min=1)


def nucleus_floor(logits: Tensor, top_p: Tensor) -> Tensor:
    """The smallest logit top-p keeps in each row (..., 1); see :func:`probabilities`.

    The cumulative mass grows along the sorted row, so when the cut falls within the
    largest NUCLEUS_CANDIDATES entries a top-k finds it and the full sort (4.8 ms per S1-mini
    row, 38 of a 8-row step's 420 ms) is skipped; the mass is then ``exp(v - logsumexp)``,
    equal to the sorted softmax up to float rounding. Flat rows, whose nucleus is wider,
    take the full sort. CPU only: choosing the path reads a value back, which on a GPU
    would stall the queued kernels ten times a step to save a sort that is cheap there.
    """
    on_cpu = logits.device.type == "cpu" and not torch.compiler.is_compiling()
    if on_cpu and logits.shape[-1] > NUCLEUS_CANDIDATES:
        top = logits.topk(NUCLEUS_CANDIDATES, dim=-1).values
        mass = (top - logits.logsumexp(-1, keepdim=True)).exp().cumsum(-1)
        kept = _kept(mass, top_p)
        if bool((kept < NUCLEUS_CANDIDATES).all()):
            return top.gather(-1, kept - 1)
    ordered = sorted_descending(logits)
    mass = ordered.softmax(-1).cumsum(-1)
    return ordered.gather(-1, _kept(mass, top_p) - 1)


def probabilities(logits: Tensor, temperature: Tensor, top_p: Tensor) -> Tensor:
    """Top-p on the un-tempered logits (..., V), then temperature, then softmax; the settings
    are 0-dim or one per row.

    An entry is removed when the cumulative mass *including* it exceeds top_p (stricter
    than Hugging Face's rule); the best entry always stays. The mass grows along the sorted
    row, so the kept entries are those at or above the last kept value, found without
    scattering a sorted mask back. Only a tie straddling the cut can differ from a
    sort-and-scatter (all tied entries stay; the original's choice among them depends on
    its sort's order).
    """
    logits = logits.masked_fill(logits < nucleus_floor(logits, top_p), float("-inf"))
    return (logits / temperature.clamp(min=1e-5)[..., None]).softmax(-1)


def sample(
    logits: Tensor,
    noise: Tensor,
    temperature: Tensor,
    top_p: Tensor,
    repetition_penalty: Tensor,
    penalty_ids: Tensor | None = None,
) -> Tensor:
    """Draw one id per row (int64, shape ``logits.shape[:-1]``), computed in float32
    whatever the model dtype: penalty, top-p, temperature, then ``argmax(probs / noise)``."""
    logits = logits.float()
    if penalty_ids is not None:
        logits = penalize(logits, penalty_ids, repetition_penalty)
    return (probabilities(logits, temperature, top_p) / noise).argmax(-1)


def decode_rows(
    model: DualARTransformer,
    tokens: Tensor,
    input_pos: Tensor,
    kv_len: int | None,
    windows: Tensor | None,
    params: tuple[Tensor, Tensor, Tensor],
    noise_slow: Tensor,
    noise_fast: Tensor,
    rows: CacheRows = 0,
    last: Tensor | None = None,
) -> Tensor:
    """One frame for each of B rows: the slow token from ``tokens`` (B, C+1, S) at
    ``input_pos`` in cache slots ``rows`` (read at position ``last[b]`` of row b for a
    prefill of right-padded prompts; see :meth:`DualARTransformer.forward_slow`), then the
    residual codes from the fast transformer, all rows at once per codebook.
    Returns (B, C+1) int64 ``[token, code_0, ..., code_{C-1}]`` rows.

    ``params`` are (B,) tensors, ``noise_slow`` (B, V), ``noise_fast`` (B, C-1, width).
    ``windows`` (B, C+1, REPETITION_WINDOW) is the penalty history or None (no penalty). The
    slow token is penalised at the ids in the window's first *column* and codebook k at the
    window's row k+1 — the original's (odd but released) behaviour.
    """
    num_codebooks = model.config.num_codebooks
    width = min(RESIDUAL_CODEBOOK_SIZE, model.config.codebook_size)
    logits, hidden = model.forward_slow(tokens, input_pos, kv_len, rows=rows, last=last)
    token = sample(logits[:, -1], noise_slow, *params, None if windows is None else windows[..., 0])
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
        fast_logits = model.forward_fast(model.fast_embeddings(code)[:, None], k, width)
        code = sample(
            fast_logits[:, 0],
            noise_fast[:, k - 1],
            *params,
            None if windows is None else windows[:, k + 1],
        )
        frame.append(code)
    return torch.stack(frame, dim=1)


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
    """:func:`decode_rows` for one sequence in cache slot 0: ``tokens`` (1, C+1, S),
    ``window`` (C+1, REPETITION_WINDOW) or None, 0-dim ``params``, ``noise_slow`` (V,),
    ``noise_fast`` (C-1, width). Returns ``[token, code_0, ..., code_{C-1}]`` (int64)."""
    return decode_rows(
        model,
        tokens,
        input_pos,
        kv_len,
        None if window is None else window[None],
        tuple(p[None] for p in params),  # type: ignore[arg-type]
        noise_slow[None],
        noise_fast[None],
    )[0]


class DecodeState:
    """One sequence's progress through a prefill and its decode steps, with the original's
    rules: ``max_new_tokens`` counts generated frames including the stop frame (0 = until
    the context is full), the prefill frame is never checked for ``<|im_end|>`` nor enters
    the penalty window, and early windows read not-yet-written zero columns.
    """

    def __init__(
        self,
        prompt_len: int,
        max_new_tokens: int,
        context: int,
        num_rows: int,
        im_end_id: int,
        device: torch.device,
    ) -> None:
        if prompt_len >= context:
            raise ValueError(f"prompt length {prompt_len} exceeds max_seq_len {context}")
        limit = context - prompt_len
        self.steps = min(max_new_tokens, limit) if max_new_tokens > 0 else limit
        self.prompt_len = prompt_len
        self.im_end_id = im_end_id
        # Frames from the decode loop only, at least a window wide.
        self.history = torch.zeros(
            (num_rows, max(self.steps, REPETITION_WINDOW)), dtype=torch.long, device=device
        )
        self.first: Tensor | None = None
        self.current: Tensor | None = None
        self.done = 0  # decode-loop frames so far
        self.finished = False

    @property
    def position(self) -> int:
        """Absolute position of ``current``, the input of the next decode step."""
        return self.prompt_len + self.done

    def window(self) -> Tensor:
        start = max(self.done - REPETITION_WINDOW, 0)
        # Contiguous, so a compiled step sees the same strides and offset every time.
        return self.history[:, start : start + REPETITION_WINDOW].contiguous()

    def start(self, first: Tensor) -> None:
        """Record the prefill's frame (C+1,)."""
        self.first = self.current = first
        self.finished = self.steps <= 1

    def accept(self, frame: Tensor) -> None:
        """Record one decode step's frame (C+1,) and decide whether the sequence stops."""
        self.history[:, self.done] = frame
        self.done += 1
        self.current = frame
        self.finished = self.done >= self.steps - 1 or int(frame[0]) == self.im_end_id

    def frames(self) -> Tensor:
        """Every generated frame, (C+1, G) int64; callers drop the last, as the original."""
        assert self.first is not None, "start() has not been called"
        return torch.cat([self.first[:, None], self.history[:, : self.done]], dim=1)


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
    """Prefill ``prompt`` (C+1, T) in cache slot 0, then decode until ``<|im_end|>`` or the
    step limit (see :class:`DecodeState`). Returns every generated frame, (C+1, G) int64.
    ``compiled_step`` is a compiled :func:`decode_step`, used for decode steps with static
    shapes (``kv_len=None``); the prefill is always eager.
    """
    device = model.embeddings.weight.device
    num_rows, prompt_len = prompt.shape
    state = DecodeState(prompt_len, max_new_tokens, model.max_seq_len, num_rows, im_end_id, device)
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
    state.start(decode_step(model, tokens, positions, prompt_len, None, tensors, *noise_pair()))
    step = compiled_step or decode_step
    while not state.finished:
        check_cancel()
        pos = state.position
        frame = step(
            model,
            state.current.view(1, num_rows, 1),
            torch.tensor([pos], device=device),
            None if compiled_step else pos + 1,
            state.window(),
            tensors,
            *noise_pair(),
        )
        state.accept(frame.clone())
    return state.frames()
