"""Weight-only int8 quantisation of the text-to-semantic model, applied after loading.

In the gpt-fast manner: every linear layer of the slow and fast transformers, the projection
between them and both output heads keep their weight as int8 with one float scale per output
channel (symmetric, ``scale = max |row| / 127``); activations stay in the model's float dtype.
Decoding reads every weight once per frame, so a quarter of float32's bytes is the point.

The decode matmul is PyTorch's own ``aten._weight_int8pack_mm`` on CPU, which is vectorised
for bfloat16 inputs only: a float32 model rounds the input of each int8 matmul to bf16 (and
its output back) during decode. Elsewhere (CUDA, prefill, shapes that kernel gets wrong) the
weight is dequantised inside the matmul expression, which Inductor fuses into one kernel
under ``torch.compile`` (how gpt-fast runs int8 on CUDA).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .precision import QUANTIZATIONS

if TYPE_CHECKING:  # the text2semantic package imports this module at load time
    from .text2semantic.model import DualARTransformer

# Rows quantised at a time: bounds the float32 temporaries for the 155776-row S1-mini head.
_CHUNK_ROWS = 8192
# The packed CPU kernel converts the weight again for every 4 input rows; from 16 rows on
# (prefill) converting it once and running the float matmul is faster (measured, 4096x1024).
_PACKED_MAX_ROWS = 8


def quantize_per_channel(weight: Tensor) -> tuple[Tensor, Tensor]:
    """(int8 weight, float32 scales (out,)) with ``weight ~= int8 * scales[:, None]``.

    The scales are rounded to bfloat16 values before quantising, so the bf16 kernel and the
    float path dequantise to exactly the same weights.
    """
    rows = []
    scales = []
    for chunk in weight.split(_CHUNK_ROWS):
        chunk = chunk.float()
        scale = (chunk.abs().amax(dim=1) / 127).bfloat16().float()
        # A zero row gets scale 1 (any scale represents it exactly), never a division by 0.
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        rows.append(torch.round(chunk / scale[:, None]).clamp_(-127, 127).to(torch.int8))
        scales.append(scale)
    return torch.cat(rows), torch.cat(scales)


def packed_kernel_fits(x: Tensor, weight: Tensor) -> bool:
    """Whether ``aten._weight_int8pack_mm`` should take the product of 2-D ``x`` and ``weight``.

    On x86 only its bfloat16 path is vectorised (float32 and float16 run a scalar loop, slower
    than dequantising), so it is called with bf16 inputs whatever the model dtype. That path
    (torch 2.13, AVX2 and AVX-512 builds alike) steps 16 columns at a time with aligned
    loads: it returns garbage or crashes unless the reduction length is a multiple of 16, so
    other shapes take the dequantising expression.
    """
    return (
        x.device.type == "cpu"
        and x.shape[0] <= _PACKED_MAX_ROWS
        and weight.shape[1] % 16 == 0
        and hasattr(torch.ops.aten, "_weight_int8pack_mm")
    )


class Int8Linear(nn.Module):
    """``y = x @ (int8 * scales).T + bias``; ``forward(x, rows)`` computes only the first
    ``rows`` outputs, like :class:`Head`, so it can stand in for a head or a plain linear."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        int8, scales = quantize_per_channel(weight)
        self.in_features = weight.shape[1]
        self.out_features = weight.shape[0]
        self.register_buffer("weight", int8)
        # bf16-valued, so casting the model to any float dtype keeps them exact.
        self.register_buffer("scales", scales.to(weight.dtype))
        # The packed kernel wants scales in its input dtype, bf16; a copy saves a cast per call.
        self.register_buffer("bf16_scales", scales.bfloat16())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: Tensor, rows: int | None = None) -> Tensor:
        weight = self.weight[:rows]
        flat = x.reshape(-1, self.in_features)
        if packed_kernel_fits(flat, weight):
            # A new bf16 buffer is aligned and contiguous, as the kernel's loads require.
            if flat.dtype != torch.bfloat16:
                flat = flat.bfloat16()
            elif not flat.is_contiguous() or flat.data_ptr() % 64:
                flat = flat.clone(memory_format=torch.contiguous_format)
            scales = self.bf16_scales[:rows]
            out = torch.ops.aten._weight_int8pack_mm(flat, weight, scales).to(x.dtype)
        else:
            out = F.linear(flat, weight.to(flat.dtype)) * self.scales[:rows]
        if self.bias is not None:
            out = out + self.bias[:rows]
        return out.view(*x.shape[:-1], out.shape[-1])

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def _replace_linears(module: nn.Module) -> None:
    """Swap every nn.Linear (heads included) below ``module`` for an Int8Linear."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child.weight, child.bias))
        else:
            _replace_linears(child)


@torch.no_grad()
def quantize_int8(model: DualARTransformer) -> DualARTransformer:
    """Quantise ``model`` in place (after loading and casting) and return it.

    Embedding tables stay float: lookups only gather a few rows per step. A tied model gets
    its own int8 copy of the table as the slow head, so the lookup keeps the float rows.
    Each feed-forward's gate and up projections become one int8 layer (``fuse_gate_up``).
    """
    from .text2semantic.model import FeedForward

    if model.output is None:
        model.output = Int8Linear(model.embeddings.weight)
    for module in model.modules():
        if isinstance(module, FeedForward):
            module.fuse_gate_up()
    _replace_linears(model)
    return model


def quantize(model: DualARTransformer, method: str | None) -> DualARTransformer:
    """Apply the named quantisation (None: leave the model as it is)."""
    if method is None:
        return model
    if method not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, got {method!r}")
    return quantize_int8(model)
