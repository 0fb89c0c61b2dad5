"""The Dual-AR transformer of OpenAudio S1: a slow transformer over frames and a fast one over
the codebooks of each frame.

Module and parameter names mirror the original checkpoint's state_dict exactly. The model
does no I/O; it needs :meth:`DualARTransformer.setup_caches` before the first forward.

Attention reads a static, pre-allocated KV cache (gpt-fast style) of ``slots`` sequences.
Two ways to read it:

* ``kv_len=n`` (eager): attend only to the first ``n`` positions. A decode step then costs
  time proportional to the filled prefix, not to the whole context.
* ``kv_len=None`` (static shapes, for torch.compile): attend to every position and hide
  positions past the query's with a causal mask.

Batches: batch row ``b`` uses cache slot ``rows + b`` (``rows`` an int: a dense range, read
as a view) or ``rows[b]`` (an index tensor, read by a gather). Positions are either shared,
``input_pos`` of shape (S,) for every row (prefill, batch-1 decode), or per row,
``input_pos`` of shape (B, 1) for a batched decode step of sequences at different lengths;
each row then sees only its own filled prefix through a mask, and the read stops at the
longest prefix in the batch.

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


def rope_table(positions: int, head_dim: int, base: float, dtype: torch.dtype) -> Tensor:
    """(positions, head_dim/2, 2) float32 table of [cos, sin]. Like the original, rounded to
    bfloat16 and then to the run dtype (which rounds again only for fp16), and applied in
    float32."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(positions).float(), inv_freq)
    return torch.stack([angles.cos(), angles.sin()], dim=-1).to(torch.bfloat16).to(dtype).float()


def apply_rope(x: Tensor, table: Tensor) -> Tensor:
    """Rotate interleaved pairs (x[2j], x[2j+1]) to (a cos - b sin, b cos + a sin); x is
    (B, S, heads, hd), table (S, hd/2, 2) shared by the rows or (B, S, hd/2, 2) per row."""
    if table.ndim == 3:
        table = table[None]
    pairs = x.float().unflatten(-1, (-1, 2))
    if torch.compiler.is_compiling():
        # Inductor writes no code for complex numbers; it fuses this real form into one kernel.
        cos, sin = table[:, :, None, :, 0], table[:, :, None, :, 1]
        a, b = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1)
    else:
        # Eager, one complex product: the same float32 roundings in a third of the time of
        # the six real ops above for a decode step's few rows.
        rotations = torch.view_as_complex(table)[:, :, None]
        rotated = torch.view_as_real(torch.view_as_complex(pairs) * rotations)
    return rotated.flatten(-2).type_as(x)


CacheRows = int | Tensor
"""The cache slots of a batch's rows: the first of a dense range (an int, so compiled code
sees the batch size only as a shape) or one slot index per row (an index tensor (B,))."""


class KVCache(nn.Module):
    def __init__(
        self, slots: int, length: int, kv_heads: int, head_dim: int, dtype: torch.dtype
    ) -> None:
        super().__init__()
        shape = (slots, kv_heads, length, head_dim)
        # Non-persistent: run-time state, never part of a checkpoint.
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype), persistent=False)

    def update(
        self, rows: CacheRows, input_pos: Tensor, k: Tensor, v: Tensor, kv_len: int | None
    ) -> tuple[Tensor, Tensor]:
        """Write k, v (B, heads, S, hd) at ``input_pos`` of slots ``rows``; return those slots'
        first ``kv_len`` positions (all with None)."""
        batch = k.shape[0]
        view = slice(rows, rows + batch) if isinstance(rows, int) else rows
        if input_pos.ndim == 1 and isinstance(rows, int):
            self.k_cache[view].index_copy_(2, input_pos, k)
            self.v_cache[view].index_copy_(2, input_pos, v)
        else:
            # Indexed assignment touches only the written entries. (A scatter_ along the
            # positions costs time in proportion to the whole cache: 2 ms per call for 8
            # slots of 512 positions, 116 ms for 8 of 8192, where this takes 0.1 ms.)
            ids = (
                torch.arange(rows, rows + batch, device=k.device) if isinstance(rows, int) else rows
            )
            slots = ids[:, None]
            positions = input_pos if input_pos.ndim == 2 else input_pos[None]
            self.k_cache[slots, :, positions] = k.transpose(1, 2)
            self.v_cache[slots, :, positions] = v.transpose(1, 2)
        # Slice the positions before picking rows, so a gather copies only the prefix.
        return self.k_cache[:, :, :kv_len][view], self.v_cache[:, :, :kv_len][view]

    def copy_slot(self, source: int, target: int, length: int) -> None:
        self.k_cache[target, :, :length] = self.k_cache[source, :, :length]
        self.v_cache[target, :, :length] = self.v_cache[source, :, :length]


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
        self,
        x: Tensor,
        rope: Tensor,
        input_pos: Tensor,
        kv_len: int | None,
        mask: Tensor | None,
        rows: CacheRows,
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
        keys, values = self.kv_cache.update(
            rows, input_pos, k.transpose(1, 2), v.transpose(1, 2), kv_len
        )

        # Query head h uses KV head h // group (repeat-interleave order), so the group's query
        # heads are consecutive: fold them into the row axis instead of copying K/V.
        group = self.n_head // self.n_local_heads
        q = q.view(bsz, seqlen, self.n_local_heads, group, self.head_dim)
        q = q.permute(0, 2, 3, 1, 4).reshape(bsz, self.n_local_heads, group * seqlen, -1)
        if mask is not None and mask.ndim == 2:
            mask = mask.repeat(group, 1)  # (S, L) -> one copy per folded query head
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
        self.w13: nn.Module | None = None  # set by fuse_gate_up

    def fuse_gate_up(self) -> None:
        """Replace w1 and w3 by one layer holding both weights, so one matrix product of
        twice the rows runs instead of two. A post-load transform (the state_dict loses the
        checkpoint's names): it pays for the int8 kernel, whose small products are
        inefficient (12% of a decode step), not for float ones (measured no change)."""
        # Built on the meta device: its own initial weight would only be thrown away.
        fused = nn.Linear(self.w1.in_features, 2 * self.w1.out_features, bias=False, device="meta")
        fused.weight = nn.Parameter(
            torch.cat([self.w1.weight, self.w3.weight]), requires_grad=False
        )
        del self.w1, self.w3
        self.w13 = fused

    def forward(self, x: Tensor) -> Tensor:
        if self.w13 is None:
            gate, up = self.w1(x), self.w3(x)
        else:
            gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


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
        self,
        x: Tensor,
        rope: Tensor,
        input_pos: Tensor,
        kv_len: int | None,
        mask: Tensor | None,
        rows: CacheRows,
    ) -> Tensor:
        h = x + self.attention(self.attention_norm(x), rope, input_pos, kv_len, mask, rows)
        return h + self.feed_forward(self.ffn_norm(h))


def _causal_mask(input_pos: Tensor, kv_len: int) -> Tensor:
    """Boolean mask: the query at absolute position p sees cache positions 0..p. Shared
    positions (S,) give (S, kv_len); per-row positions (B, 1) give (B, 1, 1, kv_len)."""
    mask = torch.arange(kv_len, device=input_pos.device) <= input_pos[..., None]
    return mask if input_pos.ndim == 1 else mask[:, None]


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
        self.cache_len = 0

    def setup_caches(self, slots: int = 1, max_seq_len: int | None = None) -> None:
        """Allocate KV caches for ``slots`` sequences of up to ``max_seq_len`` positions (the
        checkpoint's context by default, and at most that) and the RoPE tables, on the
        parameters' device and dtype. Call after the weights are loaded and the model is
        moved/cast.
        """
        c = self.config
        weight = self.embeddings.weight
        device, dtype = weight.device, weight.dtype
        context = min(max_seq_len or c.max_seq_len, c.max_seq_len)
        # Rounded up to a multiple of 8, as the original sizes its cache.
        self.cache_len = math.ceil(context / 8) * 8
        with torch.device(device):
            for layer in self.layers:
                layer.attention.kv_cache = KVCache(
                    slots, self.cache_len, c.n_local_heads, c.head_dim, dtype
                )
            # The fast cache holds one frame per batch row, whatever the row's slot.
            for layer in self.fast_layers:
                layer.attention.kv_cache = KVCache(
                    slots, c.num_codebooks, c.fast_n_local_heads, c.fast_head_dim, dtype
                )
        self.rope = rope_table(self.cache_len, c.head_dim, c.rope_base, dtype).to(device)
        self.fast_rope = rope_table(c.num_codebooks, c.fast_head_dim, c.rope_base, dtype).to(device)

    @property
    def cache_slots(self) -> int:
        """Sequences the KV cache holds (0 before setup_caches)."""
        cache = self.layers[0].attention.kv_cache if len(self.layers) else None
        return 0 if cache is None else cache.k_cache.shape[0]

    @property
    def max_seq_len(self) -> int:
        """Positions one sequence may use: the checkpoint's context, or the shorter one the
        caches were set up for."""
        return min(self.config.max_seq_len, self.cache_len)

    def copy_slot(self, source: int, target: int, length: int) -> None:
        """Copy the first ``length`` cached positions of one slot into another."""
        for layer in self.layers:
            layer.attention.kv_cache.copy_slot(source, target, length)

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
        rows: CacheRows = 0,
        last: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Run the slow transformer over ``tokens`` (B, C+1, S) at absolute ``input_pos``
        ((S,) shared, or (B, 1) per row with S = 1) in cache slots ``rows`` (see the module
        docstring; slots 0..B-1 by default).

        Returns ``(logits, hidden)`` for the last position (every position with
        ``return_all``; position ``last[b]`` of row b when given): logits over the vocabulary
        and the un-normalized final residual stream projected into the fast width.
        """
        assert self.rope is not None, "call setup_caches() before running the model"
        x = self.embed(tokens)
        if kv_len is None or input_pos.ndim == 2:
            mask = _causal_mask(input_pos, self.cache_len if kv_len is None else kv_len)
        else:
            # A single query at the newest position sees the whole prefix: no mask needed.
            mask = None if tokens.shape[-1] == 1 else _causal_mask(input_pos, kv_len)
        rope = self.rope[input_pos]
        for layer in self.layers:
            x = layer(x, rope, input_pos, kv_len, mask, rows)
        if last is not None:
            # Right-padded prompts of several lengths: row b's last real position.
            x = x[torch.arange(x.shape[0], device=x.device), last][:, None]
        elif not return_all:
            x = x[:, -1:]
        return self.vocab_logits(self.norm(x)), self.fast_project_in(x)

    def vocab_logits(self, normed: Tensor) -> Tensor:
        """The slow head. A tied model reads the embedding table, unless a transform attached
        a separate ``output`` module (int8 does, leaving the embedding lookup untouched)."""
        if self.output is None:
            return F.linear(normed, self.embeddings.weight)
        return self.output(normed)

    def fast_hidden(self, x: Tensor, position: int) -> Tensor:
        """Run the fast blocks for one position of the current frame: x (B, 1, fD), every row
        at the same position (the fast cache is per batch row, not per slot).

        Position 0 takes the slow hidden state, position k >= 1 the embedding of code k-1.
        Earlier positions of the same frame must already be in the fast cache.
        """
        assert self.fast_rope is not None, "call setup_caches() before running the model"
        input_pos = torch.tensor([position], device=x.device)
        rope = self.fast_rope[position : position + 1]
        for layer in self.fast_layers:
            x = layer(x, rope, input_pos, position + 1, None, 0)
        return x

    def forward_fast(self, x: Tensor, position: int, width: int | None = None) -> Tensor:
        """Codebook logits (B, 1, width or K) after :meth:`fast_hidden`; computing only the
        first ``width`` outputs saves reading the unused rows of the head."""
        return self.fast_output(self.fast_norm(self.fast_hidden(x, position)), width)
