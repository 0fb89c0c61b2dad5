"""Checkpoint loading: layouts the original accepts, both weight-norm spellings, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from codec_helpers import TINY_CHECKPOINT, TINY_CONFIG, tiny_codec, vector

from fish_speech.models.dac import CodecLoadError, load_codec

CAUSAL = ".parametrizations.weight.original"
LEGACY = (".weight_g", ".weight_v")


@pytest.fixture(scope="module")
def official() -> dict[str, torch.Tensor]:
    return torch.load(TINY_CHECKPOINT, weights_only=True)


def _load(tmp_path, state) -> object:
    path = tmp_path / "codec.pth"
    torch.save(state, path)
    return load_codec(path, TINY_CONFIG)


def test_official_file_uses_both_spellings(official):
    assert any(CAUSAL in key for key in official)
    assert any(key.endswith(LEGACY) for key in official)


def test_swapped_weight_norm_spellings_and_wrappers_load_the_same(tmp_path, official):
    swapped = {}
    for key, tensor in official.items():
        if CAUSAL in key:
            base, index = key.split(CAUSAL)
            swapped[base + LEGACY[int(index)]] = tensor
        elif key.endswith(LEGACY):
            base, leaf = key.rsplit(".", 1)
            swapped[f"{base}{CAUSAL}{int(leaf == 'weight_v')}"] = tensor
        elif not key.endswith(("freqs_cis", "causal_mask")):  # both buffers are optional
            swapped[key] = tensor
    wrapped = {"state_dict": {f"generator.{k}": v for k, v in swapped.items()}}
    wrapped["state_dict"]["discriminator.layer.weight"] = torch.zeros(1)
    codes = vector("given_codes")
    np.testing.assert_allclose(
        _load(tmp_path, wrapped).decode(codes), tiny_codec().decode(codes), atol=1e-6
    )


def test_missing_key_is_named(tmp_path, official):
    doctored = dict(official)
    del doctored["quantizer.quantizer.quantizers.2.codebook.weight"]
    with pytest.raises(CodecLoadError, match=r"1 missing keys: quantizer\.quantizer\.quantizers"):
        _load(tmp_path, doctored)


def test_half_of_a_weight_norm_pair_is_named(tmp_path, official):
    doctored = dict(official)
    del doctored["decoder.model.6.conv.parametrizations.weight.original0"]
    with pytest.raises(CodecLoadError, match=r"decoder\.model\.6\.conv\.parametrizations"):
        _load(tmp_path, doctored)


def test_wrong_shape_is_named(tmp_path, official):
    doctored = dict(official)
    doctored["encoder.block.0.conv.bias"] = torch.zeros(5)
    with pytest.raises(
        CodecLoadError, match=r"encoder\.block\.0\.conv\.bias: checkpoint \(5,\), expected \(4,\)"
    ):
        _load(tmp_path, doctored)


def test_unexpected_key_is_named(tmp_path, official):
    doctored = dict(official, **{"quantizer.quantizer.quantizers.3.codebook.weight": torch.ones(2)})
    with pytest.raises(CodecLoadError, match="unexpected keys: quantizer.quantizer.quantizers.3"):
        _load(tmp_path, doctored)


def test_wrong_config_for_a_checkpoint_fails_clearly():
    with pytest.raises(CodecLoadError, match="does not match config modded_dac_vq"):
        load_codec(TINY_CHECKPOINT)


def test_unreadable_inputs_are_load_errors(tmp_path):
    with pytest.raises(CodecLoadError, match="not found"):
        load_codec(tmp_path / "absent.pth", TINY_CONFIG)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CodecLoadError, match="cannot read"):
        load_codec(junk, TINY_CONFIG)
    with pytest.raises(CodecLoadError, match="unknown codec config name"):
        load_codec(TINY_CHECKPOINT, "modded_dac_vq_tiny")
