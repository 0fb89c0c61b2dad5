"""The S1 ``<|interleave|>`` prompt: references (transcript + codes) then the target text.

Layout (each part encoded separately, so BPE never merges across parts)::

    <|interleave|>
    for each reference: "<|speaker:0|>" ref_text <semantic frames> <|im_end|>
    "<|speaker:0|>" text

Row 0 of the result holds token ids; rows 1..C hold the codes at semantic positions, else 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .tokenizer import IM_END_TOKEN, INTERLEAVE_TOKEN, FishTokenizer

SPEAKER_TAG = "<|speaker:0|>"
# The original refuses prompts that leave fewer than this many context rows for generation.
GENERATION_RESERVE = 2048


class PromptTooLongError(ValueError):
    pass


def _as_codes(codes: np.ndarray | torch.Tensor, num_codebooks: int, index: int) -> torch.Tensor:
    t = torch.as_tensor(codes)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(f"reference {index}: codes must be integers, got {t.dtype}")
    if t.ndim != 2 or t.shape[0] != num_codebooks:
        raise ValueError(
            f"reference {index}: codes must have shape ({num_codebooks}, frames), "
            f"got {tuple(t.shape)}"
        )
    return t.to(device="cpu", dtype=torch.int32)


def build_prompt(
    tokenizer: FishTokenizer,
    text: str,
    prompt_texts: Sequence[str],
    prompt_codes: Sequence[np.ndarray | torch.Tensor],
    num_codebooks: int,
    codebook_size: int,
    max_seq_len: int,
) -> torch.Tensor:
    """Encode the prompt as an int32 tensor of shape (num_codebooks + 1, T)."""
    if len(prompt_texts) != len(prompt_codes):
        raise ValueError(
            f"got {len(prompt_texts)} reference texts but {len(prompt_codes)} reference codes"
        )
    speaker = tokenizer.encode(SPEAKER_TAG)
    columns: list[torch.Tensor] = [
        _text_columns([tokenizer.token_id(INTERLEAVE_TOKEN)], num_codebooks)
    ]
    for i, (ref_text, ref_codes) in enumerate(zip(prompt_texts, prompt_codes, strict=True)):
        codes = _as_codes(ref_codes, num_codebooks, i)
        _check_range(codes, tokenizer.num_semantic, codebook_size, i)
        columns.append(_text_columns(speaker + _plain(tokenizer, ref_text), num_codebooks))
        columns.append(torch.cat([codes[:1] + tokenizer.semantic_begin_id, codes]))
        columns.append(_text_columns([tokenizer.token_id(IM_END_TOKEN)], num_codebooks))
    columns.append(_text_columns(speaker + _plain(tokenizer, text), num_codebooks))
    prompt = torch.cat(columns, dim=1)

    limit = max_seq_len - GENERATION_RESERVE
    if prompt.shape[1] > limit:
        raise PromptTooLongError(
            f"prompt too long: {prompt.shape[1]} tokens > {limit} "
            f"(max_seq_len {max_seq_len} minus {GENERATION_RESERVE} reserved for generation)"
        )
    return prompt


def _plain(tokenizer: FishTokenizer, text: str) -> list[int]:
    """User text as text: a "<|im_end|>" typed in a request must not end the prompt early
    (the original turned such strings into control tokens)."""
    return tokenizer.encode(text, allowed_special=False)


def _check_range(codes: torch.Tensor, num_semantic: int, codebook_size: int, index: int) -> None:
    if codes.numel() == 0:
        return
    if codes.min() < 0 or codes[0].max() >= num_semantic:
        raise ValueError(f"reference {index}: semantic codes must be in [0, {num_semantic})")
    if codes.shape[0] > 1 and codes[1:].max() >= codebook_size:
        raise ValueError(f"reference {index}: residual codes must be in [0, {codebook_size})")


def _text_columns(ids: list[int], num_codebooks: int) -> torch.Tensor:
    out = torch.zeros((num_codebooks + 1, len(ids)), dtype=torch.int32)
    out[0] = torch.tensor(ids, dtype=torch.int32)
    return out
