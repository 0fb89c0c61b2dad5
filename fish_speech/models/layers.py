"""Layers both models use, written once."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        # Rounded to the activation dtype before the weight, as the original does.
        return normed.type_as(x) * self.weight


def storage_identity(t: Tensor) -> tuple[int, int]:
    """Storage and in-place write count of a tensor, to key a cache derived from it. Inference
    tensors count no writes, so only new storage (a cast, move or assigning load) is seen
    for them."""
    return t.data_ptr(), -1 if t.is_inference() else t._version
