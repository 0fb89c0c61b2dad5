"""Dual-AR hyper-parameters, read from the checkpoint's flat ``config.json``.

Field names, defaults and derivation rules follow the original ``DualARModelArgs`` so that
every published config loads unchanged; keys this version does not know are ignored with a
warning so that later checkpoints still load.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint folder is incomplete or does not match the model it describes."""


@dataclass
class DualARConfig:
    model_type: str = "dual_ar"
    vocab_size: int = 32000
    n_layer: int = 32
    n_head: int = 32
    dim: int = 4096
    intermediate_size: int | None = None
    n_local_heads: int = -1
    # The original default is 64, not dim // n_head; only an explicit null derives it.
    head_dim: int | None = 64
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    max_seq_len: int = 2048
    dropout: float = 0.0
    tie_word_embeddings: bool = True
    attention_qkv_bias: bool = False
    attention_o_bias: bool = False
    attention_qk_norm: bool = False
    codebook_size: int = 160
    num_codebooks: int = 4
    use_gradient_checkpointing: bool = True
    initializer_range: float = 0.02
    is_reward_model: bool = False
    scale_codebook_embeddings: bool = False
    n_fast_layer: int = 4
    fast_dim: int | None = None
    fast_n_head: int | None = None
    fast_n_local_heads: int | None = None
    fast_head_dim: int | None = None
    fast_intermediate_size: int | None = None
    fast_attention_qkv_bias: bool | None = None
    fast_attention_qk_norm: bool | None = None
    fast_attention_o_bias: bool | None = None

    def __post_init__(self) -> None:
        if self.n_local_heads == -1:
            self.n_local_heads = self.n_head
        if self.intermediate_size is None:
            hidden = int(2 * (4 * self.dim) / 3)
            self.intermediate_size = math.ceil(hidden / 256) * 256
        if self.head_dim is None:
            self.head_dim = self.dim // self.n_head
        # The integer fast fields fall back on any falsy value (the original uses `or`),
        # the boolean ones only on null.
        self.fast_dim = self.fast_dim or self.dim
        self.fast_n_head = self.fast_n_head or self.n_head
        self.fast_n_local_heads = self.fast_n_local_heads or self.n_local_heads
        self.fast_head_dim = self.fast_head_dim or self.head_dim
        self.fast_intermediate_size = self.fast_intermediate_size or self.intermediate_size
        if self.fast_attention_qkv_bias is None:
            self.fast_attention_qkv_bias = self.attention_qkv_bias
        if self.fast_attention_qk_norm is None:
            self.fast_attention_qk_norm = self.attention_qk_norm
        if self.fast_attention_o_bias is None:
            self.fast_attention_o_bias = self.attention_o_bias
        self._validate()

    def _validate(self) -> None:
        if self.model_type != "dual_ar":
            raise CheckpointError(
                f"config.json: model_type {self.model_type!r} is not supported (need 'dual_ar')"
            )
        if self.is_reward_model:
            raise CheckpointError("config.json: is_reward_model=true cannot be used for TTS")
        for prefix, dim, heads, kv_heads, head_dim in (
            ("", self.dim, self.n_head, self.n_local_heads, self.head_dim),
            ("fast_", self.fast_dim, self.fast_n_head, self.fast_n_local_heads, self.fast_head_dim),
        ):
            if dim % heads:
                raise CheckpointError(
                    f"config.json: {prefix}dim must be divisible by {prefix}n_head"
                )
            if heads % kv_heads:
                raise CheckpointError(
                    f"config.json: {prefix}n_head must be a multiple of {prefix}n_local_heads"
                )
            if head_dim % 2:
                raise CheckpointError(f"config.json: {prefix}head_dim must be even (RoPE pairs)")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DualARConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            logger.warning("config.json: ignoring unknown keys %s", ", ".join(unknown))
        return cls(**{k: v for k, v in data.items() if k in known})
