"""Loading `codec.pth` files into a CodecModel (spec section 5).

Accepted layouts, as with the original loader: a bare `{key: tensor}` dict, a
`{"state_dict": ...}` wrapper, and Lightning-style `generator.` prefixes. Unlike the original
(which loads non-strictly and silently keeps random weights), every key must be accounted for
and every shape must match. Weight-normalised convs may be stored in either spelling found in
the official file and are folded into plain weights once here, so inference does no extra work.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from fish_speech.models.weights import read_weights_file

from .codec import Codec
from .config import CodecLoadError, load_config
from .model import CodecModel
from .modules import WindowLimitedTransformer, WNConv1d, WNConvTranspose1d

# (g, V) key suffixes: the parametrizations API (encoder/decoder convs in the official file)
# and the legacy weight_norm API (VQ projections).
_WEIGHT_NORM_SPELLINGS = (
    (".parametrizations.weight.original0", ".parametrizations.weight.original1"),
    (".weight_g", ".weight_v"),
)
# Stored by the original but never read on the inference path: the window mask is rebuilt per
# call, and the semantic predictor is a training-only hook.
_IGNORED_SUFFIXES = (".causal_mask",)
_IGNORED_PREFIXES = ("quantizer.semantic_predictor_module.",)
_MAX_LISTED = 6


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read a checkpoint file into a flat {key: tensor} dict with the original's unwrapping."""
    path = Path(path)
    data = read_weights_file(path, CodecLoadError, "codec checkpoint")
    if isinstance(data, Mapping) and "state_dict" in data:
        data = data["state_dict"]
    if not isinstance(data, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in data.items()
    ):
        raise CodecLoadError(f"{path} is not a state dict of named tensors")
    if any("generator" in key for key in data):
        data = {k.replace("generator.", ""): v for k, v in data.items() if "generator." in k}
    return dict(data)


class _StateDictBuilder:
    """Maps checkpoint tensors onto a model's expected keys, collecting every problem."""

    def __init__(self, raw: Mapping[str, Tensor]) -> None:
        self.raw = raw
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.bad_shapes: list[str] = []

    def take(self, key: str, shape: tuple[int, ...]) -> Tensor | None:
        tensor = self.raw.get(key)
        if tensor is None:
            return None
        self.used.add(key)
        if tuple(tensor.shape) != shape:
            self.bad_shapes.append(f"{key}: checkpoint {tuple(tensor.shape)}, expected {shape}")
            return None
        return tensor.float()

    def folded_weight(self, prefix: str, shape: tuple[int, ...]) -> Tensor | None:
        for g_suffix, v_suffix in _WEIGHT_NORM_SPELLINGS:
            g_key, v_key = prefix + g_suffix, prefix + v_suffix
            if g_key not in self.raw and v_key not in self.raw:
                continue
            g = self.take(g_key, (shape[0],) + (1,) * (len(shape) - 1))
            v = self.take(v_key, shape)
            for key in (g_key, v_key):
                if key not in self.raw:
                    self.missing.append(key)
            if g is None or v is None:
                return None
            # W = g * V / ||V||, the norm over every axis but 0 (input channels for transposed
            # convs, since PyTorch stores those weights as (C_in, C_out, k)).
            norm = torch.linalg.vector_norm(v, dim=tuple(range(1, v.ndim)), keepdim=True)
            return v * (g / norm)
        # Also accept an already folded weight, e.g. a state dict saved from this implementation.
        plain = self.take(prefix + ".weight", shape)
        if plain is None and prefix + ".weight" not in self.raw:
            self.missing.append(f"{prefix}{_WEIGHT_NORM_SPELLINGS[0][1]} (or .weight_v)")
        return plain


def build_state_dict(model: CodecModel, raw: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The float32 state dict for `model` from checkpoint tensors; raises on any mismatch."""
    modules = dict(model.named_modules())
    builder = _StateDictBuilder(raw)
    state: dict[str, Tensor] = {}
    for key, ref in model.state_dict().items():
        prefix, _, leaf = key.rpartition(".")
        module = modules[prefix]
        shape = tuple(ref.shape)
        if leaf == "weight" and isinstance(module, WNConv1d | WNConvTranspose1d):
            tensor = builder.folded_weight(prefix, shape)
        elif leaf == "freqs_cis" and isinstance(module, WindowLimitedTransformer):
            # The stored bf16 table is what the original uses; rebuild it when absent.
            tensor = builder.take(key, shape)
            if tensor is None and key not in raw:
                tensor = module.default_rope_table()
        else:
            tensor = builder.take(key, shape)
            if tensor is None and key not in raw:
                builder.missing.append(key)
        if tensor is not None:
            state[key] = tensor

    unexpected = [
        key
        for key in raw
        if key not in builder.used
        and not key.endswith(_IGNORED_SUFFIXES)
        and not key.startswith(_IGNORED_PREFIXES)
    ]
    problems = []
    for label, items in (
        ("missing keys", builder.missing),
        ("wrong shapes", builder.bad_shapes),
        ("unexpected keys", unexpected),
    ):
        if items:
            listed = "; ".join(items[:_MAX_LISTED])
            more = f"; ... {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
            problems.append(f"{len(items)} {label}: {listed}{more}")
    if problems:
        raise CodecLoadError(" | ".join(problems))
    return state


def load_codec(
    checkpoint_path: str | Path,
    config: str | Path = "modded_dac_vq",
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Codec:
    """Load a codec checkpoint for inference; `config` is a built-in name or a YAML/JSON file."""
    cfg = load_config(config)
    raw = read_checkpoint(checkpoint_path)
    # Build without allocating or initialising weights; the checkpoint tensors are assigned.
    with torch.device("meta"):
        model = CodecModel(cfg)
    try:
        state = build_state_dict(model, raw)
    except CodecLoadError as exc:
        raise CodecLoadError(
            f"codec checkpoint {checkpoint_path} does not match config {config}: {exc}"
        ) from None
    model.load_state_dict(state, strict=True, assign=True)
    model.requires_grad_(False).eval()
    try:
        model = model.to(device=device, dtype=dtype)
    except (RuntimeError, AssertionError) as exc:
        raise CodecLoadError(f"cannot place the codec on device {device!r}: {exc}") from exc
    return Codec(model)
