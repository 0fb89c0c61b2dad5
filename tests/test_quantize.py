"""int8 weight-only quantisation: the kernels' arithmetic, the transform on tied and untied
models, and fidelity to float32 within the bounds the README documents."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from t2s_helpers import TEXT, TINY
from torch import nn

import fish_speech.models.quantize as quantize_module
from fish_speech.models.quantize import (
    DIGIT_RADIX,
    PLACES,
    Int8Linear,
    fbgemm_available,
    quantize,
    quantize_per_channel,
    split_into_digits,
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


needs_fbgemm = pytest.mark.skipif(not fbgemm_available(), reason="torch built without fbgemm")


@pytest.fixture(params=["fbgemm", "no fbgemm"])
def fbgemm(request, monkeypatch) -> bool:
    """Both CPU dispatches: with fbgemm's integer kernel (x86 builds) and without (ARM)."""
    if request.param == "fbgemm":
        if not fbgemm_available():
            pytest.skip("torch built without fbgemm")
        return True
    monkeypatch.setattr(quantize_module, "fbgemm_available", lambda: False)
    return False


def test_split_into_digits_reconstructs_each_row_to_half_a_unit():
    gen = torch.Generator().manual_seed(0)
    magnitudes = torch.tensor([1.0, 1e-6, 0.0, 3e4, 0.5])[:, None]
    x = torch.randn(5, 96, generator=gen) * magnitudes
    x[4, 7] = 40.0  # one outlier: the rest of its row rides on the finer digits
    digits, per_unit = split_into_digits(x)
    assert digits.shape == (3 * 5, 96) and per_unit.shape == (5, 1)
    assert torch.equal(digits, digits.round()) and digits.abs().max() <= 63
    assert torch.isfinite(per_unit).all() and torch.equal(digits[2::5], torch.zeros(3, 96))
    # Exact in float64: the digits' place-value sum is x in units, rounded to the nearest.
    units = (PLACES.double() @ digits.double().view(3, -1)).view(5, 96)
    assert ((units - x.double() * per_unit.double()).abs() <= 0.5 + 1e-3).all()
    # Half a unit is 2^-20 of a row's largest |x|: far finer than bf16's 2^-9 of each value.
    assert (per_unit[:, 0] * x.abs().amax(dim=1) >= 63 * DIGIT_RADIX**2 * 0.99)[
        x.abs().amax(dim=1) > 0
    ].all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("in_features, batch", [(64, 1), (64, 3), (64, 40), (33, 1), (8, 3)])
def test_int8_linear_computes_the_dequantised_product(dtype, in_features, batch, fbgemm):
    """Every CPU path (fbgemm's with digit rows for up to 32 input rows; else the packed
    kernel, with bf16 inputs, for up to 8 rows with K % 16 == 0; else dequantising) computes
    x @ (int8 * scale).T + bias, also for a leading-rows slice: to float32 rounding when
    dequantising, within the digits' rounding bound, or to bf16 rounding where bf16 is
    involved."""
    gen = torch.Generator().manual_seed(in_features + batch)
    weight = torch.randn(48, in_features, generator=gen).to(dtype)
    bias = torch.randn(48, generator=gen).to(dtype)
    layer = Int8Linear(weight, bias)
    x = torch.randn(2, batch, in_features, generator=gen).to(dtype)
    dequantised = layer.weight.float() * layer.scales.float()[:, None]
    expected = x.float() @ dequantised.T + bias.float()
    kernel = layer.kernel(x.reshape(-1, in_features))
    if fbgemm and batch * 2 <= 32:
        assert kernel == "digits"
    elif in_features % 16 == 0 and batch * 2 <= 8:
        assert kernel == "packed"
    else:
        assert kernel == "dequantise"
    if dtype == torch.bfloat16 or kernel == "packed":
        tol = 0.02 * expected.abs().max()
    elif kernel == "digits":
        # Half a unit per activation (2^-20 of the row's largest) times each output's weights.
        unit = x.abs().amax() / (2 * 63 * DIGIT_RADIX**2)
        tol = unit * dequantised.abs().sum(dim=1).max() + 1e-5
    else:
        tol = 1e-4
    assert (layer(x).float() - expected).abs().max() <= tol
    assert layer(x, rows=16).shape == (2, batch, 16)
    assert (layer(x, rows=16).float() - expected[..., :16]).abs().max() <= tol


@needs_fbgemm
def test_fbgemm_copy_follows_loaded_and_cast_weights():
    """fbgemm computes from its own packed copy: replacing the weights must remake it."""
    gen = torch.Generator().manual_seed(5)
    layer = Int8Linear(torch.randn(32, 64, generator=gen))
    other = Int8Linear(torch.randn(32, 64, generator=gen) * 3)
    x = torch.randn(1, 64, generator=gen)
    first = layer(x)
    with torch.inference_mode():
        layer.load_state_dict(other.state_dict())
        assert torch.allclose(layer(x), other(x), atol=1e-4)
        assert not torch.allclose(layer(x), first, atol=1e-2)
    assert torch.allclose(layer(x, rows=8), other(x)[:, :8], atol=1e-4)
    # A cast replaces the scales: the same weights, with the output rounded to bf16.
    layer.to(torch.bfloat16)
    x = x.bfloat16()
    assert torch.allclose(layer(x).float(), other(x.float()), rtol=2**-8, atol=1e-3)


@needs_fbgemm
def test_quantize_packs_fbgemm_weights_before_the_first_request():
    model = quantize(_untied_model(64), "int8")
    layers = [m for m in model.modules() if isinstance(m, Int8Linear)]
    assert layers and all(None in layer._fbgemm for layer in layers)


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
