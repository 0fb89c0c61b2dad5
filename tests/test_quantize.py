"""int8 weight-only quantisation: the kernels' arithmetic, the transform on tied and untied
models, and fidelity to float32 within the bounds the README documents."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from t2s_helpers import TEXT, TINY
from torch import nn

from fish_speech.models.quantize import (
    Int8Linear,
    packed_kernel_fits,
    quantize,
    quantize_per_channel,
)
from fish_speech.models.text2semantic import DualARConfig, DualARTransformer, load_text2semantic
from fish_speech.models.text2semantic.model import FeedForward, Head

# Documented in README "Performance" (measured on tiny-s1: int8 up to 0.10 slow / 0.16 fast,
# with logits up to 3.7; about 98 % of 64 steps' greedy decisions unchanged).
LOGIT_BOUND = 0.25
GREEDY_UNCHANGED_MIN = 0.9


def _fidelity_bench():
    """bench/quantize_fidelity.py, which prints the documented figures: one measurement."""
    path = Path(__file__).resolve().parent.parent / "bench" / "quantize_fidelity.py"
    spec = importlib.util.spec_from_file_location("quantize_fidelity", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_per_channel_round_trip_and_zero_rows():
    weight = torch.randn(5, 40) * torch.tensor([1.0, 1e-3, 0.0, 7.0, 0.5])[:, None]
    q, scales = quantize_per_channel(weight)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    assert torch.equal(q[2], torch.zeros(40, dtype=torch.int8)) and scales[2] == 1
    # Round to nearest: every weight within half a step of its row's grid.
    assert ((q.float() * scales[:, None] - weight).abs() <= scales[:, None] / 2 + 1e-7).all()
    assert torch.equal(scales, scales.bfloat16().float())  # the bf16 kernel reads them exactly


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("in_features, batch", [(64, 1), (64, 3), (64, 40), (33, 1), (8, 3)])
def test_int8_linear_computes_the_dequantised_product(dtype, in_features, batch):
    """Every path (the packed kernel, with bf16 inputs, for short inputs with K % 16 == 0;
    dequantising otherwise) computes x @ (int8 * scale).T + bias, also for a leading-rows
    slice: exactly up to float32 rounding, or to bf16 rounding when bf16 is involved."""
    gen = torch.Generator().manual_seed(in_features + batch)
    weight = torch.randn(48, in_features, generator=gen).to(dtype)
    bias = torch.randn(48, generator=gen).to(dtype)
    layer = Int8Linear(weight, bias)
    x = torch.randn(2, batch, in_features, generator=gen).to(dtype)
    dequantised = layer.weight.float() * layer.scales.float()[:, None]
    expected = x.float() @ dequantised.T + bias.float()
    packed = packed_kernel_fits(x.reshape(-1, in_features), layer.weight)
    assert packed == (in_features % 16 == 0 and batch * 2 <= 8)
    exact = dtype == torch.float32 and not packed
    tol = 1e-4 if exact else 0.02 * expected.abs().max()
    assert (layer(x).float() - expected).abs().max() <= tol
    assert layer(x, rows=16).shape == (2, batch, 16)
    assert (layer(x, rows=16).float() - expected[..., :16]).abs().max() <= tol


def test_tied_model_quantises_every_linear_and_keeps_the_embedding():
    float_model = load_text2semantic(TINY, dtype=torch.float32).model
    model = load_text2semantic(TINY, dtype=torch.float32, quantize="int8").model
    assert float_model.config.tie_word_embeddings and float_model.output is None
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert isinstance(model.output, Int8Linear) and isinstance(model.fast_output, Int8Linear)
    # The lookup still reads the float table, not the int8 head.
    assert torch.equal(model.embeddings.weight, float_model.embeddings.weight)
    tokens = torch.randint(0, 1280, (1, 5, 7))
    assert torch.equal(model.embed(tokens), float_model.embed(tokens))


def _untied_model(dim: int) -> DualARTransformer:
    """Untied heads, biases, a fast projection and widths that are not multiples of 16."""
    config = DualARConfig(
        vocab_size=300,
        n_layer=1,
        n_head=2,
        n_local_heads=1,
        dim=dim,
        head_dim=16,
        max_seq_len=32,
        tie_word_embeddings=False,
        attention_qkv_bias=True,
        attention_o_bias=True,
        codebook_size=40,
        num_codebooks=3,
        n_fast_layer=1,
        fast_dim=24,
        fast_n_head=2,
        fast_head_dim=12,
    )
    model = DualARTransformer(config, 100, 139).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(dim)
    for p in model.parameters():
        p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    model.setup_caches()
    return model


def test_untied_model_with_biases_and_odd_widths():
    reference = _untied_model(40)
    model = quantize(_untied_model(40), "int8")
    assert isinstance(model.output, Int8Linear) and not isinstance(model.output, Head)
    assert isinstance(model.fast_project_in, Int8Linear) and model.fast_project_in.bias is not None
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    prompt = torch.zeros((4, 6), dtype=torch.long)
    fidelity = _fidelity_bench().lockstep(reference, model, prompt, 8)
    assert fidelity["slow_logits_max_abs_diff"] <= 0.05 * fidelity["logits_max_abs"]
    assert fidelity["fast_logits_max_abs_diff"] <= 0.05 * fidelity["logits_max_abs"]


def test_fused_gate_up_computes_the_same_feed_forward():
    """fuse_gate_up (the int8 transform's first step) stacks w1 over w3; swapping them or
    splitting the product at the wrong row would change the output."""
    ff = FeedForward(24, 40).requires_grad_(False)
    x = torch.randn(3, 2, 24)
    expected = ff(x)
    ff.fuse_gate_up()
    assert not hasattr(ff, "w1") and ff.w13.weight.shape == (80, 24)
    torch.testing.assert_close(ff(x), expected)
    quantised = quantize(_untied_model(32), "int8")
    assert all(isinstance(layer.feed_forward.w13, Int8Linear) for layer in quantised.layers)


def test_unknown_quantisation_is_refused():
    with pytest.raises(ValueError, match="int8"):
        quantize(_untied_model(32), "int4")


@pytest.fixture
def one_thread():
    """The tiny model's ops are too small to share: a second OpenMP thread only adds
    synchronisation, which costs seconds when other processes hold the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiny_checkpoint_fidelity_within_documented_bounds(dtype, one_thread):
    figures = _fidelity_bench().measure("int8", dtype, 64, TINY, s1_mini=False)
    assert figures["slow_logits_max_abs_diff"] <= LOGIT_BOUND
    assert figures["fast_logits_max_abs_diff"] <= LOGIT_BOUND
    assert figures["all_greedy_unchanged"] >= GREEDY_UNCHANGED_MIN


def test_quantised_model_generates():
    t2s = load_text2semantic(TINY, quantize="int8")
    assert t2s.quantization == "int8"
    codes = t2s.generate(TEXT, max_new_tokens=8, seed=3)
    assert codes.shape[0] == t2s.num_codebooks and 0 < codes.shape[1] <= 7
    assert codes.min() >= 0
