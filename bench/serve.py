"""Serving throughput of the Fish engine with continuous batching, through HTTP.

    python bench/serve.py --random-s1-mini [--codec light|full] [--concurrency 1,2,4,8]
                          [--frames 32] [--requests 2] [--max-seq-len N] [--compile]
                          [--latency normal,balanced,low]
    python bench/serve.py --checkpoint checkpoints/openaudio-s1-mini \\
                          --codec-checkpoint checkpoints/openaudio-s1-mini/codec.pth
    python bench/serve.py --url http://127.0.0.1:8080     # a server that is already running

It starts the server (unless --url) with --max-batch-size equal to the highest concurrency,
then at each concurrency C runs C client streams side by side, each sending --requests
streaming /v1/tts requests of one fixed sentence one after another (max_new_tokens =
--frames). Prints one JSON object: per concurrency, ``aggregate_frames_per_s`` (audio frames
of every request over the wall time), ``per_stream_frames_per_s`` and ``ttfa_s`` (time to
the first streamed audio byte; medians over requests), ``requests_per_s``, and what the
engine reports over the same interval: frames per second of its decode steps alone, the
mean batch, the step time, and the shares of the wall time its thread spent decoding,
prefilling and in the codec.

``--random-s1-mini`` writes S1-mini-sized random weights in the official layout to a temp
folder (no download). The server also needs a codec with 10 codebooks:

* ``--codec light`` (default): a small random codec of the modded DAC architecture (the tiny
  test codec's layers with S1's 10 codebooks), so the figures show the text-to-semantic
  engine, which is what batching speeds up;
* ``--codec full``: random weights of the built-in ``modded_dac_vq`` config, the real size.
  On a CPU its decode costs about as long as the audio lasts, runs on the engine thread
  between decode steps, and caps the whole pipeline (``codec_share`` shows by how much).

Random weights almost never sample ``<|im_end|>``, so every request runs to --frames and
the text only sets the prompt length. Audio streams in pieces while a chunk is generated
(the first after as many frames as the request's ``latency`` asks), so ``ttfa_s`` is the
prefill plus the first piece's decode steps and its codec decode; ``--latency`` reports it
per mode.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import torch
from s1_mini import REPO, write_checkpoint

from fish_speech.engine.fish.output import FIRST_PIECE_FRAMES
from fish_speech.models.precision import cpu_name

TEXT = "The old lighthouse keeper climbed the stairs every evening to light the lamp."
HOP = 2048  # audio samples per frame, S1 codec
TINY_CODEC = REPO / "tests" / "data" / "testvectors" / "tiny-codec"


def write_codec(folder: Path, kind: str) -> tuple[Path, str]:
    """A random codec with S1's 10 codebooks: (weights file, config name or path)."""
    from fish_speech.models.dac import load_config
    from fish_speech.models.dac.model import CodecModel

    if kind == "full":
        config: str = "modded_dac_vq"
    else:
        layout = json.loads((TINY_CODEC / "config.json").read_text())
        layout["quantizer"]["n_codebooks"] = 9
        layout["quantizer"]["semantic_codebook_size"] = 4096
        config = str(folder / "codec.json")
        Path(config).write_text(json.dumps(layout))
    torch.manual_seed(0)
    weights = folder / "codec.pth"
    torch.save(CodecModel(load_config(config)).state_dict(), weights)
    gc.collect()
    return weights, config


def start_server(args: argparse.Namespace, workdir: Path) -> tuple[subprocess.Popen, str]:
    if args.random_s1_mini:
        checkpoint = write_checkpoint(workdir / "s1-mini-random")
        codec, codec_config = write_codec(workdir, args.codec)
    else:
        checkpoint, codec = args.checkpoint.resolve(), args.codec_checkpoint.resolve()
        given = Path(args.codec_config)
        codec_config = str(given.resolve()) if given.exists() else args.codec_config
    gc.collect()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    levels = [int(c) for c in args.concurrency.split(",")]
    command = [
        sys.executable, "-m", "tools.api_server",
        "--listen", f"127.0.0.1:{port}",
        "--llama-checkpoint-path", str(checkpoint),
        "--decoder-checkpoint-path", str(codec),
        "--decoder-config-name", str(codec_config),
        "--device", args.device,
        "--max-batch-size", str(max(levels)),
        "--max-queue", str(4 * max(levels)),
    ]  # fmt: skip
    if args.max_seq_len:
        command += ["--max-seq-len", str(args.max_seq_len)]
    if args.compile:
        command.append("--compile")
    command += ["--precision", args.precision]
    if args.quantize:
        command += ["--quantize", args.quantize]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = open(workdir / "server.log", "w")  # stays open as long as the server runs
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited:\n{(workdir / 'server.log').read_text()[-3000:]}")
        try:
            if requests.get(url + "/v1/ready", timeout=1).ok:  # compiled too, with --compile
                return process, url
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("server did not start in time")


def one_request(url: str, frames: int, seed: int, latency: str = "normal") -> dict[str, float]:
    body = {
        "text": TEXT,
        "max_new_tokens": frames,
        "seed": seed,
        "streaming": True,
        "latency": latency,
    }
    started = time.perf_counter()
    first = None
    size = 0
    with requests.post(url + "/v1/tts", json={**body, "format": "pcm"}, stream=True) as response:
        response.raise_for_status()
        for chunk in response.iter_content(chunk_size=None):
            if chunk and first is None:
                first = time.perf_counter() - started
            size += len(chunk)
    total = time.perf_counter() - started
    return {"ttfa_s": first or total, "total_s": total, "frames": size / 2 / HOP}


def engine_load(url: str) -> dict:
    return requests.get(url + "/v1/health").json()["load"]


def run_level(url: str, streams: int, per_stream: int, frames: int) -> dict:
    results: list[dict[str, float]] = []
    lock = threading.Lock()

    def stream(index: int) -> None:
        for r in range(per_stream):
            result = one_request(url, frames, seed=1000 * index + r)
            with lock:
                results.append(result)

    before = engine_load(url)
    started = time.perf_counter()
    threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    after = engine_load(url)

    def delta(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    steps, decoded, decode_s = (
        delta("decode_steps_total"),
        delta("decode_frames_total"),
        delta("decode_seconds_total"),
    )
    total_frames = sum(r["frames"] for r in results)
    return {
        "requests": len(results),
        "frames_per_request": statistics.median(r["frames"] for r in results),
        "wall_s": round(wall, 2),
        "aggregate_frames_per_s": round(total_frames / wall, 3),
        "per_stream_frames_per_s": round(
            statistics.median(r["frames"] / r["total_s"] for r in results), 3
        ),
        "ttfa_s": round(statistics.median(r["ttfa_s"] for r in results), 3),
        "requests_per_s": round(len(results) / wall, 4),
        "engine": {
            "decode_frames_per_s": round(decoded / decode_s, 3) if decode_s else None,
            "mean_batch": round(decoded / steps, 2) if steps else None,
            "step_s": round(decode_s / steps, 4) if steps else None,
            "decode_share": round(decode_s / wall, 3),
            "prefill_share": round(delta("prefill_seconds_total") / wall, 3),
            "codec_share": round(delta("codec_seconds_total") / wall, 3),
        },
    }


def latency_modes(url: str, modes: list[str], frames: int, repeats: int) -> dict:
    """Time to first audio of one stream alone in each latency mode, beside what the engine
    spends to make that first piece: its prefill, the first piece's decode steps and one
    codec decode of that many frames (a request of exactly one piece, timed by the engine)."""
    report = {}
    for mode in modes:
        first = FIRST_PIECE_FRAMES[mode]
        before = engine_load(url)
        ttfa = [one_request(url, frames, seed=r, latency=mode)["ttfa_s"] for r in range(repeats)]
        middle = engine_load(url)
        one_request(url, first + 1, seed=99, latency=mode)  # its last frame is dropped
        after = engine_load(url)

        def delta(key: str, a: dict = middle, b: dict = before) -> float:
            return a.get(key, 0) - b.get(key, 0)

        step_s = delta("decode_seconds_total") / max(1, delta("decode_steps_total"))
        prefill_s = delta("prefill_seconds_total") / max(1, delta("prefills_total"))
        codec_s = delta("codec_seconds_total", after, middle)
        report[mode] = {
            "first_piece_frames": first,
            "ttfa_s": round(statistics.median(ttfa), 3),
            "prefill_s": round(prefill_s, 3),
            "decode_step_s": round(step_s, 4),
            "codec_first_piece_s": round(codec_s, 3),
            # The target set for "low": no later than 10 decode steps and one codec decode.
            "ten_steps_plus_codec_s": round(10 * step_s + codec_s, 3),
        }
    return report


def codec_label(args: argparse.Namespace) -> str | None:
    if args.random_s1_mini:
        return f"random {args.codec}"
    return None if args.url else str(args.codec_config)  # a running server's is unknown


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--random-s1-mini", action="store_true")
    source.add_argument("--checkpoint", type=Path, help="a text-to-semantic checkpoint folder")
    source.add_argument("--url", help="benchmark a running server")
    p.add_argument("--codec", choices=["light", "full"], default="light")
    p.add_argument("--codec-checkpoint", type=Path, help="with --checkpoint")
    p.add_argument("--codec-config", default="modded_dac_vq", help="with --checkpoint")
    p.add_argument("--concurrency", default="1,2,4,8")
    p.add_argument("--frames", type=int, default=32, help="max_new_tokens of each request")
    p.add_argument("--requests", type=int, default=2, help="requests per stream and level")
    p.add_argument(
        "--max-seq-len",
        type=int,
        default=None,
        help="server KV slot length (default: the server's, the checkpoint's context; a short "
        "one once hid a cost that grew with the cache size)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--precision", default="auto", help="the server's --precision")
    p.add_argument("--quantize", default=None, help="the server's --quantize (int8)")
    p.add_argument("--start-timeout", type=float, default=900)
    p.add_argument(
        "--latency",
        default="",
        help="also time the first audio of one stream per latency mode, e.g. normal,balanced,low",
    )
    args = p.parse_args()
    if args.checkpoint and not args.codec_checkpoint:
        p.error("--checkpoint needs --codec-checkpoint")

    with tempfile.TemporaryDirectory() as tmp:
        process, url = (None, args.url) if args.url else start_server(args, Path(tmp))
        try:
            health = requests.get(url + "/v1/health").json()
            caps = health["capabilities"]
            one_request(url, args.frames, seed=0)  # warm-up
            report: dict = {
                "cpu": cpu_name(),
                "device": caps.get("device"),
                "precision": caps.get("precision"),
                "quantization": caps.get("quantization"),
                "threads": caps.get("threads"),
                "torch": torch.__version__,
                "codec": codec_label(args),
                "compile": args.compile,
                "max_batch_size": caps.get("max_batch_size"),
                "context_length": caps.get("context_length"),
                "frames_cap": args.frames,
                "load_average_1min_before": round(os.getloadavg()[0], 2),
                "levels": {},
            }
            for level in (int(c) for c in args.concurrency.split(",")):
                report["levels"][str(level)] = run_level(url, level, args.requests, args.frames)
            levels = report["levels"]
            first, last = levels[min(levels, key=int)], levels[max(levels, key=int)]
            report["speedup_highest_vs_lowest"] = round(
                last["aggregate_frames_per_s"] / first["aggregate_frames_per_s"], 2
            )
            if args.latency:
                modes = args.latency.split(",")
                report["latency"] = latency_modes(url, modes, args.frames, args.requests)
            report["load_average_1min_after"] = round(os.getloadavg()[0], 2)
            print(json.dumps(report, indent=2))
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=60)


if __name__ == "__main__":
    main()
