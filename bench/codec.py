"""Codec speed on modded_dac_vq-sized random weights; prints JSON with real-time factors.

    python bench/codec.py [--device cpu|cuda] [--seconds 10] [--repeats 3] [--dtype float32]

A real-time factor (RTF) is processing time divided by audio duration: below 1 is faster than
real time. Weights are random, so only the timings mean anything, not the audio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from fish_speech.models.dac import Codec, load_config
from fish_speech.models.dac.model import CodecModel


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: allocator and kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args()

    torch.manual_seed(0)
    build_start = time.perf_counter()
    model = CodecModel(load_config("modded_dac_vq")).eval().requires_grad_(False)
    codec = Codec(model.to(device=args.device, dtype=getattr(torch, args.dtype)))
    build_s = time.perf_counter() - build_start

    rng = np.random.default_rng(0)
    n = int(args.seconds * codec.sample_rate)
    t = np.arange(n) / codec.sample_rate
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    codes = codec.encode(audio, codec.sample_rate)

    encode_s = _median_seconds(lambda: codec.encode(audio, codec.sample_rate), args.repeats)
    decode_s = _median_seconds(lambda: codec.decode(codes), args.repeats)
    decoded_seconds = codes.shape[1] * codec.hop_length / codec.sample_rate
    print(
        json.dumps(
            {
                "device": args.device,
                "dtype": args.dtype,
                "torch_threads": torch.get_num_threads(),
                "audio_seconds": args.seconds,
                "frames": codes.shape[1],
                "parameters": sum(p.numel() for p in model.parameters()),
                "build_seconds": round(build_s, 2),
                "encode_seconds": round(encode_s, 3),
                "decode_seconds": round(decode_s, 3),
                "encode_rtf": round(encode_s / args.seconds, 4),
                "decode_rtf": round(decode_s / decoded_seconds, 4),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
