"""Checkpoint loading: the original's key rules and clear errors for broken folders."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from t2s_helpers import REF_TEXT, S1, TEXT, TINY, reference_codes

from fish_speech.models.text2semantic import CheckpointError, load_text2semantic


@pytest.fixture
def ckpt(tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(TINY, folder)
    return folder


def weights(folder) -> dict:
    return torch.load(folder / "model.pth", weights_only=True)


def greedy_codes(t2s) -> np.ndarray:
    return t2s.generate(
        TEXT, [REF_TEXT], [reference_codes()], max_new_tokens=16, top_p=1e-9, repetition_penalty=1
    )


def test_missing_tensor_is_named(ckpt):
    state = weights(ckpt)
    del state["layers.1.feed_forward.w3.weight"]
    torch.save(state, ckpt / "model.pth")
    with pytest.raises(CheckpointError, match=r"missing.*layers\.1\.feed_forward\.w3\.weight"):
        load_text2semantic(ckpt)


def test_wrong_shape_names_key_and_shapes(ckpt):
    state = weights(ckpt)
    state["fast_output.weight"] = state["fast_output.weight"][:-1]
    torch.save(state, ckpt / "model.pth")
    with pytest.raises(CheckpointError, match=r"fast_output\.weight.*\(1279, 64\).*\(1280, 64\)"):
        load_text2semantic(ckpt)


@pytest.mark.parametrize("name", ["tokenizer.tiktoken", "config.json", "model.pth"])
def test_missing_file_is_named(ckpt, name):
    (ckpt / name).unlink()
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        load_text2semantic(ckpt)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_training_wrapper_prefix_audio_keys_and_split_qkv_load(ckpt):
    """state_dict wrapper, "model." prefix, audio_* extras and legacy wq/wk/wv all load."""
    state = weights(ckpt)
    q = 4 * 32  # n_head * head_dim of tiny-s1
    kv = 2 * 32
    wq, wk, wv = state.pop("layers.0.attention.wqkv.weight").split([q, kv, kv])
    state |= {
        "layers.0.attention.wq.weight": wq,
        "layers.0.attention.wk.weight": wk,
        "layers.0.attention.wv.weight": wv,
        "audio_projector.weight": torch.zeros(3),
    }
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}}, ckpt / "model.pth")
    expected = np.load(S1 / "generate_greedy.npz")["codes_generate_long"]
    np.testing.assert_array_equal(
        greedy_codes(load_text2semantic(ckpt, dtype=torch.float32)), expected
    )


def test_unknown_config_key_warns_and_loads(ckpt, caplog):
    config = json.loads((ckpt / "config.json").read_text())
    config["some_future_option"] = 1
    (ckpt / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING):
        t2s = load_text2semantic(ckpt)
    assert "some_future_option" in caplog.text
    assert t2s.num_codebooks == config["num_codebooks"]
    assert t2s.max_seq_len == config["max_seq_len"]


def test_bfloat16_weights_in_file_load_as_float32(ckpt):
    state = {k: v.to(torch.bfloat16) for k, v in weights(ckpt).items()}
    torch.save(state, ckpt / "model.pth")
    t2s = load_text2semantic(ckpt, dtype=torch.float32)
    assert t2s.model.embeddings.weight.dtype == torch.float32


@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 0.15), (torch.float16, 0.02)])
def test_half_precisions_run(dtype, tol):
    t2s = load_text2semantic(TINY, dtype=dtype)
    assert t2s.model.embeddings.weight.dtype == dtype
    ref = np.load(S1 / "forward_with_reference.npz")
    prompt = torch.from_numpy(ref["prompt"]).long()[None]
    n = prompt.shape[-1]
    with torch.inference_mode():
        logits, _ = t2s.model.forward_slow(prompt, torch.arange(n), n, return_all=True)
    assert np.abs(logits[0].float().numpy() - ref["slow_logits"]).max() <= tol
    assert greedy_codes(t2s).shape == (t2s.num_codebooks, 15)


def test_codebook_smaller_than_semantic_range_is_rejected(ckpt):
    config = json.loads((ckpt / "config.json").read_text())
    config["codebook_size"] = 1000  # the tokenizer has 1280 semantic tokens
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="semantic tokens"):
        load_text2semantic(ckpt)
