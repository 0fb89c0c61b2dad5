"""Codec speed on modded_dac_vq-sized random weights; prints JSON with real-time factors.

    python bench/codec.py [--device cpu|cuda] [--seconds 10] [--repeats 3] [--dtype float32]

A real-time factor (RTF) is wall time divided by audio duration: below 1 is faster than real
time. `*_rtf` uses the median run, `*_rtf_best` the fastest. Weights are random, so only
the timings mean anything, not the audio.
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


def _time(fn, repeats: int) -> dict[str, float]:
    """Median and best wall time, and median process CPU time, after one warm-up call.

    The best run is the least disturbed by other processes on a shared machine.
    """
    fn()  # warm-up: allocator and kernel selection
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return {"median": statistics.median(wall), "best": min(wall), "cpu": statistics.median(cpu)}


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

    encode = _time(lambda: codec.encode(audio, codec.sample_rate), args.repeats)
    decode = _time(lambda: codec.decode(codes), args.repeats)
    decoded_seconds = codes.shape[1] * codec.hop_length / codec.sample_rate
    report = {
        "device": args.device,
        "dtype": args.dtype,
        "torch_threads": torch.get_num_threads(),
        "audio_seconds": args.seconds,
        "frames": codes.shape[1],
        "parameters": sum(p.numel() for p in model.parameters()),
        "build_seconds": round(build_s, 2),
    }
    for name, timing, seconds in (
        ("encode", encode, args.seconds),
        ("decode", decode, decoded_seconds),
    ):
        report[f"{name}_seconds"] = round(timing["median"], 3)
        report[f"{name}_cpu_seconds"] = round(timing["cpu"], 3)
        report[f"{name}_rtf"] = round(timing["median"] / seconds, 4)
        report[f"{name}_rtf_best"] = round(timing["best"] / seconds, 4)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
