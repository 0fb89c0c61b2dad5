"""Building blocks of the S1 codec (spec codec.md section 3).

Module and parameter names follow the original module tree so that checkpoint keys map
one to one; the only renaming is weight norm, which the loader folds into plain `weight`
tensors (see loader.py). Weight-normalised convolutions are marked by their class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fish_speech.models.layers import RMSNorm, storage_identity

from .config import TransformerConfig


class WNConv1d(nn.Conv1d):
    """A Conv1d stored weight-normalised (g, V) in checkpoints; folded at load time."""


class WNConvTranspose1d(nn.ConvTranspose1d):
    """A ConvTranspose1d stored weight-normalised in checkpoints; folded at load time."""


def to_planes(x: Tensor) -> Tensor:
    """(B, C, L) -> (B, C, 1, L) stored channels-last: the layout oneDNN's convolutions
    compute in, so a stack of convs pays no layout conversion per layer. The 1-D blocks
    below accept either form; only the summation order inside a conv can differ."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


class Snake1d(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha if x.dim() == 3 else self.alpha[..., None]
        # x + sin(alpha x)^2 / (alpha + 1e-9), computed in one buffer: these activations are
        # the codec's largest tensors and allocating each step costs more than the math.
        y = torch.mul(x, alpha).sin_().square_()
        return torch.addcmul(x, y, (alpha + 1e-9).reciprocal(), out=y)


class CausalConv1d(nn.Module):
    """Left-padded conv whose output has exactly ceil(L / stride) frames."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        conv = WNConv1d if weight_norm else nn.Conv1d
        self.conv = conv(
            in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, groups=groups
        )
        self.stride = stride
        self.left_pad = (kernel_size - 1) * dilation + 1 - stride

    def forward(self, x: Tensor) -> Tensor:
        c = self.conv
        if x.dim() == 4 and self.stride == 1:
            # Padded inside the conv on both sides and the surplus right outputs dropped: the
            # same sums as a left pad, without writing a padded copy of the input (measured
            # 5-10% of a float32 decode on CPU).
            length = x.shape[-1]
            weight = c.weight.unsqueeze(2)
            y = F.conv2d(x, weight, c.bias, 1, (0, self.left_pad), (1, c.dilation[0]), c.groups)
            return y[..., :length]
        # The right pad completes the last stride so no input sample is dropped.
        pads = (self.left_pad, -x.shape[-1] % self.stride)
        x = F.pad(x, pads) if any(pads) else x
        if x.dim() == 3:
            return self.conv(x)
        weight = c.weight.unsqueeze(2)
        return F.conv2d(x, weight, c.bias, (1, self.stride), 0, (1, c.dilation[0]), c.groups)


class CausalConvTranspose1d(nn.Module):
    """Transposed conv trimmed on the right so that L frames become exactly L * stride."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        conv = WNConvTranspose1d if weight_norm else nn.ConvTranspose1d
        self.conv = conv(in_channels, out_channels, kernel_size, stride=stride)
        self.trim = kernel_size - stride
        self.taps = -(-kernel_size // stride)  # input frames that reach one output sample
        # (key of the weight it was made from, conv weight, conv bias): see _as_conv.
        self._conv_form: tuple[tuple, Tensor, Tensor | None] | None = None

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            return self._planes_forward(x)
        y = self.conv(x)
        return y[..., : y.shape[-1] - self.trim] if self.trim else y

    def _planes_forward(self, x: Tensor) -> Tensor:
        """The trimmed transposed conv as an ordinary conv over ``taps`` input frames with
        ``stride * out`` channels, whose channels-last output is already the interleaved
        result. Same products and sums; oneDNN's ordinary convs run about twice as fast on
        CPU as its transposed ones, which also re-lay out their weight on every call."""
        batch, _, _, length = x.shape
        weight, bias = self._as_conv()
        y = F.conv2d(x, weight, bias, 1, (0, self.taps - 1))[..., :length]
        out_channels = self.conv.out_channels
        y = y.permute(0, 2, 3, 1).reshape(batch, 1, length * self.conv.stride[0], out_channels)
        return y.permute(0, 3, 1, 2)

    def _as_conv(self) -> tuple[Tensor, Tensor | None]:
        """Output sample ``i * stride + r`` is the sum over t < taps of
        ``weight[:, :, r + t * stride]`` applied to input frame ``i - t``. Made once per weight
        (rebuilt if the weight is replaced, cast, moved or loaded into)."""
        w, b = self.conv.weight, self.conv.bias
        key = (storage_identity(w), w.dtype, w.device, w.shape)
        key += () if b is None else storage_identity(b)
        if self._conv_form is None or self._conv_form[0] != key:
            stride, taps = self.conv.stride[0], self.taps
            with torch.inference_mode(False), torch.no_grad():
                padded = F.pad(w, (0, taps * stride - w.shape[-1]))  # (in, out, taps * stride)
                per_phase = padded.view(*w.shape[:2], taps, stride).permute(3, 1, 0, 2)
                weight = per_phase.flip(-1).reshape(stride * w.shape[1], w.shape[0], 1, taps)
                bias = None if b is None else b.repeat(stride)
            self._conv_form = (key, weight.contiguous(), bias)
        return self._conv_form[1], self._conv_form[2]


class ResidualUnit(nn.Module):
    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(dim),
            CausalConv1d(dim, dim, 7, dilation=dilation),
            Snake1d(dim),
            CausalConv1d(dim, dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x).add_(x)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = CausalConv1d(dim, dim, 7, groups=dim, weight_norm=False)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(self.dwconv(x).transpose(1, 2))
        h = self.pwconv2(F.gelu(self.pwconv1(h)))
        return x + (self.gamma * h).transpose(1, 2)


def rope_table(block_size: int, head_dim: int, base: float) -> Tensor:
    """(block_size, head_dim/2, 2) cos/sin table, rounded through bfloat16 as the original."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(block_size).float(), inv_freq)
    table = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
    return table.to(torch.bfloat16).float()


def apply_rope(x: Tensor, table: Tensor) -> Tensor:
    """Rotate consecutive feature pairs of x (B, T, H, D) by the (T, D/2, 2) table, in float32."""
    pairs = x.float().unflatten(-1, (-1, 2))
    cos, sin = table[None, :, None, :, 0], table[None, :, None, :, 1]
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([even * cos - odd * sin, odd * cos + even * sin], dim=-1)
    return rotated.flatten(-2).type_as(x)


def windowed_attention(q: Tensor, k: Tensor, v: Tensor, window: int | None) -> Tensor:
    """Causal attention where position t sees keys t-window+1 .. t; q, k, v are (B, H, T, D).

    Long sequences are processed in query blocks of `window` rows, each against only the keys
    it may see, so memory grows linearly with T instead of quadratically.
    """
    length = q.shape[-2]
    if window is None or length <= window:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    outputs = []
    for start in range(0, length, window):
        end = min(start + window, length)
        first = max(0, start - window + 1)
        query_pos = torch.arange(start, end, device=q.device)[:, None]
        key_pos = torch.arange(first, end, device=q.device)[None, :]
        mask = (key_pos <= query_pos) & (key_pos > query_pos - window)
        outputs.append(
            F.scaled_dot_product_attention(
                q[..., start:end, :], k[..., first:end, :], v[..., first:end, :], attn_mask=mask
            )
        )
    return torch.cat(outputs, dim=-2)


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        width = cfg.n_head * cfg.head_dim
        self.wqkv = nn.Linear(cfg.dim, 3 * width, bias=False)
        self.wo = nn.Linear(width, cfg.dim, bias=False)

    def forward(self, x: Tensor, rope: Tensor, window: int | None) -> Tensor:
        batch, length, _ = x.shape
        q, k, v = self.wqkv(x).view(batch, length, 3, self.n_head, self.head_dim).unbind(2)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        y = windowed_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), window)
        return self.wo(y.transpose(1, 2).reshape(batch, length, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.intermediate_size, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.intermediate_size, bias=False)
        self.w2 = nn.Linear(cfg.intermediate_size, cfg.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention_layer_scale = LayerScale(cfg.dim)
        self.ffn_layer_scale = LayerScale(cfg.dim)

    def forward(self, x: Tensor, rope: Tensor, window: int | None) -> Tensor:
        h = x + self.attention_layer_scale(self.attention(self.attention_norm(x), rope, window))
        return h + self.ffn_layer_scale(self.feed_forward(self.ffn_norm(h)))


class WindowLimitedTransformer(nn.Module):
    """Channels-first causal transformer; its output replaces the input (no outer residual)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_proj = (
            nn.Linear(cfg.input_dim, cfg.dim) if cfg.input_dim != cfg.dim else nn.Identity()
        )
        self.output_proj = (
            nn.Linear(cfg.dim, cfg.input_dim) if cfg.input_dim != cfg.dim else nn.Identity()
        )
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        # Stored float32 holding bf16-rounded values, so casting the model keeps it exact.
        self.register_buffer("freqs_cis", self.default_rope_table())

    def default_rope_table(self) -> Tensor:
        return rope_table(self.cfg.block_size, self.cfg.head_dim, self.cfg.rope_base)

    def forward(self, x: Tensor) -> Tensor:
        # Contiguous rows: a linear layer over a transposed view runs as a batched matmul
        # that copies its weight on every call.
        h = self.input_proj(x.transpose(1, 2).contiguous())
        length = h.shape[1]
        if length > self.freqs_cis.shape[0]:
            raise ValueError(f"{length} frames exceed block_size {self.cfg.block_size}")
        rope = self.freqs_cis[:length].float()
        for layer in self.layers:
            h = layer(h, rope, self.cfg.window_size)
        return self.output_proj(self.norm(h)).transpose(1, 2)
