"""The codec's CPU layouts compute the same layers as PyTorch's plain 1-D ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fish_speech.models.dac.modules import CausalConv1d, CausalConvTranspose1d, Snake1d, to_planes


def _planes(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return layer(to_planes(x)).squeeze(2)


@pytest.mark.parametrize(
    ("kernel", "stride", "bias"),
    [(4, 2, True), (16, 8, True), (2, 2, False), (5, 2, True), (3, 3, True), (7, 3, False)],
)
def test_transposed_conv_matches_conv_transpose1d(kernel, stride, bias):
    torch.manual_seed(kernel * 10 + stride)
    layer = CausalConvTranspose1d(6, 5, kernel, stride, weight_norm=False).eval()
    if not bias:
        layer.conv.bias = None
    x = torch.randn(2, 6, 9)
    full = F.conv_transpose1d(x, layer.conv.weight, layer.conv.bias, stride)
    expected = full[..., : 9 * stride]  # the causal trim keeps stride samples per frame
    assert expected.shape[-1] == full.shape[-1] - (kernel - stride)
    torch.testing.assert_close(_planes(layer, x), expected, atol=1e-5, rtol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_transposed_conv_rebuilds_its_conv_form_when_the_weight_changes():
    torch.manual_seed(0)
    layer = CausalConvTranspose1d(4, 3, 4, 2, weight_norm=False).eval()
    x = torch.randn(1, 4, 7)
    before = _planes(layer, x)
    fresh = CausalConvTranspose1d(4, 3, 4, 2, weight_norm=False)
    layer.load_state_dict(fresh.state_dict())  # copied into the same storage
    after = _planes(layer, x)
    expected = F.conv_transpose1d(x, fresh.conv.weight, fresh.conv.bias, 2)[..., :14]
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(before, after)

    with torch.inference_mode():
        layer = layer.to(torch.float64)  # inference tensors: new storage, new dtype
    doubled = _planes(layer, x.double())
    assert doubled.dtype == torch.float64
    torch.testing.assert_close(doubled, expected.double(), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(("kernel", "dilation"), [(7, 1), (3, 9), (1, 1)])
def test_stride_one_causal_conv_matches_a_left_padded_conv(kernel, dilation):
    torch.manual_seed(kernel + dilation)
    layer = CausalConv1d(5, 4, kernel, dilation=dilation).eval()
    x = torch.randn(2, 5, 11)
    c = layer.conv
    padded = F.pad(x, ((kernel - 1) * dilation, 0))
    expected = F.conv1d(padded, c.weight, c.bias, dilation=dilation)
    torch.testing.assert_close(_planes(layer, x), expected, atol=1e-5, rtol=1e-5)


def test_snake_matches_its_formula():
    torch.manual_seed(1)
    layer = Snake1d(3)
    with torch.no_grad():
        layer.alpha.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 10)
    alpha = layer.alpha
    expected = x + torch.sin(alpha * x) ** 2 / (alpha + 1e-9)
    torch.testing.assert_close(_planes(layer, x), expected, atol=1e-6, rtol=1e-6)
