"""Weight-only int8 quantisation of the text-to-semantic model, applied after loading.

In the gpt-fast manner: every linear layer of the slow and fast transformers, the projection
between them and both output heads keep their weight as int8 with one float scale per output
channel (symmetric, ``scale = max |row| / 127``). Decoding reads every weight once per frame,
so a quarter of float32's bytes is the point.

Which kernel computes a product on CPU, for a few input rows (decode steps):

* fbgemm's int8 x uint8 matmul (x86 builds), the fastest where it exists (measured for one
  row: twice the weight streaming rate of the kernel below on an AVX2 EPYC, 1.2x on an AMX
  Xeon). It wants integer activations, so each float32 row is written exactly enough as
  three base-126 digits, rows of their own (``split_into_digits``): the products are exact
  integer sums and the result carries about 20 bits of each row's largest activation, so
  the weights are the only thing quantised. Three rows cost 0-30% more than one, the weights'
  memory traffic being most of the work. fbgemm keeps a packed copy of each weight and one
  of its own int8 tensor: for S1-mini about 1.1 GB more resident memory.
* else ``aten._weight_int8pack_mm``, vectorised on x86 for bfloat16 inputs only: a float32
  model rounds the input of each such matmul to bf16 (and its output back).

Elsewhere (CUDA, prefill, shapes neither kernel takes) the weight is dequantised inside the
matmul expression, which Inductor fuses into one kernel under ``torch.compile`` (how gpt-fast
runs int8 on CUDA).
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import storage_identity
from .precision import QUANTIZATIONS

if TYPE_CHECKING:  # the text2semantic package imports this module at load time
    from .text2semantic.model import DualARTransformer

# Rows quantised at a time: bounds the float32 temporaries for the 155776-row S1-mini head.
_CHUNK_ROWS = 8192
# The packed CPU kernel converts the weight again for every 4 input rows; from 16 rows on
# (prefill) converting it once and running the float matmul is faster (measured, 4096x1024).
_PACKED_MAX_ROWS = 8
# fbgemm's AVX2 kernel adds two uint8 x int8 products in int16, which overflows for 8-bit
# activations (why its own dynamic quantisation keeps them to 7 bits): digits lie in
# [-63, 63], zero point 64, so the uint8 codes stay within 1..127.
DIGIT_RADIX = 126
DIGITS = 3
_DIGIT_ZERO_POINT = 64
# What one unit of each digit is worth in units of the last, and how many of each digit's
# steps a row's largest |x| spans (63 of the top digit's).
PLACES = torch.tensor([float(DIGIT_RADIX ** (DIGITS - 1 - d)) for d in range(DIGITS)])
_UNITS_PER_LARGEST = (63 * PLACES[0] / PLACES)[:, None, None]
_ROUNDER = torch.tensor(1.5 * 2**23)
# Digit d is rounding d minus DIGIT_RADIX times rounding d-1: one small matrix product
# (exact: integers below 2^21 throughout), a quarter cheaper than slicing and subtracting.
_DIGITS_FROM_ROUNDINGS = torch.eye(DIGITS) - torch.diag(
    torch.full((DIGITS - 1,), float(DIGIT_RADIX)), diagonal=-1
)
# The digit rows grow the integer matmul threefold, cheap while the weights' memory traffic
# dominates; at 64 input rows dequantising once and running the float matmul costs the same
# (measured, 6144x1024, AVX2 EPYC), so from there on (prefill) that path runs.
_DIGIT_MAX_ROWS = 32


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


@functools.cache
def fbgemm_available() -> bool:
    """Whether this torch build has fbgemm's quantised linear (x86 builds; not ARM ones)."""
    ops = torch.ops.quantized
    return "fbgemm" in torch.backends.quantized.supported_engines and all(
        hasattr(ops, name)
        for name in ("linear_prepack", "linear_with_input_q_dq_qweight_dq_output_fp32")
    )


def fbgemm_pack(weight: Tensor, scales: Tensor) -> torch.ScriptObject:
    """fbgemm's packed form of an int8 weight with per-output-channel scales."""
    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        # Quantised tensor types are deprecated in favour of torchao; this is only the
        # argument fbgemm's packing takes, and fbgemm_available() says whether it exists.
        warnings.simplefilter("ignore", UserWarning)
        qweight = torch._make_per_channel_quantized_tensor(
            weight.contiguous(), scales.double(), zero_points, 0
        )
    # The engine picks the packed class; only fbgemm's computes the fused float-output form.
    engine = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    try:
        return torch.ops.quantized.linear_prepack(qweight, None)
    finally:
        torch.backends.quantized.engine = engine


def split_into_digits(x: Tensor) -> tuple[Tensor, Tensor]:
    """Float32 rows ``x`` (M, K) as (``digits`` (DIGITS * M, K), ``per_unit`` (M, 1)):
    integer-valued float32 in [-63, 63], digit row ``d * M + m`` worth ``PLACES[d]`` units
    of row ``m``, so that ``x[m] * per_unit[m] ~= sum_d PLACES[d] * digits[d * M + m]`` to
    half a unit: about 2^-20 of the row's largest |x| (bf16 rounding is 2^-9 of each value)."""
    largest = x.abs().amax(dim=1, keepdim=True).clamp_min_(1e-30)  # a zero row still has units
    per_unit = _UNITS_PER_LARGEST / largest  # (DIGITS, M, 1): 1 / each digit's step
    # x to the nearest multiple of each digit's step. Adding 1.5 * 2^23 leaves no bits below
    # the units (|x * per_unit| < 2^22), so the sum is rounded half to even, like
    # torch.round, in one fused op with the scaling (a third of torch.round's time).
    rounded = torch.addcmul(_ROUNDER, x, per_unit).sub_(_ROUNDER)
    # A digit is what its rounding adds to the coarser one: at most half a coarser step, 63
    # of its own. The coarsest is at most 63 since its step is the row's largest |x| / 63.
    digits = torch.mm(_DIGITS_FROM_ROUNDINGS, rounded.view(DIGITS, -1))
    return digits.view(-1, x.shape[1]), per_unit[-1]


def digit_product(x: Tensor, packed: torch.ScriptObject) -> Tensor:
    """``x @ (int8 * scales).T`` in float32 with fbgemm's integer kernel, ``x`` (M, K)."""
    digits, per_unit = split_into_digits(x.float())
    out = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
        digits, 1.0, _DIGIT_ZERO_POINT, packed
    )
    # The digit rows' products, each exact before fbgemm scales it, summed by place value.
    combined = PLACES @ out.view(DIGITS, -1)
    return combined.view(x.shape[0], -1).div_(per_unit)


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
        # rows -> (key of the weight it was made from, fbgemm's packed weight): fbgemm_weight.
        self._fbgemm: dict[int | None, tuple[tuple, torch.ScriptObject]] = {}

    def kernel(self, flat: Tensor) -> str:
        """Which product computes 2-D input ``flat``: "digits" (fbgemm), "packed"
        (``_weight_int8pack_mm``) or "dequantise" (see the module docstring)."""
        if flat.device.type == "cpu" and flat.shape[0] <= _DIGIT_MAX_ROWS and fbgemm_available():
            return "digits"
        return "packed" if packed_kernel_fits(flat, self.weight) else "dequantise"

    def forward(self, x: Tensor, rows: int | None = None) -> Tensor:
        flat = x.reshape(-1, self.in_features)
        kernel = self.kernel(flat)
        if kernel == "digits":
            out = digit_product(flat, self.fbgemm_weight(rows))
            if x.dtype != torch.float32:
                out = out.to(x.dtype)
        elif kernel == "packed":
            # A new bf16 buffer is aligned and contiguous, as the kernel's loads require.
            if flat.dtype != torch.bfloat16:
                flat = flat.bfloat16()
            elif not flat.is_contiguous() or flat.data_ptr() % 64:
                flat = flat.clone(memory_format=torch.contiguous_format)
            weight, scales = self.weight[:rows], self.bf16_scales[:rows]
            out = torch.ops.aten._weight_int8pack_mm(flat, weight, scales).to(x.dtype)
        else:
            out = F.linear(flat, self.weight[:rows].to(flat.dtype)) * self.scales[:rows]
        if self.bias is not None:
            out = out + self.bias[:rows]
        return out.view(*x.shape[:-1], out.shape[-1])

    def fbgemm_weight(self, rows: int | None = None) -> torch.ScriptObject:
        """fbgemm's packed copy of the first ``rows`` output channels (an int8 copy of that
        slice, made once and again only if the weight or scales are replaced or loaded into)."""
        key = (storage_identity(self.weight), storage_identity(self.scales))
        cached = self._fbgemm.get(rows)
        if cached is None or cached[0] != key:
            packed = fbgemm_pack(self.weight[:rows], self.scales[:rows].float())
            cached = self._fbgemm[rows] = (key, packed)
        return cached[1]

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
    On a CPU with fbgemm the packed weights are made here (seconds for S1-mini), not during
    the first request.
    """
    from .text2semantic.model import FeedForward

    if model.output is None:
        model.output = Int8Linear(model.embeddings.weight)
    for module in model.modules():
        if isinstance(module, FeedForward):
            module.fuse_gate_up()
    _replace_linears(model)
    if fbgemm_available():
        for module in model.modules():
            if isinstance(module, Int8Linear) and module.weight.device.type == "cpu":
                module.fbgemm_weight()
    return model


def quantize(model: DualARTransformer, method: str | None) -> DualARTransformer:
    """Apply the named quantisation (None: leave the model as it is)."""
    if method is None:
        return model
    if method not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, got {method!r}")
    return quantize_int8(model)
