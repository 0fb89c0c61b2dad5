"""Reading an official checkpoint folder (``config.json``, ``model.pth``, tokenizer files)
into a :class:`DualARTransformer`, with strict key and shape checks."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from fish_speech.models.weights import read_weights_file

from .config import CheckpointError, DualARConfig
from .model import DualARTransformer
from .tokenizer import FishTokenizer

logger = logging.getLogger(__name__)


def load_config(checkpoint_dir: str | Path) -> DualARConfig:
    path = Path(checkpoint_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"config file missing: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    try:
        return DualARConfig.from_dict(data)
    except TypeError as e:
        raise CheckpointError(f"{path}: {e}") from e


def normalize_state_dict(raw: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Apply the original loader's key rules: unwrap ``state_dict``, strip the training
    wrapper's ``model.`` prefix, drop ``audio_*`` tensors, fuse legacy split q/k/v."""
    if "state_dict" in raw:
        raw = raw["state_dict"]
    state = dict(raw)
    if state and next(iter(state)).startswith("model."):
        state = {k.replace("model.", ""): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if "audio_" not in k}
    for key in [k for k in state if k.endswith("attention.wq.weight")]:
        prefix = key[: -len("wq.weight")]
        parts = [state.pop(prefix + name + ".weight", None) for name in ("wq", "wk", "wv")]
        if any(p is None for p in parts):
            raise CheckpointError(f"model.pth: {prefix}wq/wk/wv must all be present")
        state[prefix + "wqkv.weight"] = torch.cat(parts)
    return state


def check_state_dict(model: DualARTransformer, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Return exactly the tensors the model expects; raise on a missing key or wrong shape."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        )
        raise CheckpointError(f"model.pth: missing tensor(s) {shown}")
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"model.pth: tensor {key} has shape {tuple(state[key].shape)}, "
                f"config.json implies {tuple(ref.shape)}"
            )
    unexpected = sorted(k for k in state if k not in expected and "kv_cache" not in k)
    if unexpected:
        logger.warning("model.pth: ignoring unexpected tensors %s", ", ".join(unexpected[:10]))
    return {k: state[k] for k in expected}


def load_model(
    checkpoint_dir: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_slots: int = 1,
    max_seq_len: int | None = None,
) -> tuple[DualARTransformer, FishTokenizer]:
    """Load config, tokenizer and weights; the model is ready for generation, with caches for
    ``cache_slots`` sequences of ``max_seq_len`` positions (default: the checkpoint's)."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    config = load_config(folder)
    tokenizer = FishTokenizer.from_dir(folder)
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"tokenizer has {tokenizer.vocab_size} ids but config.json vocab_size is "
            f"{config.vocab_size}"
        )
    if tokenizer.num_semantic > config.codebook_size:
        raise CheckpointError(
            f"tokenizer has {tokenizer.num_semantic} semantic tokens but config.json "
            f"codebook_size is {config.codebook_size}"
        )
    weights_path = folder / "model.pth"
    raw = read_weights_file(weights_path, CheckpointError, "weights file")
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{weights_path}: expected a mapping of tensors")

    # Built on the meta device so no memory is spent on a random initialisation.
    with torch.device("meta"):
        model = DualARTransformer(config, tokenizer.semantic_begin_id, tokenizer.semantic_end_id)
    state = check_state_dict(model, normalize_state_dict(raw))
    model.load_state_dict(state, assign=True)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    model.setup_caches(cache_slots, max_seq_len)
    return model, tokenizer
