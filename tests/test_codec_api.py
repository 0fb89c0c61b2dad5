"""Codec API behaviour: batching, long inputs, preprocessing, validation and configs."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
import torch
from codec_helpers import AUDIO_TOLERANCE, official_state_dict, tiny_codec, vector

from fish_speech.models.dac import Codec, CodecLoadError, load_codec, load_config
from fish_speech.models.dac.model import CodecModel
from fish_speech.models.dac.modules import WNConv1d, WNConvTranspose1d


def test_properties_come_from_config():
    codec = tiny_codec()
    assert codec.sample_rate == 44100
    assert codec.hop_length == 2048
    assert codec.num_codebooks == 4
    assert codec.codebook_sizes == [1280, 1024, 1024, 1024]


def test_builtin_config_is_the_s1_mini_codec():
    cfg = load_config("modded_dac_vq")
    assert cfg.codebook_sizes == [4096] + [1024] * 9
    assert cfg.latent_dim == 1024
    with torch.device("meta"):
        model = CodecModel(cfg)
    assert (model.hop_length, model.max_frames) == (2048, 4096)
    # Parameter count of the spec (section 1), counting each weight-norm g vector.
    weight_norm = (WNConv1d, WNConvTranspose1d)
    g_sizes = sum(m.weight.shape[0] for m in model.modules() if isinstance(m, weight_norm))
    assert sum(p.numel() for p in model.parameters()) + g_sizes == 391_430_530


def test_batches_equal_single_calls():
    codec = tiny_codec()
    wave = vector("test_waveform")
    clips = [(wave, 44100), (wave[:5000], 44100), (wave[10000:40000], 44100)]
    batched = codec.encode_batch(clips)
    for (audio, rate), codes in zip(clips, batched, strict=True):
        np.testing.assert_array_equal(codes, codec.encode(audio, rate))
    assert [c.shape[1] for c in batched] == [33, 3, 15]

    grids = [vector("given_codes"), vector("test_waveform_codes"), vector("clamp_codes")]
    decoded = codec.decode_batch(grids)
    for grid, audio in zip(grids, decoded, strict=True):
        assert audio.shape == (grid.shape[1] * 2048,)
        # Float rounding only: padding changes how the convs block their work (measured
        # up to 1.1e-5 with channels-last planes, 9e-6 before), ten times under parity's 1e-4.
        assert np.abs(audio - codec.decode(grid)).max() <= 2e-5


def test_input_beyond_one_pass_is_chunked():
    # The tiny codec's RoPE tables cover 256 code frames (~11.9 s); 300 frames need chunks.
    codec = tiny_codec()
    assert codec.max_frames == 256
    wave = np.tile(vector("long_waveform"), 2)[: 300 * 2048 - 100]
    short, long = codec.encode_batch([(wave[: 15 * 2048], 44100), (wave, 44100)])
    assert long.shape == (4, 300)
    # Causality: the first window is one ordinary pass, so its prefix equals a short encode.
    np.testing.assert_array_equal(long[:, :15], short)

    grid = np.tile(vector("long_waveform_codes"), 2)[:, :300]
    audio = codec.decode(grid)
    assert audio.shape == (300 * 2048,) and np.isfinite(audio).all()
    head = vector("long_waveform_decoded")
    assert np.abs(audio[: len(head)] - head).max() <= AUDIO_TOLERANCE


def test_stereo_is_averaged_and_other_rates_resampled():
    codec = tiny_codec()
    wave = vector("test_waveform")
    np.testing.assert_array_equal(
        codec.encode(np.stack([wave, wave]), 44100), codec.encode(wave, 44100)
    )
    low = soxr.resample(wave, 44100, 16000)
    expected = codec.encode(soxr.resample(low, 16000, 44100, quality="HQ"), 44100)
    np.testing.assert_array_equal(codec.encode(low, 16000), expected)


@pytest.mark.parametrize(
    ("audio", "rate", "message"),
    [
        (np.zeros(0, np.float32), 44100, "empty"),
        (np.zeros((2, 2, 10), np.float32), 44100, "1-D"),
        (np.zeros(10, np.int16), 44100, "floating"),
        (np.full(10, np.nan, np.float32), 44100, "NaN"),
        (np.zeros(10, np.float32), 0, "positive"),
    ],
)
def test_encode_rejects_bad_audio(audio, rate, message):
    with pytest.raises(ValueError, match=message):
        tiny_codec().encode(audio, rate)


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (np.zeros((3, 5), np.int64), r"shape \(4, frames\)"),
        (np.zeros((4, 0), np.int64), "no frames"),
        (np.zeros((4, 5), np.float32), "integers"),
        (np.array([[0, 1], [2, -3], [0, 0], [0, 0]]), "row 1, frame 1 is -3"),
    ],
)
def test_decode_rejects_bad_grids(codes, message):
    with pytest.raises(ValueError, match=message):
        tiny_codec().decode(codes)


def test_decode_clamps_too_large_codes_like_the_original():
    codec = tiny_codec()
    codes = vector("clamp_codes")
    limits = np.array(codec.codebook_sizes)[:, None] - 1
    assert (codes > limits).any()
    clamped = np.minimum(codes, limits)
    np.testing.assert_array_equal(codec.decode(codes), codec.decode(clamped))
    np.testing.assert_array_equal(codec.decode(codes.astype(np.uint16)), codec.decode(clamped))


def test_unknown_or_missing_config_is_a_load_error(tmp_path):
    with pytest.raises(CodecLoadError, match="unknown codec config name 'nope'"):
        load_config("nope")
    with pytest.raises(CodecLoadError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("encoder_dim: 4\nquantizer: {input_dim: 64}\nfoo: 1\n")
    with pytest.raises(CodecLoadError, match=r"unknown keys \['foo'\]"):
        load_config(bad)


VARIANT_YAML = """
_target_: fish_speech.models.dac.modded_dac.DAC
encoder_dim: 16
encoder_rates: [2, 4, 4]
decoder_dim: 48
decoder_rates: [4, 4, 2]
encoder_transformer_layers: [0, 1, 2]  # widths 64 and 128: one and two heads
transformer_general_config:
  _target_: fish_speech.models.dac.modded_dac.ModelArgs
  _partial_: true
  block_size: 1024  # block 2 sees 8 frames per code frame: 128 code frames
  head_dim: 16
  norm_eps: 1e-5
quantizer:
  _target_: fish_speech.models.dac.rvq.DownsampleResidualVectorQuantize
  input_dim: 128
  n_codebooks: 2
  codebook_size: 100
  codebook_dim: [4, 6]
  semantic_codebook_size: 300
  downsample_factor: [2]
  pre_module:
    _target_: fish_speech.models.dac.modded_dac.WindowLimitedTransformer
    window_size: 16
    input_dim: 128  # != dim, so input/output projections exist
    config: {block_size: 128, n_layer: 2, n_head: 3, dim: 48, intermediate_size: null,
             head_dim: 8, norm_eps: 1e-6}
  post_module: null
"""


def test_other_hyper_parameters_load_from_yaml(tmp_path):
    """A codec of another shape, from a YAML in the original layout, round-trips its file."""
    config = tmp_path / "variant.yaml"
    config.write_text(VARIANT_YAML)
    cfg = load_config(config)
    torch.manual_seed(0)
    model = CodecModel(cfg).eval()
    for name, p in model.named_parameters():
        if name.endswith("gamma") or "norm" in name:
            torch.nn.init.uniform_(p, 0.5, 1.5)
    torch.save({"state_dict": official_state_dict(model)}, tmp_path / "codec.pth")

    codec = load_codec(tmp_path / "codec.pth", config)
    assert codec.codebook_sizes == [300, 100, 100]
    assert codec.hop_length == 64 and codec.max_frames == 128
    wave = vector("test_waveform")[:6000]
    codes = codec.encode(wave, 44100)
    assert codes.shape == (3, 94)
    with torch.inference_mode():
        direct = model.encode(torch.from_numpy(np.pad(wave, (0, 16)))[None, None])[0].numpy()
    np.testing.assert_array_equal(codes, direct)
    grid = np.random.default_rng(1).integers(0, 100, (3, 94))
    audio = codec.decode(grid)
    assert audio.shape == (94 * 64,)
    with torch.inference_mode():
        full = model.decode(torch.from_numpy(grid)[None])[0, 0].numpy()
    assert np.abs(audio - full).max() <= AUDIO_TOLERANCE

    # A lower one-pass limit (to bound memory) chunks with overlapping context. This variant's
    # decoder has no transformer, so 16 frames of context cover its history exactly.
    chunked = Codec(codec.model, max_frames=32)
    assert np.abs(chunked.decode(grid) - full).max() <= AUDIO_TOLERANCE
    np.testing.assert_array_equal(chunked.encode(wave, 44100)[:, :32], direct[:, :32])
