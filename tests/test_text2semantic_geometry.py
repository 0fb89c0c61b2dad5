"""Other geometries than tiny-s1 (untied head, fast_dim != dim, biases, group of 3, fast
qk-norm, derived sizes): keys follow the spec and the cached model equals a naive,
cache-free re-derivation of the maths."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from t2s_helpers import TEXT, TINY

from fish_speech.models.text2semantic import load_text2semantic
from fish_speech.models.text2semantic.checkpoint import load_config
from fish_speech.models.text2semantic.generation import SamplingParams, decode_step, generate_frames
from fish_speech.models.text2semantic.model import DualARTransformer

CONFIG = {
    "model_type": "dual_ar",
    "vocab_size": 1664,
    "n_layer": 2,
    "n_head": 6,
    "n_local_heads": 2,
    "dim": 48,
    "head_dim": None,  # -> 8
    "intermediate_size": None,  # -> 256
    "rope_base": 10000,
    "norm_eps": 1e-5,
    "max_seq_len": 2200,
    "tie_word_embeddings": False,
    "attention_qkv_bias": True,
    "attention_o_bias": True,
    "attention_qk_norm": False,
    "codebook_size": 1300,
    "num_codebooks": 3,
    "scale_codebook_embeddings": False,
    "n_fast_layer": 1,
    "fast_dim": 32,
    "fast_n_head": 4,
    "fast_n_local_heads": 1,
    "fast_head_dim": 16,
    "fast_intermediate_size": 0,  # falsy -> intermediate_size
    "fast_attention_qk_norm": True,
}


@pytest.fixture(scope="module")
def t2s(tmp_path_factory):
    folder = tmp_path_factory.mktemp("geometry")
    for name in ("tokenizer.tiktoken", "special_tokens.json"):
        shutil.copy(TINY / name, folder / name)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    model = DualARTransformer(load_config(folder), 367, 1646)
    gen = torch.Generator().manual_seed(3)
    state = {k: torch.randn(v.shape, generator=gen) * 0.3 for k, v in model.state_dict().items()}
    torch.save(state, folder / "model.pth")
    return load_text2semantic(folder, dtype=torch.float32)


def test_derived_sizes_and_keys(t2s):
    c = t2s.config
    assert (c.head_dim, c.intermediate_size, c.fast_intermediate_size) == (8, 256, 256)
    keys = t2s.model.state_dict()
    for key, shape in {
        "output.weight": (1664, 48),
        "fast_project_in.weight": (32, 48),
        "fast_project_in.bias": (32,),
        "layers.0.attention.wqkv.weight": ((6 + 2 * 2) * 8, 48),
        "layers.0.attention.wqkv.bias": ((6 + 2 * 2) * 8,),
        "layers.0.attention.wo.weight": (48, 48),
        "layers.0.attention.wo.bias": (48,),
        "fast_layers.0.attention.q_norm.weight": (16,),
        "fast_layers.0.attention.wqkv.weight": ((4 + 2) * 16, 32),
        "fast_layers.0.attention.wo.weight": (32, 64),
        "codebook_embeddings.weight": (3900, 48),
    }.items():
        assert tuple(keys[key].shape) == shape, key
    assert "layers.0.attention.q_norm.weight" not in keys


def naive_rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def naive_block(sd, prefix, x, heads, kv_heads, hd, eps, qk_norm):
    """Full causal attention over x (S, D), with K/V repeat-interleaved per query group."""
    g = lambda name: sd.get(prefix + name)  # noqa: E731
    h = naive_rmsnorm(x, g("attention_norm.weight"), eps)
    qkv = F.linear(h, g("attention.wqkv.weight"), g("attention.wqkv.bias"))
    q, k, v = qkv.split([heads * hd, kv_heads * hd, kv_heads * hd], -1)
    q, k, v = (
        q.unflatten(-1, (heads, hd)),
        k.unflatten(-1, (kv_heads, hd)),
        v.unflatten(-1, (kv_heads, hd)),
    )
    if qk_norm:
        q = naive_rmsnorm(q, g("attention.q_norm.weight"), eps)
        k = naive_rmsnorm(k, g("attention.k_norm.weight"), eps)
    n = x.shape[0]
    inv = 1.0 / (CONFIG["rope_base"] ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.outer(torch.arange(n).float(), inv)
    cos, sin = ang.cos().bfloat16().float()[:, None], ang.sin().bfloat16().float()[:, None]

    def rope(t):
        a, b = t[..., 0::2], t[..., 1::2]
        return torch.stack([a * cos - b * sin, b * cos + a * sin], -1).flatten(-2)

    q, k = rope(q), rope(k)
    k = k.repeat_interleave(heads // kv_heads, dim=1)
    v = v.repeat_interleave(heads // kv_heads, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
    scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    y = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).flatten(-2)
    x = x + F.linear(y, g("attention.wo.weight"), g("attention.wo.bias"))
    h = naive_rmsnorm(x, g("ffn_norm.weight"), eps)
    ff = F.linear(
        F.silu(F.linear(h, g("feed_forward.w1.weight"))) * F.linear(h, g("feed_forward.w3.weight")),
        g("feed_forward.w2.weight"),
    )
    return x + ff


def test_cached_model_equals_naive_maths(t2s):
    c, sd = t2s.config, t2s.model.state_dict()
    codes = np.random.default_rng(0).integers(0, 1024, (3, 5))
    prompt = t2s.build_prompt(TEXT, ["Ref."], [codes])
    tokens = prompt.long()
    semantic = (tokens[0] >= 367) & (tokens[0] <= 1646)
    offsets = torch.arange(3)[:, None] * c.codebook_size
    cb = sd["codebook_embeddings.weight"][tokens[1:] + offsets].sum(0)
    x = sd["embeddings.weight"][tokens[0]] + cb * semantic[:, None]
    for i in range(c.n_layer):
        x = naive_block(sd, f"layers.{i}.", x, 6, 2, 8, c.norm_eps, False)
    logits = F.linear(naive_rmsnorm(x, sd["norm.weight"], c.norm_eps), sd["output.weight"])

    n = tokens.shape[1]
    with torch.inference_mode():
        got, hidden = t2s.model.forward_slow(tokens[None], torch.arange(n), n, return_all=True)
    assert (got[0] - logits).abs().max() <= 1e-4

    # Fast transformer: the sequence [project_in(h), e(c0), e(c1)] in one causal pass.
    frame = [5, 7]
    fast_in = torch.stack(
        [F.linear(x[-1], sd["fast_project_in.weight"], sd["fast_project_in.bias"])]
        + [sd["fast_embeddings.weight"][code] for code in frame]
    )
    y = naive_block(sd, "fast_layers.0.", fast_in, 4, 1, 16, c.norm_eps, True)
    expected = F.linear(
        naive_rmsnorm(y, sd["fast_norm.weight"], c.norm_eps), sd["fast_output.weight"]
    )
    with torch.inference_mode():
        model = t2s.model
        model.fast_hidden(hidden[:, -1:], 0)
        for k in (1, 2):
            e = model.fast_embeddings(torch.tensor([frame[k - 1]])).view(1, 1, -1)
            assert (model.forward_fast(e, k)[0, 0] - expected[k]).abs().max() <= 1e-4


def test_eager_and_static_paths_generate_the_same(t2s):
    prompt = t2s.build_prompt(TEXT)
    kwargs = dict(
        im_end_id=t2s.tokenizer.im_end_id,
        max_new_tokens=12,
        params=SamplingParams(top_p=1e-9, repetition_penalty=1.3),
        noise=lambda shape: torch.ones(shape),
    )
    eager = generate_frames(t2s.model, prompt, **kwargs)
    static = generate_frames(t2s.model, prompt, compiled_step=decode_step, **kwargs)
    assert torch.equal(eager, static)
    codes = t2s.generate(TEXT, max_new_tokens=12, seed=1)
    assert codes.shape[0] == 3 and codes.shape[1] <= 11
