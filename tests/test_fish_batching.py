"""Continuous batching in the Fish engine, in-process on the tiny checkpoint: batched rows give
the codes each request gives alone, whatever joins or leaves the batch, and the engine's
admission, cancellation and failure rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from t2s_helpers import REF_TEXT, S1, TEXT, TINY, reference_codes, run_json

from conftest import TESTVECTORS
from fish_speech.engine.base import EngineBusy, EngineFailure, SynthesisRequest
from fish_speech.engine.fish import FishEngine
from fish_speech.engine.fish.kv_slots import SlotPool
from fish_speech.engine.fish.loop import EngineLoop
from fish_speech.engine.fish.model_runner import ModelRunner
from fish_speech.engine.fish.prompts import ContextPrompts
from fish_speech.engine.fish.scheduler import Scheduler
from fish_speech.engine.fish.sequence import FixedPrompts, Sequence, Status
from fish_speech.engine.sinks import BlockingSink
from fish_speech.models.dac import load_codec
from fish_speech.models.text2semantic import SamplingParams, load_text2semantic
from fish_speech.models.text2semantic.generation import decode_rows
from fish_speech.utils.cancel import Cancelled, CancelToken

GREEDY = 1e-9  # top_p that keeps only the best entry


@pytest.fixture(scope="module")
def t2s():
    """A tiny model with 6 KV slots (its own, so other tests' slot 0 is not disturbed), in
    float32: exact row-by-row equality is the float32 promise (bf16 logits tie too often)."""
    return load_text2semantic(TINY, dtype=torch.float32, cache_slots=6)


@pytest.fixture(scope="module")
def alone():
    return load_text2semantic(TINY, dtype=torch.float32)


class CodesOutput:
    """Output stage that sends each chunk's codes instead of decoding them to audio (and,
    like the audio stage, nothing for a chunk without frames)."""

    def frames_added(self, seq: Sequence) -> None:
        if seq.state.finished and seq.state.frames().shape[1] > 1:
            seq.sink.put(seq.state.frames()[1:, :-1].numpy().astype(np.int32))

    def flush(self) -> None:
        pass


class Harness:
    """The engine loop driven step by step on this thread."""

    def __init__(self, t2s, slots: int = 6, max_queue: int = 8) -> None:
        self.t2s = t2s
        self.scheduler = Scheduler(SlotPool(t2s.model, slots), max_queue)
        self.loop = EngineLoop(self.scheduler, ModelRunner(t2s), CodesOutput())

    def add(self, prompt, max_new_tokens: int, seed=None, cancel=None, **settings) -> BlockingSink:
        sink = BlockingSink()
        params = SamplingParams(**settings)
        seq = Sequence(
            FixedPrompts([prompt]),
            params,
            max_new_tokens,
            seed,
            cancel or CancelToken(),
            sink,
            self.t2s.device,
        )
        self.scheduler.add(seq, self.scheduler.reserve(bounded=True))
        return sink

    def step(self, times: int = 1) -> None:
        for _ in range(times):
            self.loop.step()

    def run(self) -> None:
        while self.scheduler.waiting or self.scheduler.running:
            self.loop.step()


def replayed_noise(run: str):
    """The original's recorded noise for a run, served in draw order (slow, then fast)."""
    ref = np.load(S1 / f"generate_{run}.npz")
    draws = iter(zip(ref["noise_slow"], ref["noise_fast"], strict=True))
    return lambda *_: tuple(torch.from_numpy(n) for n in next(draws))


# Mixed prompt lengths and settings, all greedy: rows must match batch 1 exactly.
GREEDY_CASES = [
    ("Hi.", 30, {"temperature": 0.8, "repetition_penalty": 1.0}),
    ("A rather longer sentence, so the prompts differ in length.", 24, {"temperature": 0.3}),
    ("Third one here.", 40, {"temperature": 1.0, "repetition_penalty": 1.4}),
    ("你好，世界！", 20, {"repetition_penalty": 0.9}),
    ("Five.", 36, {"temperature": 0.5, "repetition_penalty": 1.1}),
]


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_greedy_batch_rows_match_batch_one(t2s, alone, batch):
    harness = Harness(t2s)
    sinks = [
        harness.add(t2s.build_prompt(text), n, top_p=GREEDY, **settings)
        for text, n, settings in GREEDY_CASES[:batch]
    ]
    harness.run()
    for (text, n, settings), sink in zip(GREEDY_CASES, sinks, strict=False):
        expected = alone.generate(text, max_new_tokens=n, top_p=GREEDY, **settings)
        np.testing.assert_array_equal(next(iter(sink)), expected)


def test_recorded_parity_runs_hold_inside_a_batch(t2s):
    """The original's three recorded runs (greedy, greedy with penalty, sampled with its
    noise replayed), decoded side by side with two other requests."""
    harness = Harness(t2s)
    prompt = t2s.build_prompt(TEXT, [REF_TEXT], [reference_codes()])
    harness.add(t2s.build_prompt("Some other text to share the batch."), 40, seed=1)
    sinks = {}
    for run in ["greedy", "greedy_rep1.1", "sampled"]:
        frames = np.load(S1 / f"generate_{run}.npz")["frames"].shape[1]
        sinks[run] = harness.add(prompt, frames, seed=0, **run_json(run)["settings"])
        if run == "sampled":  # greedy runs pick the best entry whatever the noise
            harness.scheduler.waiting[-1].draw_noise = replayed_noise(run)
    harness.add(t2s.build_prompt("Short."), 12, seed=2, top_p=0.9)
    harness.run()
    for run, sink in sinks.items():
        expected = np.load(S1 / f"generate_{run}.npz")["codes_generate_long"]
        np.testing.assert_array_equal(next(iter(sink)), expected)


def test_same_seed_gives_the_same_codes_alone_and_in_a_batch(t2s, alone):
    """Sampled rows draw from their own generators. Float rounding of batched matmuls could
    in principle flip a draw at a near-tie; on these weights every code holds exactly."""
    cases = [("Hello there.", 7, 0.8, 0.8), ("Other words.", 8, 0.6, 0.95), ("Hi.", 9, 1.0, 0.5)]
    harness = Harness(t2s)
    sinks = [
        harness.add(t2s.build_prompt(text), 30, seed=seed, temperature=temp, top_p=top_p)
        for text, seed, temp, top_p in cases
    ]
    harness.run()
    for (text, seed, temp, top_p), sink in zip(cases, sinks, strict=True):
        expected = alone.generate(text, max_new_tokens=30, seed=seed, temperature=temp, top_p=top_p)
        np.testing.assert_array_equal(next(iter(sink)), expected)


def test_joining_and_leaving_mid_decode_does_not_change_anyone(t2s, alone):
    """C joins while A and B are mid-decode; B is cancelled, so C (in the last slot) moves
    into B's slot. A and C still give their batch-1 codes; B's slot is free at once."""
    harness = Harness(t2s, slots=3)
    cancel_b = CancelToken()
    a = harness.add(t2s.build_prompt("First request."), 40, top_p=GREEDY)
    b = harness.add(t2s.build_prompt("Second."), 200, cancel=cancel_b, seed=3)
    harness.step(6)
    c = harness.add(t2s.build_prompt("A third, later one."), 40, seed=11)
    harness.step(4)
    assert [seq.slot for seq in harness.scheduler.running] == [0, 1, 2]
    cancel_b.cancel()
    harness.step()
    assert harness.scheduler.slots.free == 1
    with pytest.raises(Cancelled):
        list(b)
    harness.run()
    np.testing.assert_array_equal(
        next(iter(a)), alone.generate("First request.", max_new_tokens=40, top_p=GREEDY)
    )
    np.testing.assert_array_equal(
        next(iter(c)), alone.generate("A third, later one.", max_new_tokens=40, seed=11)
    )


def test_a_gap_in_the_batch_reads_the_caches_by_gather(t2s, alone):
    """The middle request stops at its prefill (max_new_tokens=1), so the first decode step
    runs slots 0 and 2: the index-tensor path. Its neighbours are unaffected."""
    harness = Harness(t2s, slots=3)
    a = harness.add(t2s.build_prompt("Left side."), 20, top_p=GREEDY)
    gap = harness.add(t2s.build_prompt("Gap."), 1, top_p=GREEDY)
    c = harness.add(t2s.build_prompt("Right side here."), 20, seed=8)
    harness.step()
    assert harness.loop.runner.last_batch == 2 and list(gap) == []
    harness.run()
    np.testing.assert_array_equal(
        next(iter(a)), alone.generate("Left side.", max_new_tokens=20, top_p=GREEDY)
    )
    np.testing.assert_array_equal(
        next(iter(c)), alone.generate("Right side here.", max_new_tokens=20, seed=8)
    )


def test_each_chunk_reprefills_the_slot(t2s, alone):
    harness = Harness(t2s, slots=1)
    sink = BlockingSink()
    prompts = [t2s.build_prompt(text) for text in ("One.", "Two two.")]
    seq = Sequence(FixedPrompts(prompts), SamplingParams(), 10, 4, CancelToken(), sink, t2s.device)
    harness.scheduler.add(seq, harness.scheduler.reserve(bounded=True))
    harness.run()
    chunks = list(sink)
    assert len(chunks) == 2 and seq.status is Status.FINISHED and seq.slot is None
    for text, codes in zip(("One.", "Two two."), chunks, strict=True):
        np.testing.assert_array_equal(codes, alone.generate(text, max_new_tokens=10, seed=4))


def test_each_chunk_continues_from_the_codes_of_the_one_before(t2s, alone):
    """Long text keeps one voice: chunk k's prompt holds chunk k-1's text and codes as a
    reference, and its codes are what batch-1 generation gives from that prompt."""
    harness = Harness(t2s, slots=1)
    sink = BlockingSink()
    texts = ["One.", "Two two.", "Three three three."]
    prompts = ContextPrompts(t2s, texts, [REF_TEXT], [reference_codes()], 12)
    started = []  # the prompt each chunk started from
    make = prompts.prompt
    prompts.prompt = lambda index, previous: started.append(make(index, previous)) or started[-1]
    seq = Sequence(prompts, SamplingParams(), 12, 4, CancelToken(), sink, t2s.device)
    harness.scheduler.add(seq, harness.scheduler.reserve(bounded=True))
    harness.run()
    chunks = list(sink)
    assert len(chunks) == 3 and all(codes.shape[1] > 0 for codes in chunks)
    np.testing.assert_array_equal(
        started[0], t2s.build_prompt(texts[0], [REF_TEXT], [reference_codes()])
    )
    for k in (1, 2):
        voice = ([REF_TEXT, texts[k - 1]], [reference_codes(), chunks[k - 1]])
        np.testing.assert_array_equal(started[k], t2s.build_prompt(texts[k], *voice))
        np.testing.assert_array_equal(
            chunks[k], alone.generate(texts[k], *voice, max_new_tokens=12, seed=4)
        )


def test_context_is_left_out_when_it_does_not_fit(t2s):
    prompts = ContextPrompts(t2s, ["One.", "Two."], [], [], 0)
    huge = torch.zeros((t2s.num_codebooks, t2s.max_seq_len), dtype=torch.long)
    np.testing.assert_array_equal(prompts.prompt(1, huge), t2s.build_prompt("Two."))


def test_waiting_queue_is_bounded_and_tasks_bypass_it(t2s):
    scheduler = Scheduler(SlotPool(t2s.model, 2), max_queue=1)
    held = [scheduler.reserve(bounded=True) for _ in range(3)]  # two slots + one queue place
    with pytest.raises(EngineBusy) as busy:
        scheduler.reserve(bounded=True)
    assert busy.value.retry_after_s >= 1 and "busy" in str(busy.value).lower()
    scheduler.reserve(bounded=False)  # an async task always gets a place
    assert scheduler.counts()["waiting"] == 4 and scheduler.room() == 0
    held[0].release()
    held[0].release()  # giving a place back twice frees it once
    assert scheduler.counts()["waiting"] == 3


def test_engine_thread_death_fails_every_request_and_is_reported(monkeypatch):
    engine = FishEngine(
        load_text2semantic(TINY, dtype=torch.float32),
        load_codec_tiny(),
        "tiny",
        max_batch_size=1,
        output=CodesOutput(),
    )
    try:

        def broken(*_):
            raise RuntimeError("device lost")

        monkeypatch.setattr(engine.runner, "decode", broken)
        first = engine.synthesize(SynthesisRequest("Hello.", max_new_tokens=50))
        second = engine.synthesize(SynthesisRequest("Waiting.", max_new_tokens=50))
        for stream in (first, second):
            with pytest.raises(EngineFailure, match="device lost"):
                list(stream)
        assert "device lost" in engine.failure
        with pytest.raises(EngineFailure):
            engine.reserve(bounded=True)
    finally:
        engine.close()


def load_codec_tiny():
    codec_dir = TESTVECTORS / "tiny-codec"
    return load_codec(codec_dir / "codec.pth", codec_dir / "config.json")


def test_compiled_batched_step_is_one_graph_for_every_batch_and_length(t2s, alone):
    """What --compile runs: the per-row step traced with dynamic shapes serves batches of
    every size and attended length without recompiling (eager backend: tracing only, so the
    test stays fast)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    runner = ModelRunner(t2s)
    runner.compiled = True
    runner._decode = torch.compile(decode_rows, fullgraph=True, dynamic=True, backend="eager")
    harness = Harness(t2s, slots=3)
    harness.loop.runner = runner
    a = harness.add(t2s.build_prompt("Compiled."), 12, top_p=GREEDY)
    harness.step(3)
    # Two joiners with one prompt: once the first request ends they sit at equal positions.
    harness.add(t2s.build_prompt("Joins later on."), 20, seed=5)
    harness.add(t2s.build_prompt("Joins later on."), 16, seed=6)
    harness.step(2)
    assert harness.loop.runner.last_batch == 3
    harness.run()
    # One graph for a single row (PyTorch specialises size 1), one for every larger batch.
    assert counters["stats"]["unique_graphs"] == 2
    np.testing.assert_array_equal(
        next(iter(a)), alone.generate("Compiled.", max_new_tokens=12, top_p=GREEDY)
    )
