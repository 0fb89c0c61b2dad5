"""Forward parity with the original on the tiny checkpoint (float32, CPU)."""

import json

import numpy as np
import pytest
import torch
from t2s_helpers import LOGIT_TOL, S1, max_diff, tiny


def slow_forward(tokens: np.ndarray):
    """Prefill every position of ``tokens`` (C+1, T) from position 0; all positions' outputs."""
    model = tiny().model
    t = torch.from_numpy(tokens).long()[None]
    layer_outs = []
    hooks = [
        layer.register_forward_hook(lambda _m, _i, out: layer_outs.append(out[0]))
        for layer in model.layers
    ]
    try:
        with torch.inference_mode():
            embed = model.embed(t)[0]
            n = t.shape[-1]
            logits, hidden = model.forward_slow(t, torch.arange(n), n, return_all=True)
    finally:
        for h in hooks:
            h.remove()
    return embed, logits[0], hidden[0], torch.stack(layer_outs)


def fast_logits(hidden: torch.Tensor, frame) -> np.ndarray:
    """Teacher-forced fast logits (C, K) for one frame, driven as the original generator."""
    model = tiny().model
    with torch.inference_mode():
        out = [model.forward_fast(hidden.view(1, 1, -1), 0)]
        for k in range(1, len(frame)):
            code = torch.tensor([int(frame[k - 1])])
            out.append(model.forward_fast(model.fast_embeddings(code).view(1, 1, -1), k))
    return torch.cat(out, dim=1)[0].numpy()


@pytest.mark.parametrize("name", ["forward_text_only", "forward_with_reference"])
def test_slow_forward_matches_original(name):
    ref = np.load(S1 / f"{name}.npz")
    embed, logits, hidden, layers = slow_forward(ref["prompt"])
    assert max_diff(embed, ref["slow_embed"]) <= LOGIT_TOL
    assert max_diff(layers, ref["slow_layer_out"]) <= LOGIT_TOL
    assert max_diff(hidden, ref["slow_hidden"]) <= LOGIT_TOL
    assert max_diff(logits, ref["slow_logits"]) <= LOGIT_TOL


@pytest.mark.parametrize("name", ["forward_text_only", "forward_with_reference"])
def test_fast_forward_matches_original(name):
    ref = np.load(S1 / f"{name}.npz")
    _, _, hidden, _ = slow_forward(ref["prompt"])
    got = fast_logits(hidden[-1], ref["fast_frame_last"])
    assert max_diff(got, ref["fast_logits_last"]) <= LOGIT_TOL
    if "fast_ref_positions" in ref:
        for pos, frame, expected in zip(
            ref["fast_ref_positions"], ref["fast_ref_frames"], ref["fast_ref_logits"], strict=True
        ):
            assert max_diff(fast_logits(hidden[pos], frame), expected) <= LOGIT_TOL


@pytest.mark.parametrize("run", ["greedy", "greedy_rep1.1", "sampled"])
def test_teacher_forced_step_logits_match(run):
    ref = np.load(S1 / f"generate_{run}.npz")
    y, frames = ref["y"], ref["frames"]
    prompt_len, steps = ref["prompt"].shape[1], frames.shape[1]
    _, logits, hidden, _ = slow_forward(y[:, : prompt_len + steps - 1])
    assert max_diff(logits[prompt_len - 1 :], ref["slow_logits_tf"]) <= LOGIT_TOL
    assert max_diff(hidden[prompt_len - 1 :], ref["slow_hidden_tf"]) <= LOGIT_TOL
    for i in range(steps):
        got = fast_logits(hidden[prompt_len - 1 + i], frames[1:, i])
        assert max_diff(got, ref["fast_logits_tf"][i]) <= LOGIT_TOL


def test_static_cache_path_matches_prefix_path():
    """kv_len=None (full cache + mask, used when compiled) equals the sliced-prefix path."""
    model = tiny().model
    prompt = torch.from_numpy(np.load(S1 / "prompt_with_reference.npy")).long()[None]
    n = prompt.shape[-1]
    with torch.inference_mode():
        sliced, _ = model.forward_slow(prompt, torch.arange(n), n, return_all=True)
        static, _ = model.forward_slow(prompt, torch.arange(n), None, return_all=True)
        step_sliced, _ = model.forward_slow(prompt[..., -1:], torch.tensor([n]), n + 1)
        step_static, _ = model.forward_slow(prompt[..., -1:], torch.tensor([n]), None)
    assert max_diff(sliced, static) <= 1e-5
    assert max_diff(step_sliced, step_static) <= 1e-5


def test_state_dict_keys_and_shapes_are_the_originals():
    expected = json.loads((S1 / "tiny_s1_state_dict_keys.json").read_text())
    state = tiny().model.state_dict()
    assert sorted(state) == sorted(expected)
    for key, info in expected.items():
        assert list(state[key].shape) == info["shape"], key
