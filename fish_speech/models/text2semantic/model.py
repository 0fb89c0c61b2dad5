"""The Dual-AR transformer of OpenAudio S1: a slow transformer over frames and a fast one over
the codebooks of each frame.

Module and parameter names mirror the original checkpoint's state_dict exactly. The model
does no I/O; it needs :meth:`DualARTransformer.setup_caches` before the first forward.

Attention reads a static, pre-allocated KV cache (gpt-fast style). Two ways to read it:

* ``kv_len=n`` (eager): attend only to the first ``n`` cache rows. A decode step then costs
  time proportional to the filled prefix, not to the whole context.
* ``kv_len=None`` (static shapes, for torch.compile): attend to every cache row and hide
  rows past the query position with a causal mask.

Grouped-query attention never copies K/V: the query heads that share a KV head are folded
into extra query rows of that head, so SDPA sees ``n_local_heads`` heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fish_speech.models.layers import RMSNorm

from .config import DualARConfig

# The released inference code samples residual codebooks from this many logits only: the
# S1 codec's residual books have 1024 entries.
RESIDUAL_CODEBOOK_SIZE = 1024


def rope_table(positions: int, head_dim: int, base: float) -> Tensor:
    """(positions, head_dim/2, 2) table of [cos, sin], rounded to bfloat16 like the original."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(positions).float(), inv_freq)
    return torch.stack([angles.cos(), angles.sin()], dim=-1).to(torch.bfloat16)


def apply_rope(x: Tensor, table: Tensor) -> Tensor:
    """Rotate interleaved pairs (x[2j], x[2j+1]); x is (B, S, heads, hd), table (S, hd/2, 2)."""
    pairs = x.float().unflatten(-1, (-1, 2))
    cos = table[None, :, None, :, 0].float()
    sin = table[None, :, None, :, 1].float()
    a, b = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1)
    return rotated.flatten(-2).type_as(x)


class KVCache(nn.Module):
    def __init__(
        self, batch: int, length: int, kv_heads: int, head_dim: int, dtype: torch.dtype
    ) -> None:
        super().__init__()
        shape = (batch, kv_heads, length, head_dim)
        # Non-persistent: run-time state, never part of a checkpoint.
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype), persistent=False)

    def update(self, input_pos: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.k_cache.index_copy_(2, input_pos, k)
        self.v_cache.index_copy_(2, input_pos, v)
        return self.k_cache, self.v_cache


class Attention(nn.Module):
    def __init__(
        self,
        dim: int,
        n_head: int,
        n_local_heads: int,
        head_dim: int,
        qkv_bias: bool,
        o_bias: bool,
        qk_norm: bool,
        eps: float,
    ) -> None:
        super().__init__()
        self.n_head = n_head
        self.n_local_heads = n_local_heads
        self.head_dim = head_dim
        self.wqkv = nn.Linear(dim, (n_head + 2 * n_local_heads) * head_dim, bias=qkv_bias)
        self.wo = nn.Linear(n_head * head_dim, dim, bias=o_bias)
        self.qk_norm = qk_norm
        if qk_norm:
            self.q_norm = RMSNorm(head_dim, eps)
            self.k_norm = RMSNorm(head_dim, eps)
        self.kv_cache: KVCache | None = None

    def forward(
        self, x: Tensor, rope: Tensor, input_pos: Tensor, kv_len: int | None, mask: Tensor | None
    ) -> Tensor:
        bsz, seqlen, _ = x.shape
        q_size = self.n_head * self.head_dim
        kv_size = self.n_local_heads * self.head_dim
        q, k, v = self.wqkv(x).split([q_size, kv_size, kv_size], dim=-1)
        q = q.view(bsz, seqlen, self.n_head, self.head_dim)
        k = k.view(bsz, seqlen, self.n_local_heads, self.head_dim)
        v = v.view(bsz, seqlen, self.n_local_heads, self.head_dim)
        if self.qk_norm:
            q = self.q_norm(q)
            k = self.k_norm(k)
        q = apply_rope(q, rope)
        k = apply_rope(k, rope)

        assert self.kv_cache is not None, "call setup_caches() before running the model"
        keys, values = self.kv_cache.update(input_pos, k.transpose(1, 2), v.transpose(1, 2))
        if kv_len is not None:
            keys, values = keys[:, :, :kv_len], values[:, :, :kv_len]

        # Query head h uses KV head h // group (repeat-interleave order), so the group's query
        # heads are consecutive: fold them into the row axis instead of copying K/V.
        group = self.n_head // self.n_local_heads
        q = q.view(bsz, seqlen, self.n_local_heads, group, self.head_dim)
        q = q.permute(0, 2, 3, 1, 4).reshape(bsz, self.n_local_heads, group * seqlen, -1)
        if mask is not None:
            mask = mask.repeat(group, 1)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        y = y.view(bsz, self.n_local_heads, group, seqlen, self.head_dim)
        y = y.permute(0, 3, 1, 2, 4).reshape(bsz, seqlen, q_size)
        return self.wo(y)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Head(nn.Linear):
    """A bias-free output projection that can compute only its first ``rows`` logits, so the
    unused rows of the weight are never read. Post-load transforms (int8) replace it with a
    module of the same call signature."""

    def __init__(self, dim: int, outputs: int) -> None:
        super().__init__(dim, outputs, bias=False)

    def forward(self, x: Tensor, rows: int | None = None) -> Tensor:
        return F.linear(x, self.weight[:rows])


class TransformerBlock(nn.Module):
    def __init__(self, attention: Attention, dim: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.attention = attention
        self.feed_forward = FeedForward(dim, hidden)
        self.attention_norm = RMSNorm(dim, eps)
        self.ffn_norm = RMSNorm(dim, eps)

    def forward(
        self, x: Tensor, rope: Tensor, input_pos: Tensor, kv_len: int | None, mask: Tensor | None
    ) -> Tensor:
        h = x + self.attention(self.attention_norm(x), rope, input_pos, kv_len, mask)
        return h + self.feed_forward(self.ffn_norm(h))


def _causal_mask(input_pos: Tensor, kv_len: int) -> Tensor:
    """(S, kv_len) boolean mask: the query at absolute position p sees cache rows 0..p."""
    return torch.arange(kv_len, device=input_pos.device)[None, :] <= input_pos[:, None]


class DualARTransformer(nn.Module):
    def __init__(self, config: DualARConfig, semantic_begin_id: int, semantic_end_id: int) -> None:
        super().__init__()
        c = config
        self.config = c
        # The semantic id range decides which positions carry codebook embeddings.
        self.semantic_begin_id = semantic_begin_id
        self.semantic_end_id = semantic_end_id

        self.embeddings = nn.Embedding(c.vocab_size, c.dim)
        self.codebook_embeddings = nn.Embedding(c.codebook_size * c.num_codebooks, c.dim)
        self.layers = nn.ModuleList(
            TransformerBlock(
                Attention(
                    c.dim,
                    c.n_head,
                    c.n_local_heads,
                    c.head_dim,
                    c.attention_qkv_bias,
                    c.attention_o_bias,
                    c.attention_qk_norm,
                    c.norm_eps,
                ),
                c.dim,
                c.intermediate_size,
                c.norm_eps,
            )
            for _ in range(c.n_layer)
        )
        self.norm = RMSNorm(c.dim, c.norm_eps)
        # Tied: the token embedding table is the head (see vocab_logits).
        self.output: nn.Module | None = None
        if not c.tie_word_embeddings:
            self.output = Head(c.dim, c.vocab_size)

        self.fast_project_in = (
            nn.Linear(c.dim, c.fast_dim) if c.fast_dim != c.dim else nn.Identity()
        )
        self.fast_embeddings = nn.Embedding(c.codebook_size, c.fast_dim)
        self.fast_layers = nn.ModuleList(
            TransformerBlock(
                Attention(
                    c.fast_dim,
                    c.fast_n_head,
                    c.fast_n_local_heads,
                    c.fast_head_dim,
                    c.fast_attention_qkv_bias,
                    c.fast_attention_o_bias,
                    c.fast_attention_qk_norm,
                    c.norm_eps,
                ),
                c.fast_dim,
                c.fast_intermediate_size,
                c.norm_eps,
            )
            for _ in range(c.n_fast_layer)
        )
        self.fast_norm = RMSNorm(c.fast_dim, c.norm_eps)
        self.fast_output = Head(c.fast_dim, c.codebook_size)

        self.rope: Tensor | None = None
        self.fast_rope: Tensor | None = None

    def setup_caches(self, batch: int = 1) -> None:
        """Allocate KV caches and RoPE tables on the parameters' device and dtype.

        Call after the weights are loaded and the model is moved/cast.
        """
        c = self.config
        weight = self.embeddings.weight
        device, dtype = weight.device, weight.dtype
        with torch.device(device):
            for layer in self.layers:
                layer.attention.kv_cache = KVCache(
                    batch, c.kv_cache_len, c.n_local_heads, c.head_dim, dtype
                )
            for layer in self.fast_layers:
                layer.attention.kv_cache = KVCache(
                    batch, c.num_codebooks, c.fast_n_local_heads, c.fast_head_dim, dtype
                )
        # The bf16-rounded tables are cast once more to the run dtype (fp16 rounds again).
        self.rope = rope_table(c.kv_cache_len, c.head_dim, c.rope_base).to(device, dtype)
        self.fast_rope = rope_table(c.num_codebooks, c.fast_head_dim, c.rope_base).to(device, dtype)

    def embed(self, tokens: Tensor) -> Tensor:
        """(B, C+1, S) ids -> (B, S, D): token embedding plus, at semantic positions, the sum
        of the codebook embeddings, scaled by 1/sqrt(C+1) if the config says so."""
        c = self.config
        offsets = torch.arange(c.num_codebooks, device=tokens.device) * c.codebook_size
        codebooks = self.codebook_embeddings(tokens[:, 1:] + offsets[None, :, None]).sum(dim=1)
        ids = tokens[:, 0]
        semantic = ((ids >= self.semantic_begin_id) & (ids <= self.semantic_end_id))[..., None]
        x = self.embeddings(ids) + torch.where(semantic, codebooks, 0.0)
        if c.scale_codebook_embeddings:
            x = torch.where(semantic, x / math.sqrt(c.num_codebooks + 1), x)
        return x

    def forward_slow(
        self,
        tokens: Tensor,
        input_pos: Tensor,
        kv_len: int | None,
        return_all: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Run the slow transformer over ``tokens`` (B, C+1, S) at absolute ``input_pos`` (S,).

        Returns ``(logits, hidden)`` for the last position (every position with
        ``return_all``): logits over the vocabulary and the un-normalized final residual
        stream projected into the fast width.
        """
        assert self.rope is not None, "call setup_caches() before running the model"
        x = self.embed(tokens)
        if kv_len is None:
            mask = _causal_mask(input_pos, self.config.kv_cache_len)
        else:
            # A single query at the newest position sees the whole prefix: no mask needed.
            mask = None if tokens.shape[-1] == 1 else _causal_mask(input_pos, kv_len)
        rope = self.rope[input_pos]
        for layer in self.layers:
            x = layer(x, rope, input_pos, kv_len, mask)
        if not return_all:
            x = x[:, -1:]
        return self.vocab_logits(self.norm(x)), self.fast_project_in(x)

    def vocab_logits(self, normed: Tensor) -> Tensor:
        """The slow head. A tied model reads the embedding table, unless a transform attached
        a separate ``output`` module (int8 does, leaving the embedding lookup untouched)."""
        if self.output is None:
            return F.linear(normed, self.embeddings.weight)
        return self.output(normed)

    def fast_hidden(self, x: Tensor, position: int) -> Tensor:
        """Run the fast blocks for one position of the current frame: x (B, 1, fD).

        Position 0 takes the slow hidden state, position k >= 1 the embedding of code k-1.
        Earlier positions of the same frame must already be in the fast cache.
        """
        assert self.fast_rope is not None, "call setup_caches() before running the model"
        input_pos = torch.tensor([position], device=x.device)
        rope = self.fast_rope[position : position + 1]
        for layer in self.fast_layers:
            x = layer(x, rope, input_pos, position + 1, None)
        return x

    def forward_fast(self, x: Tensor, position: int, width: int | None = None) -> Tensor:
        """Codebook logits (B, 1, width or K) after :meth:`fast_hidden`; computing only the
        first ``width`` outputs saves reading the unused rows of the head."""
        return self.fast_output(self.fast_norm(self.fast_hidden(x, position)), width)
