"""Text-to-semantic speed: prefill time and decode frames/s on S1-mini-sized random weights
(no checkpoint needed) at batch 1, eager and optionally torch.compile'd, and with --batch
the batched decode step the serving engine runs (frames/s of all rows together).

    python bench/text2semantic.py [--device cpu|cuda] [--dtype float32|bfloat16|float16]
                                  [--quantize int8] [--compare-float32]
                                  [--compile | --compile-only] [--prompt-len 256] [--frames 16]
                                  [--batch 1,8]

``--dtype`` defaults to what the server picks (bfloat16 on CUDA and on CPUs with native bf16,
else float32). ``--compare-float32`` also builds a float32 eager model and alternates its
decode steps with the model under test's (both stay in memory), so both figures share the
run conditions; the speed-up is given from the means and as the median per-step ratio.

Prints one JSON object. One decode step produces one frame (one slow token plus the
residual codes), so frames/s equals the original's "tokens/sec". The bounds divide the
bytes of weights one step must read (slow blocks, output head, the fast blocks once per
codebook, the used rows of the fast head once per residual book) into the measured memory
bandwidth, by a plain streaming sum and by a vector-matrix product.

On CPUs shared with other busy processes, run with OMP_WAIT_POLICY=PASSIVE: busy-waiting
OpenMP threads otherwise stall on descheduled peers and every figure drops several-fold.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
from s1_mini import TEXT_VOCAB, build_model

from fish_speech.models.precision import cpu_description, resolve_dtype
from fish_speech.models.quantize import Int8Linear
from fish_speech.models.text2semantic.generation import (
    SamplingParams,
    decode_rows,
    decode_step,
    exponential,
    stack_params,
)
from fish_speech.models.text2semantic.model import RESIDUAL_CODEBOOK_SIZE, DualARTransformer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def step_weight_bytes(model: DualARTransformer) -> int:
    """Bytes of weights one decode step reads. Embedding tables are only gathered; the fast
    blocks run once per codebook, the fast head (first 1024 rows) once per residual book."""

    def size(module: torch.nn.Module) -> int:
        # The state dict holds float and int8 weights (and scales), never the KV caches.
        return sum(t.nbytes for t in module.state_dict().values())

    c = model.config
    head = model.embeddings if model.output is None else model.output
    slow = size(model.layers) + size(model.norm) + size(head) + size(model.fast_project_in)
    fast = size(model.fast_layers) + size(model.fast_norm)
    rows = min(RESIDUAL_CODEBOOK_SIZE, c.codebook_size)
    fast_head = size(model.fast_output) * rows // c.codebook_size
    return slow + c.num_codebooks * fast + (c.num_codebooks - 1) * fast_head


def _rate(fn, nbytes: int, device: str) -> float:
    fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(5):
        fn()
    sync(device)
    return 5 * nbytes / (time.perf_counter() - t0)


def read_bandwidth(device: str) -> tuple[float, float]:
    """Bytes/s streaming a 1 GiB float32 matrix: by a plain sum (the memory limit) and by a
    vector-matrix product (what decode's matmuls can reach on this machine)."""
    w = torch.ones(2**18, 2**10, device=device)
    x = torch.ones(1, 2**10, device=device)
    return _rate(w.sum, w.nbytes, device), _rate(lambda: F.linear(x, w), w.nbytes, device)


def int8_read_bandwidth(device: str) -> float:
    """Bytes/s of int8 weights that the int8 layers' vector-matrix product streams (512 MiB)."""
    layer = Int8Linear(torch.ones(2**19, 2**10, device=device, dtype=torch.bfloat16))
    x = torch.ones(1, 2**10, device=device, dtype=torch.bfloat16)
    return _rate(lambda: layer(x), layer.weight.nbytes, device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Decoder:
    """One sequence on ``model``: a prefill of ``prompt_len`` random text tokens, then decode
    steps run one at a time by :meth:`step`, so two models can take turns."""

    @torch.inference_mode()
    def __init__(self, model, device: str, prompt_len: int, step_fn, static: bool) -> None:
        c = model.config
        self.model, self.device, self.step_fn, self.static = model, device, step_fn, static
        self.gen = torch.Generator(device=device).manual_seed(1)
        prompt = torch.zeros((1, c.num_codebooks + 1, prompt_len), dtype=torch.long, device=device)
        prompt[0, 0] = torch.randint(
            0, TEXT_VOCAB, (prompt_len,), generator=self.gen, device=device
        )
        self.params = SamplingParams().as_tensors(torch.device(device))
        self.prompt_len = prompt_len
        self.window = torch.zeros((c.num_codebooks + 1, 16), dtype=torch.long, device=device)
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        sync(device)
        t0 = time.perf_counter()
        positions = torch.arange(prompt_len, device=device)
        self.frame = decode_step(
            model, prompt, positions, prompt_len, None, self.params, *self.noise()
        )
        sync(device)
        self.prefill_s = time.perf_counter() - t0

    def noise(self) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.model.config
        width = min(RESIDUAL_CODEBOOK_SIZE, c.codebook_size)
        return exponential(c.vocab_size, self.gen), exponential(
            (c.num_codebooks - 1, width), self.gen
        )

    @torch.inference_mode()
    def step(self) -> None:
        pos = self.prompt_len + len(self.times)
        t0, cpu0 = time.perf_counter(), time.process_time()
        self.frame = self.step_fn(
            self.model,
            self.frame.view(1, -1, 1),
            torch.tensor([pos], device=self.device),
            None if self.static else pos + 1,
            self.window,
            self.params,
            *self.noise(),
        ).clone()
        sync(self.device)
        self.times.append(time.perf_counter() - t0)
        self.cpu_times.append(time.process_time() - cpu0)

    @property
    def warm(self) -> int:
        """Leading steps left out of the figures: compiled ones include compilation."""
        return 2 if self.static else 1

    def summary(self) -> dict:
        steady = self.times[self.warm :]
        # Process CPU time (all threads) is less skewed than wall time by other processes.
        steady_cpu = self.cpu_times[self.warm :]
        return {
            "prefill_tokens": self.prompt_len,
            "prefill_s": round(self.prefill_s, 4),
            "first_step_s": round(self.times[0], 3),
            "decode_frames_timed": len(steady),
            "decode_s_per_frame": round(sum(steady) / len(steady), 4),
            "decode_frames_per_s": round(len(steady) / sum(steady), 3),
            "decode_cpu_s_per_frame": round(sum(steady_cpu) / len(steady_cpu), 4),
        }


def run(model, device: str, prompt_len: int, frames: int, step_fn, static: bool) -> dict:
    decoder = Decoder(model, device, prompt_len, step_fn, static)
    for _ in range(frames):
        decoder.step()
    return decoder.summary()


def run_side_by_side(reference, model, device: str, prompt_len: int, frames: int) -> dict:
    """Eager decode steps of both models in turns, so both meet the same machine conditions
    (on a shared VM the speed drifts within seconds); the speed-up is also given as the
    median of the per-step ratios, which a burst of load on one step barely moves."""
    first = Decoder(reference, device, prompt_len, decode_step, False)
    second = Decoder(model, device, prompt_len, decode_step, False)
    for _ in range(frames):
        first.step()
        second.step()
    ratios = [a / b for a, b in zip(first.times[1:], second.times[1:], strict=True)]
    result = {"float32_eager": first.summary(), "eager": second.summary()}
    result["eager"]["speedup_vs_float32"] = round(
        result["eager"]["decode_frames_per_s"] / result["float32_eager"]["decode_frames_per_s"], 2
    )
    result["eager"]["speedup_vs_float32_median_step"] = round(statistics.median(ratios), 2)
    return result


@torch.inference_mode()
def run_batches(model, device: str, prompt_len: int, frames: int, batches: list[int]) -> dict:
    """Batched decode steps as the serving engine runs them: B sequences of slightly
    different lengths (so each row reads its own prefix through the mask), one step for all."""
    c = model.config
    gen = torch.Generator(device=device).manual_seed(2)
    width = min(RESIDUAL_CODEBOOK_SIZE, c.codebook_size)
    rows = c.num_codebooks + 1
    results = {}
    for batch in batches:
        model.setup_caches(batch, prompt_len + batch + frames + 8)
        params = stack_params([SamplingParams()] * batch, torch.device(device))
        positions = []
        for b in range(batch):
            length = prompt_len + b
            prompt = torch.zeros((1, rows, length), dtype=torch.long, device=device)
            prompt[0, 0] = torch.randint(0, TEXT_VOCAB, (length,), generator=gen, device=device)
            model.forward_slow(prompt, torch.arange(length, device=device), length, rows=b)
            positions.append(length)
        tokens = torch.zeros((batch, rows, 1), dtype=torch.long, device=device)
        windows = torch.zeros((batch, rows, 16), dtype=torch.long, device=device)
        times = []
        for i in range(frames):
            started = time.perf_counter()
            noise_slow = exponential((batch, c.vocab_size), gen)
            noise_fast = exponential((batch, rows - 2, width), gen)
            input_pos = torch.tensor(positions, device=device)[:, None] + i
            frame = decode_rows(
                model,
                tokens,
                input_pos,
                int(input_pos.max()) + 1,
                windows,
                params,
                noise_slow,
                noise_fast,
            )
            tokens = frame[:, :, None]
            sync(device)
            times.append(time.perf_counter() - started)
        steady = times[1:]
        step_s = sum(steady) / len(steady)
        results[str(batch)] = {"step_s": round(step_s, 4), "frames_per_s": round(batch / step_s, 3)}
    base = results[str(batches[0])]["frames_per_s"]
    for entry in results.values():
        entry["speedup"] = round(entry["frames_per_s"] / base, 2)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="default: the server's choice")
    p.add_argument("--quantize", choices=["int8"], default=None, help="int8 weight-only linears")
    p.add_argument(
        "--compare-float32", action="store_true", help="also run float32 eager, side by side"
    )
    p.add_argument("--compile", action="store_true", help="also run the compiled step")
    p.add_argument("--compile-only", action="store_true", help="run only the compiled step")
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--frames", type=int, default=12, help="decode steps to run (>= 4)")
    p.add_argument(
        "--batch",
        default=None,
        help="also time batched decode steps at these batch sizes, e.g. 1,8 (eager)",
    )
    args = p.parse_args()
    dtype = DTYPES[args.dtype] if args.dtype else resolve_dtype(args.device)
    dtype_name = str(dtype).removeprefix("torch.")

    reference = build_model(args.device, torch.float32) if args.compare_float32 else None
    model = build_model(args.device, dtype, args.quantize)
    weight_bytes = step_weight_bytes(model)
    bandwidth, gemv_bandwidth = read_bandwidth(args.device)
    result = {
        "device": args.device,
        "dtype": dtype_name,
        "quantize": args.quantize,
        **(cpu_description() if args.device == "cpu" else {}),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        # Other processes on the same cores slow every figure (busy-waiting OpenMP threads
        # stall on descheduled peers; OMP_WAIT_POLICY=PASSIVE helps); record the load.
        "load_average_1min": round(os.getloadavg()[0], 2),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "weights_read_per_frame_GB": round(weight_bytes / 1e9, 3),
        "read_bandwidth_GBps": round(bandwidth / 1e9, 2),
        "gemv_bandwidth_GBps": round(gemv_bandwidth / 1e9, 2),
        "bandwidth_bound_frames_per_s": round(bandwidth / weight_bytes, 3),
        "gemv_bound_frames_per_s": round(gemv_bandwidth / weight_bytes, 3),
    }
    if args.quantize == "int8":
        # The int8 kernel may stream weights slower than float32's: its own bound.
        int8_bandwidth = int8_read_bandwidth(args.device)
        result["int8_gemv_bandwidth_GBps"] = round(int8_bandwidth / 1e9, 2)
        result["int8_gemv_bound_frames_per_s"] = round(int8_bandwidth / weight_bytes, 3)
    if reference is not None and not args.compile_only:
        result.update(run_side_by_side(reference, model, args.device, args.prompt_len, args.frames))
    elif not args.compile_only:
        result["eager"] = run(model, args.device, args.prompt_len, args.frames, decode_step, False)
    del reference
    if args.compile or args.compile_only:
        compiled = torch.compile(
            decode_step,
            fullgraph=True,
            mode="reduce-overhead" if args.device.startswith("cuda") else None,
        )
        result["compiled"] = run(model, args.device, args.prompt_len, args.frames, compiled, True)
    for mode in ("eager", "compiled"):
        if mode in result:
            fps = result[mode]["decode_frames_per_s"]
            for bound in ("bandwidth", "gemv"):
                result[mode][f"fraction_of_{bound}_bound"] = round(
                    fps / result[f"{bound}_bound_frames_per_s"], 3
                )
    if args.batch:
        batches = [int(b) for b in args.batch.split(",")]
        result["batched"] = run_batches(model, args.device, args.prompt_len, args.frames, batches)
    # Read at the end too: a load that rose during the run explains a disturbed figure.
    result["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
