"""S1-mini-sized random weights for the benchmarks (no checkpoint needed): the published
config, a model built in memory, or a checkpoint folder in the official layout.

Weights are N(0, initializer_range) with unit norms, so only timings mean anything.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from fish_speech.models.quantize import quantize
from fish_speech.models.text2semantic.config import DualARConfig
from fish_speech.models.text2semantic.model import DualARTransformer

REPO = Path(__file__).resolve().parent.parent
TINY_S1 = REPO / "tests" / "data" / "testvectors" / "tiny-s1"

# The published openaudio-s1-mini config.json (spec §1.2) and its special-token layout.
S1_MINI = {
    "model_type": "dual_ar",
    "vocab_size": 155776,
    "n_layer": 28,
    "n_head": 16,
    "dim": 1024,
    "intermediate_size": 3072,
    "n_local_heads": 8,
    "head_dim": 128,
    "rope_base": 1000000,
    "norm_eps": 1e-06,
    "max_seq_len": 8192,
    "dropout": 0.0,
    "tie_word_embeddings": False,
    "attention_qkv_bias": False,
    "attention_o_bias": False,
    "attention_qk_norm": True,
    "codebook_size": 4096,
    "num_codebooks": 10,
    "use_gradient_checkpointing": True,
    "initializer_range": 0.03125,
    "scale_codebook_embeddings": True,
    "n_fast_layer": 4,
    "fast_dim": 1024,
    "fast_n_head": 16,
    "fast_n_local_heads": 8,
    "fast_head_dim": 64,
    "fast_intermediate_size": 3072,
    "fast_attention_qkv_bias": False,
    "fast_attention_qk_norm": False,
    "fast_attention_o_bias": False,
}
SEMANTIC_BEGIN, SEMANTIC_END = 151658, 155753
TEXT_VOCAB = 151643


def _randomize(name: str, tensor: torch.Tensor, gen: torch.Generator, std: float) -> None:
    if name.endswith("norm.weight"):
        tensor.fill_(1.0)
    else:
        tensor.normal_(0.0, std, generator=gen)


def build_model(
    device: str,
    dtype: torch.dtype,
    quantization: str | None = None,
    max_seq_len: int | None = None,
) -> DualARTransformer:
    """The model in memory (the same weights every call), caches set up for one sequence of
    ``max_seq_len`` positions (default: the full context), quantised if asked."""
    config = DualARConfig.from_dict(
        S1_MINI | {"max_seq_len": max_seq_len or S1_MINI["max_seq_len"]}
    )
    with torch.device("meta"):
        model = DualARTransformer(config, SEMANTIC_BEGIN, SEMANTIC_END)
    model = model.to_empty(device=device).to(dtype).eval().requires_grad_(False)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            _randomize(name, p, gen, config.initializer_range)
    model.setup_caches()
    return quantize(model, quantization)


def write_checkpoint(folder: Path) -> Path:
    """An S1-mini-sized checkpoint folder in the official layout: config.json, model.pth
    (bfloat16, as the published file stores it) and the tiny checkpoint's tokenizer files.

    The tiny tokenizer (352 BPE ranks, its own special and semantic ids) fits inside the
    S1-mini vocabulary and codebook size, so the loader accepts the pair; ids it does not
    know are vocabulary padding to the model, which costs the same to run.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(S1_MINI, indent=2))
    for name in ("tokenizer.tiktoken", "special_tokens.json"):
        shutil.copy(TINY_S1 / name, folder / name)
    config = DualARConfig.from_dict(S1_MINI)
    with torch.device("meta"):
        shapes = DualARTransformer(config, SEMANTIC_BEGIN, SEMANTIC_END).state_dict()
    gen = torch.Generator().manual_seed(0)
    state = {}
    with torch.no_grad():
        for name, meta in shapes.items():  # one float32 tensor at a time: low peak memory
            tensor = torch.empty(meta.shape)
            _randomize(name, tensor, gen, config.initializer_range)
            state[name] = tensor.to(torch.bfloat16)
    torch.save(state, folder / "model.pth")
    return folder
