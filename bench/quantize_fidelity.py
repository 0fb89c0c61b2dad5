"""How far a quantised (or lower-precision) text-to-semantic model strays from float32.

    python bench/quantize_fidelity.py [--checkpoint DIR | --s1-mini] [--candidate int8]
                                      [--dtype float32|bfloat16] [--steps 64]

Both models decode in lockstep: at every step each one makes its greedy decisions (the slow
token, then every residual code) from the same inputs, and the float32 reference's choice is
fed to both, so one early difference does not make every later step differ. Prints JSON: max
|delta| of the slow and fast logits over all steps (with the largest |logit| for scale) and the
share of greedy decisions that are unchanged.

``--checkpoint`` takes an official checkpoint folder (default: the repo's tiny test model);
``--s1-mini`` uses S1-mini-sized random weights (about 5.5 GB at peak). Random weights give
flat logit distributions with many near-ties, so their agreement is a pessimistic figure.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from torch import Tensor

from fish_speech.models.precision import cpu_description
from fish_speech.models.quantize import quantize
from fish_speech.models.text2semantic import load_text2semantic
from fish_speech.models.text2semantic.model import RESIDUAL_CODEBOOK_SIZE, DualARTransformer

TINY = Path(__file__).resolve().parent.parent / "tests" / "data" / "testvectors" / "tiny-s1"
PROMPT_TEXT = "Hello world, this is a fidelity check. 你好，世界！"


def frame_logits(
    model: DualARTransformer, tokens: Tensor, pos: Tensor, codes: list[Tensor] | None = None
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Slow logits (V,), residual-book logits (C-1, K) and the frame's codes for one step.

    Codes are chosen one at a time (each feeds the next book), greedily unless ``codes``
    gives them: that is how the candidate replays the reference's choices.
    """
    c = model.config
    slow, hidden = model.forward_slow(tokens, pos, int(pos[-1]) + 1)
    slow = slow[0, -1].float()
    if codes is None:
        token = slow.argmax()
        semantic = (token >= model.semantic_begin_id) & (token <= model.semantic_end_id)
        codes = [torch.where(semantic, token - model.semantic_begin_id, 0)]
    model.fast_hidden(hidden, 0)
    width = min(RESIDUAL_CODEBOOK_SIZE, c.codebook_size)
    fast = []
    for k in range(1, c.num_codebooks):
        x = model.fast_embeddings(codes[k - 1]).view(1, 1, -1)
        fast.append(model.forward_fast(x, k, width)[0, 0].float())
        if len(codes) == k:
            codes.append(fast[-1].argmax())
    return slow, torch.stack(fast), codes


@torch.inference_mode()
def lockstep(
    reference: DualARTransformer, candidate: DualARTransformer, prompt: Tensor, steps: int
) -> dict:
    """Decode ``steps`` frames greedily with ``reference``; compare ``candidate`` on each."""
    tokens, pos = prompt[None], torch.arange(prompt.shape[-1])
    slow_diff = fast_diff = scale = 0.0
    slow_same = fast_same = fast_total = 0
    for _ in range(steps):
        ref_slow, ref_fast, codes = frame_logits(reference, tokens, pos)
        got_slow, got_fast, _ = frame_logits(candidate, tokens, pos, codes)
        token = ref_slow.argmax()
        slow_diff = max(slow_diff, float((got_slow - ref_slow).abs().max()))
        fast_diff = max(fast_diff, float((got_fast - ref_fast).abs().max()))
        scale = max(scale, float(ref_slow.abs().max()), float(ref_fast.abs().max()))
        slow_same += int(got_slow.argmax() == token)
        fast_same += int((got_fast.argmax(-1) == ref_fast.argmax(-1)).sum())
        fast_total += len(ref_fast)
        tokens = torch.stack([token, *codes]).view(1, -1, 1)
        pos = pos[-1:] + 1
    return {
        "steps": steps,
        "slow_logits_max_abs_diff": round(slow_diff, 5),
        "fast_logits_max_abs_diff": round(fast_diff, 5),
        "logits_max_abs": round(scale, 3),
        "slow_greedy_unchanged": round(slow_same / steps, 4),
        "fast_greedy_unchanged": round(fast_same / fast_total, 4),
        "all_greedy_unchanged": round((slow_same + fast_same) / (steps + fast_total), 4),
    }


def measure(
    candidate: str | None, dtype: torch.dtype, steps: int, checkpoint: Path | None, s1_mini: bool
) -> dict:
    """Figures for ``candidate`` (a quantisation, or None) in ``dtype`` against float32."""
    if s1_mini:
        from s1_mini import S1_MINI, TEXT_VOCAB, build_model  # the bench folder

        # The candidate first: quantising frees its float weights before the reference exists.
        cand = quantize(build_model("cpu", torch.float32, max_seq_len=1024).to(dtype), candidate)
        ref = build_model("cpu", torch.float32, max_seq_len=1024)
        prompt = torch.zeros((S1_MINI["num_codebooks"] + 1, 64), dtype=torch.long)
        prompt[0] = torch.randint(0, TEXT_VOCAB, (64,), generator=torch.Generator().manual_seed(2))
        name = "S1-mini-sized random weights"
    else:
        folder = checkpoint or TINY
        cand = load_text2semantic(folder, dtype=dtype, quantize=candidate).model
        t2s = load_text2semantic(folder, dtype=torch.float32)
        ref, prompt = t2s.model, t2s.build_prompt(PROMPT_TEXT).long()
        name = folder.name
    cand.setup_caches()  # in the candidate's dtype (a cast model keeps float32 RoPE tables)
    return {
        "model": name,
        "reference": "float32",
        "candidate": f"{candidate or 'float'} weights, {str(dtype).removeprefix('torch.')}",
        **cpu_description(),
        **lockstep(ref, cand, prompt, steps),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--checkpoint", type=Path, default=None)
    where.add_argument("--s1-mini", action="store_true")
    p.add_argument("--candidate", choices=["int8", "none"], default="int8")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--steps", type=int, default=64)
    args = p.parse_args()
    candidate = None if args.candidate == "none" else args.candidate
    result = measure(
        candidate, getattr(torch, args.dtype), args.steps, args.checkpoint, args.s1_mini
    )
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
