"""Command line compatible with the original ``fish_speech.models.text2semantic.inference``:
text (+ optional reference transcripts and ``.npy`` codes) -> ``codes_0.npy``."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from ..precision import PRECISIONS, QUANTIZATIONS, resolve_dtype
from .api import load_text2semantic


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--text", required=True)
    p.add_argument("--prompt-text", action="append", default=[], help="reference transcript")
    p.add_argument(
        "--prompt-tokens", action="append", default=[], type=Path, help="reference codes .npy"
    )
    p.add_argument("--checkpoint-path", type=Path, default=Path("checkpoints/openaudio-s1-mini"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--half", action="store_true", help="float16 instead of the default dtype")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: bfloat16 on CUDA and on CPUs with native bf16, else float32",
    )
    p.add_argument(
        "--quantize", choices=QUANTIZATIONS, default=None, help="int8 weight-only linears"
    )
    p.add_argument("--compile", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-new-tokens", type=int, default=0, help="0 = until the context is full")
    p.add_argument("--top-p", type=float, default=0.8)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--repetition-penalty", type=float, default=1.1)
    p.add_argument("--output-dir", type=Path, default=Path("."))
    # Accepted for compatibility; the S1 code path ignores them too.
    p.add_argument("--num-samples", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--chunk-length", type=int, default=300, help=argparse.SUPPRESS)
    p.add_argument(
        "--iterative-prompt",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=argparse.SUPPRESS,
    )
    p.add_argument("--no-half", dest="half", action="store_false", help=argparse.SUPPRESS)
    p.add_argument("--no-compile", dest="compile", action="store_false", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if len(args.prompt_text) != len(args.prompt_tokens):
        p.error(
            f"got {len(args.prompt_text)} --prompt-text but {len(args.prompt_tokens)} "
            "--prompt-tokens; give one of each per reference"
        )
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger("text2semantic")
    args = parse_args(argv)

    t0 = time.perf_counter()
    t2s = load_text2semantic(
        args.checkpoint_path,
        device=args.device,
        dtype=torch.float16 if args.half else resolve_dtype(args.device, args.precision),
        compile=args.compile,
        quantize=args.quantize,
    )
    log.info(
        "loaded %s in %.2f s (%s%s)",
        args.checkpoint_path,
        time.perf_counter() - t0,
        str(t2s.dtype).removeprefix("torch."),
        f", {args.quantize} weights" if args.quantize else "",
    )

    references = [np.load(path) for path in args.prompt_tokens]
    t0 = time.perf_counter()
    codes = t2s.generate(
        args.text,
        args.prompt_text,
        references,
        max_new_tokens=args.max_new_tokens,
        top_p=args.top_p,
        temperature=args.temperature,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
    elapsed = time.perf_counter() - t0
    log.info("generated %d frames in %.2f s", codes.shape[1], elapsed)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / "codes_0.npy"
    np.save(out, codes)
    log.info("saved %s", out)


if __name__ == "__main__":
    main()
