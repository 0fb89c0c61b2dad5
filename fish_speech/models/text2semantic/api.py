"""The text-to-semantic entry point the server uses: load a checkpoint folder once, then
turn text (plus optional voice references) into codec codes."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..precision import resolve_dtype
from ..quantize import quantize as quantize_model
from .checkpoint import load_model
from .config import DualARConfig
from .generation import SamplingParams, decode_step, exponential_noise, generate_frames
from .model import DualARTransformer
from .prompt import build_prompt
from .tokenizer import FishTokenizer


def default_dtype(device: str | torch.device) -> torch.dtype:
    """bfloat16 on CUDA (the original's precision) and on CPUs with native bf16, where it is
    measured faster; float32 on other CPUs."""
    return resolve_dtype(device, "auto")


class Text2Semantic:
    """A loaded model with its tokenizer. ``generate`` runs one generation at a time in KV
    cache slot 0, so concurrent calls are serialised; the batching engine
    (``fish_speech.engine.fish``) runs many at once on the same model instead.

    With ``compile`` the per-frame decode step is compiled (Inductor; CUDA graphs on CUDA)
    on the first generation, which takes minutes for S1-mini. The compiled step attends to
    the whole static KV cache under a causal mask so its shapes never change; the eager
    step attends only to the filled prefix, which is faster on CPU. The prefill is eager.
    """

    def __init__(
        self,
        model: DualARTransformer,
        tokenizer: FishTokenizer,
        compile: bool = False,
        quantization: str | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config: DualARConfig = model.config
        self.num_codebooks = self.config.num_codebooks
        self.device = model.embeddings.weight.device
        self.dtype = model.embeddings.weight.dtype
        self.quantization = quantization
        self._lock = threading.Lock()
        self._compiled_step = None
        if compile:
            on_cuda = self.device.type == "cuda"
            self._compiled_step = torch.compile(
                decode_step, fullgraph=True, mode="reduce-overhead" if on_cuda else None
            )

    @property
    def max_seq_len(self) -> int:
        return self.model.max_seq_len

    def build_prompt(
        self,
        text: str,
        prompt_texts: Sequence[str] = (),
        prompt_codes: Sequence[np.ndarray | torch.Tensor] = (),
    ) -> torch.Tensor:
        c = self.config
        return build_prompt(
            self.tokenizer,
            text,
            prompt_texts,
            prompt_codes,
            c.num_codebooks,
            c.codebook_size,
            c.max_seq_len,
        )

    def generate(
        self,
        text: str,
        prompt_texts: Sequence[str] = (),
        prompt_codes: Sequence[np.ndarray | torch.Tensor] = (),
        *,
        max_new_tokens: int = 1024,
        top_p: float = 0.8,
        temperature: float = 0.8,
        repetition_penalty: float = 1.1,
        seed: int | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Codes (num_codebooks, frames) int32 for ``text`` in the voice of the references.

        ``max_new_tokens`` bounds the generated steps including the final one, which is
        dropped (so at most max_new_tokens - 1 frames; 0 = until the context is full).
        ``cancel`` is polled before every step; returning True raises ``Cancelled``.
        The seed only affects this call (a private RNG; global RNG state is untouched).
        """
        params = SamplingParams(temperature, top_p, repetition_penalty)
        prompt = self.build_prompt(text, prompt_texts, prompt_codes)
        rng = torch.Generator(device=self.device)
        rng.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)
        with self._lock:
            frames = generate_frames(
                self.model,
                prompt,
                im_end_id=self.tokenizer.im_end_id,
                max_new_tokens=max_new_tokens,
                params=params,
                noise=exponential_noise(rng),
                cancel=cancel,
                compiled_step=self._compiled_step,
            )
        return frames[1:, :-1].cpu().numpy().astype(np.int32)


def load_text2semantic(
    checkpoint_dir: str | Path,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    compile: bool = False,
    cache_slots: int = 1,
    max_seq_len: int | None = None,
    quantize: str | None = None,
) -> Text2Semantic:
    """Load an official checkpoint folder (config.json, model.pth, tokenizer.tiktoken,
    special_tokens.json). Raises ``CheckpointError`` for missing files, tensors or shapes.

    The KV cache holds ``cache_slots`` sequences (a batching engine uses them; ``generate``
    uses slot 0) of ``max_seq_len`` positions, by default the checkpoint's context. A
    shorter context saves memory; prompts keep the checkpoint's length rule, and generation
    stops when the shorter context is full. ``dtype`` None picks :func:`default_dtype`.
    ``quantize="int8"`` stores the linear layers' weights as int8 after loading (see
    ``fish_speech.models.quantize``).
    """
    model, tokenizer = load_model(
        checkpoint_dir, device, dtype or default_dtype(device), cache_slots, max_seq_len
    )
    model = quantize_model(model, quantize)
    return Text2Semantic(model, tokenizer, compile=compile, quantization=quantize)
