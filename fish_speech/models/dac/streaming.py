"""Decoding a code stream piece by piece, so audio can be sent while codes are generated.

Every layer of the decode path is causal, so the audio of frame t depends only on codes up to
t. Two parts need history:

* the window-limited transformer (``post_module``) attends ``window - 1`` earlier frames in
  each layer; its stacked layers reach back ``n_layer * (window - 1)`` frames, far too many to
  recompute, so each stream keeps every layer's keys and values for the last ``window - 1``
  frames at their absolute positions (the same RoPE rows a one-pass decode uses);
* the convolution stack (upsample + decoder) reaches back a few frames only
  (:func:`conv_context_frames`), so each piece is decoded with that many frames of the
  transformer's earlier output in front and their samples are dropped.

The joined pieces therefore equal one decode of all the codes up to float rounding, whatever
the piece sizes. Several streams, each at its own position, decode in one batched pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import CodecModel
from .modules import CausalConv1d, CausalConvTranspose1d, WindowLimitedTransformer, rope_table


def conv_context_frames(stack: nn.Module) -> int:
    """Frames of left context after which the output of ``stack`` (frame-rate input) no longer
    depends on earlier input: the sum of every causal layer's reach, in frames."""
    reach = 0.0
    steps_per_frame = 1  # time steps per code frame at the current layer's input
    for module in stack.modules():
        if isinstance(module, CausalConv1d):
            conv = module.conv
            reach += (conv.kernel_size[0] - 1) * conv.dilation[0] / steps_per_frame
            if conv.stride[0] != 1:  # not on the decode path; kept exact if it ever is
                raise ValueError("a strided convolution in the decode path is not supported")
        elif isinstance(module, CausalConvTranspose1d):
            conv = module.conv
            # Output step m reads the input steps i with i*s <= m < i*s + k: the one at
            # floor(m / s) and ceil(k / s) - 1 before it.
            reach += (math.ceil(conv.kernel_size[0] / conv.stride[0]) - 1) / steps_per_frame
            steps_per_frame *= conv.stride[0]
    return math.ceil(reach)


@dataclass
class DecodeStream:
    """One stream's decoder state between pieces (create with StreamingDecoder.new_stream)."""

    frames: int = 0  # frames decoded so far: the absolute position of the next one
    # Per transformer layer: keys and values of the last (window - 1) frames, (heads, n, dim).
    keys: list[Tensor] = field(default_factory=list)
    values: list[Tensor] = field(default_factory=list)
    # The transformer's output for the last conv_context frames, (channels, n).
    context: Tensor | None = None


class StreamingDecoder:
    """Decodes pieces of code streams; see the module docstring for why it is exact."""

    def __init__(self, model: CodecModel) -> None:
        self.model = model
        self.quantizer = model.quantizer
        post = self.quantizer.post_module
        self.transformer: WindowLimitedTransformer | None = (
            post if isinstance(post, WindowLimitedTransformer) else None
        )
        self.conv_stack = nn.Sequential(self.quantizer.upsample, model.decoder)
        self.context_frames = conv_context_frames(self.conv_stack)
        self.hop = model.decode_hop_length
        self._rope: Tensor | None = None

    def new_stream(self) -> DecodeStream:
        return DecodeStream()

    @torch.inference_mode()
    def decode(self, streams: list[DecodeStream], pieces: list[Tensor]) -> list[Tensor]:
        """Audio (n_i * hop,) for each stream's next piece of codes (rows, n_i), in range.

        Updates each stream's state; a stream must not appear twice in one call.
        """
        if len({id(s) for s in streams}) != len(streams):
            raise ValueError("a stream appears twice in one decode call")
        lengths = [piece.shape[-1] for piece in pieces]
        if min(lengths) < 1:
            raise ValueError("every piece needs at least one frame")
        longest = max(lengths)
        # Right padding is harmless: no valid frame attends to, or convolves, later frames.
        codes = torch.stack([F.pad(piece, (0, longest - piece.shape[-1])) for piece in pieces])
        z = self.quantizer.dequantize(codes.to(self.model.decoder.model[0].conv.weight.device))
        if self.transformer is not None:
            z = self._transformer_step(streams, z, lengths)
        return self._conv_step(streams, z, lengths)

    # -- post_module ---------------------------------------------------------------------

    def _rope_rows(self, positions: Tensor) -> Tensor:
        """RoPE rows at absolute positions, extending the table past block_size if needed
        (a one-pass decode cannot go there; the formula and rounding stay the same)."""
        assert self.transformer is not None
        needed = int(positions.max()) + 1
        if self._rope is None or self._rope.shape[0] < needed:
            table = self.transformer.freqs_cis.float()
            if table.shape[0] < needed:
                cfg = self.transformer.cfg
                size = max(needed, 2 * table.shape[0])
                extended = rope_table(size, cfg.head_dim, cfg.rope_base).to(table.device)
                extended[: table.shape[0]] = table
                table = extended
            self._rope = table
        return self._rope[positions]

    def _transformer_step(
        self, streams: list[DecodeStream], z: Tensor, lengths: list[int]
    ) -> Tensor:
        t = self.transformer
        assert t is not None
        cfg = t.cfg
        batch, _, new = z.shape
        device = z.device
        window = cfg.window_size
        cached = [0 if not s.keys else s.keys[0].shape[1] for s in streams]
        slots = max(cached)
        starts = torch.tensor([s.frames for s in streams], device=device)

        # Key slot j < slots holds position start - slots + j (valid if a cached frame is
        # there); slot slots + j holds the new frame at start + j (valid if j < length).
        key_offsets = torch.arange(-slots, new, device=device)
        key_pos = starts[:, None] + key_offsets[None, :]
        query_pos = starts[:, None] + torch.arange(new, device=device)[None, :]
        have = torch.tensor(cached, device=device)[:, None]
        lens = torch.tensor(lengths, device=device)[:, None]
        key_valid = torch.where(
            key_offsets[None, :] < 0, key_offsets[None, :] >= -have, key_offsets[None, :] < lens
        )
        mask = key_valid[:, None, :] & (key_pos[:, None, :] <= query_pos[:, :, None])
        if window is not None:
            mask &= key_pos[:, None, :] > query_pos[:, :, None] - window
        # A padded query row may see no key at all; let it see itself so softmax stays finite.
        steps = torch.arange(new, device=device)
        mask[:, steps, slots + steps] = True
        rope = self._rope_rows(query_pos)  # (B, new, hd/2, 2)

        h = t.input_proj(z.transpose(1, 2))
        layer_kv: list[tuple[Tensor, Tensor]] = []
        for index, layer in enumerate(t.layers):
            attention = layer.attention
            x = layer.attention_norm(h)
            q, k, v = attention.wqkv(x).view(batch, new, 3, attention.n_head, -1).unbind(2)
            q, k = _rope_per_row(q, rope), _rope_per_row(k, rope)
            q, k, v = (y.transpose(1, 2) for y in (q, k, v))  # (B, heads, new, hd)
            past_k = _left_padded([s.keys[index] if s.keys else None for s in streams], k, slots)
            past_v = _left_padded(
                [s.values[index] if s.values else None for s in streams], v, slots
            )
            keys, values = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask[:, None])
            y = attention.wo(y.transpose(1, 2).reshape(batch, new, -1))
            h = h + layer.attention_layer_scale(y)
            h = h + layer.ffn_layer_scale(layer.feed_forward(layer.ffn_norm(h)))
            layer_kv.append((keys, values))
        self._remember(streams, layer_kv, cached, slots, lengths, window)
        return t.output_proj(t.norm(h)).transpose(1, 2)

    @staticmethod
    def _remember(
        streams: list[DecodeStream],
        layer_kv: list[tuple[Tensor, Tensor]],
        cached: list[int],
        slots: int,
        lengths: list[int],
        window: int | None,
    ) -> None:
        """Keep each stream's valid keys and values, the last (window - 1) frames of them."""
        for row, stream in enumerate(streams):
            end = slots + lengths[row]
            begin = slots - cached[row]
            if window is not None:
                begin = max(begin, end - (window - 1))
            stream.keys = [k[row, :, begin:end].clone() for k, _ in layer_kv]
            stream.values = [v[row, :, begin:end].clone() for _, v in layer_kv]

    # -- convolutions --------------------------------------------------------------------

    def _conv_step(
        self, streams: list[DecodeStream], z: Tensor, lengths: list[int]
    ) -> list[Tensor]:
        rows, lead = [], []
        for row, stream in enumerate(streams):
            new = z[row, :, : lengths[row]]
            before = stream.context if stream.context is not None else new[:, :0]
            rows.append(torch.cat([before, new], dim=1))
            lead.append(before.shape[1])
        longest = max(r.shape[1] for r in rows)
        # Left-aligned: a stream near its start has less context, exactly like a full decode.
        batch = torch.stack([F.pad(r, (0, longest - r.shape[1])) for r in rows])
        audio = self.conv_stack(batch)[:, 0].float()
        pieces = []
        for row, stream in enumerate(streams):
            first = lead[row] * self.hop
            pieces.append(audio[row, first : first + lengths[row] * self.hop])
            keep = rows[row][:, -self.context_frames :] if self.context_frames else rows[row][:, :0]
            stream.context = keep.clone()
            stream.frames += lengths[row]
        return pieces


def _rope_per_row(x: Tensor, table: Tensor) -> Tensor:
    """Rotate pairs of x (B, T, H, D) by per-row tables (B, T, D/2, 2), in float32."""
    pairs = x.float().unflatten(-1, (-1, 2))
    cos, sin = table[:, :, None, :, 0], table[:, :, None, :, 1]
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([even * cos - odd * sin, odd * cos + even * sin], dim=-1)
    return rotated.flatten(-2).type_as(x)


def _left_padded(past: list[Tensor | None], like: Tensor, slots: int) -> Tensor:
    """Stack per-stream caches (heads, n_i, hd) right-aligned into (B, heads, slots, hd)."""
    heads, dim = like.shape[1], like.shape[3]
    out = like.new_zeros((len(past), heads, slots, dim))
    for row, cache in enumerate(past):
        if cache is not None and cache.shape[1]:
            out[row, :, slots - cache.shape[1] :] = cache
    return out
