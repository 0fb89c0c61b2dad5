"""Codec speed on modded_dac_vq-sized random weights; prints JSON with real-time factors.

    python bench/codec.py [--device cpu|cuda] [--seconds 10] [--repeats 3]
                          [--decode-dtype float32 --decode-dtype bfloat16 ...]
                          [--malloc server|default]

A real-time factor (RTF) is wall time divided by audio duration: below 1 is faster than real
time. `*_rtf` uses the median run, `*_rtf_best` the fastest. Weights are random, so only
the timings mean anything, not the audio. The model is float32 and encodes in float32 (as
the server does); `decode_*` is the float32 decode, `decode_<dtype>_*` a decode in another
precision, timed in the same run. By default bfloat16 is added where the server would
decode speech in it (CUDA, CPUs with native bf16). Every call runs on one worker thread,
as the server's inference thread runs them, after the glibc malloc settings the server
makes on the CPU (`--malloc default` leaves glibc's own, to compare).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import torch

from fish_speech.engine.cpu_memory import keep_freed_memory
from fish_speech.models.dac import Codec, load_config
from fish_speech.models.dac.model import CodecModel
from fish_speech.models.precision import cpu_description, resolve_dtype


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
    parser.add_argument(
        "--decode-dtype", action="append", choices=["bfloat16", "float16"], default=None
    )
    parser.add_argument("--malloc", choices=["server", "default"], default="server")
    args = parser.parse_args()
    malloc_tuned = args.malloc == "server" and args.device == "cpu" and keep_freed_memory()
    if args.decode_dtype is None:
        speech = resolve_dtype(args.device)
        args.decode_dtype = [] if speech == torch.float32 else [str(speech).removeprefix("torch.")]

    torch.manual_seed(0)
    build_start = time.perf_counter()
    model = CodecModel(load_config("modded_dac_vq")).eval().requires_grad_(False)
    codec = Codec(model.to(device=args.device))
    for name in args.decode_dtype:
        codec.decode_model(getattr(torch, name))  # the cast copy is made before timing
    build_s = time.perf_counter() - build_start

    rng = np.random.default_rng(0)
    n = int(args.seconds * codec.sample_rate)
    t = np.arange(n) / codec.sample_rate
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    codes = codec.encode(audio, codec.sample_rate)

    inference_thread = ThreadPoolExecutor(1)

    def on_thread(name: str, fn) -> tuple[str, dict[str, float]]:
        return name, inference_thread.submit(_time, fn, args.repeats).result()

    timings = [
        on_thread("encode", lambda: codec.encode(audio, codec.sample_rate)),
        on_thread("decode", lambda: codec.decode(codes)),
    ]
    for name in args.decode_dtype:
        timings.append(
            on_thread(f"decode_{name}", partial(codec.decode, codes, getattr(torch, name)))
        )
    decoded_seconds = codes.shape[1] * codec.hop_length / codec.sample_rate
    report = {
        "device": args.device,
        "dtype": "float32",
        **(cpu_description() if args.device == "cpu" else {}),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "torch_threads": torch.get_num_threads(),
        "malloc": "kept for reuse (server)" if malloc_tuned else "glibc default",
        "audio_seconds": args.seconds,
        "frames": codes.shape[1],
        "parameters": sum(p.numel() for p in model.parameters()),
        "build_seconds": round(build_s, 2),
    }
    for name, timing in timings:
        seconds = args.seconds if name == "encode" else decoded_seconds
        report[f"{name}_seconds"] = round(timing["median"], 3)
        report[f"{name}_cpu_seconds"] = round(timing["cpu"], 3)
        report[f"{name}_rtf"] = round(timing["median"] / seconds, 4)
        report[f"{name}_rtf_best"] = round(timing["best"] / seconds, 4)
    report["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
