"""Shared data and helpers for the codec tests (vectors from the original code, in the repo)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import torch

from fish_speech.models.dac import Codec, load_codec
from fish_speech.models.dac.model import CodecModel
from fish_speech.models.dac.modules import WNConv1d, WNConvTranspose1d

VECTORS = Path(__file__).resolve().parent / "data" / "testvectors"
TINY_CHECKPOINT = VECTORS / "tiny-codec" / "codec.pth"
TINY_CONFIG = VECTORS / "tiny-codec" / "config.json"
CODEC_VECTORS = VECTORS / "codec"
AUDIO_TOLERANCE = 1e-4  # max |delta| the vectors' README suggests for float32


@cache
def tiny_codec() -> Codec:
    # Codec calls keep no state, so one instance can serve every test.
    return load_codec(TINY_CHECKPOINT, TINY_CONFIG)


def vector(name: str) -> np.ndarray:
    return np.load(CODEC_VECTORS / f"{name}.npy")


def official_state_dict(model: CodecModel) -> dict[str, torch.Tensor]:
    """Save a model the way the original does: weight-normalised convs as (g, V) pairs.

    Causal convs use the parametrizations spelling, the VQ projections the legacy one, as in
    the official codec.pth.
    """
    state = {}
    modules = dict(model.named_modules())
    for key, tensor in model.state_dict().items():
        prefix, _, leaf = key.rpartition(".")
        if leaf == "weight" and isinstance(modules[prefix], WNConv1d | WNConvTranspose1d):
            g = torch.linalg.vector_norm(tensor, dim=(1, 2), keepdim=True)
            if prefix.endswith(("in_proj", "out_proj")):
                state[f"{prefix}.weight_g"], state[f"{prefix}.weight_v"] = g, tensor.clone()
            else:
                state[f"{prefix}.parametrizations.weight.original0"] = g
                state[f"{prefix}.parametrizations.weight.original1"] = tensor.clone()
        elif leaf == "freqs_cis":
            state[key] = tensor.to(torch.bfloat16)
        else:
            state[key] = tensor.clone()
    return state
