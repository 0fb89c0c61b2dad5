"""Frame-level streaming in the Fish engine (tiny checkpoints): audio leaves while a chunk is
still being generated, in pieces that join to one decode of all the codes, and a streamed
reply carries exactly the samples of a whole one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from codec_helpers import AUDIO_TOLERANCE, tiny_codec
from t2s_helpers import TINY

from conftest import TINY_FISH_ARGS, launch_server
from fish_speech.engine.base import AudioSegment, SynthesisRequest
from fish_speech.engine.fish import FishEngine
from fish_speech.engine.fish.output import FIRST_PIECE_FRAMES, MAX_PIECE_FRAMES
from fish_speech.models.text2semantic import load_text2semantic
from fish_speech.utils.cancel import CancelToken

TEXT = "Hello world, streaming test."
FRAMES = 119  # seed 0 generates this many for TEXT in float32 (the cap of 120, no early stop)
HOP = 2048


@pytest.fixture(scope="module")
def engine():
    t2s = load_text2semantic(TINY, dtype=torch.float32, cache_slots=2)
    fish = FishEngine(t2s, tiny_codec(), str(TINY), max_batch_size=2)
    yield fish
    fish.close()


@pytest.fixture(scope="module")
def alone():
    return load_text2semantic(TINY, dtype=torch.float32)


class RecordingSink:
    """Keeps each segment with the decode steps the engine had run when it was sent."""

    def __init__(self, engine: FishEngine) -> None:
        self.engine = engine
        self.segments: list[tuple[AudioSegment, int]] = []
        self.done = CancelToken()
        self.error: BaseException | None = None

    def put(self, segment: AudioSegment) -> None:
        self.segments.append((segment, self.engine.runner.decode_frames))

    def close(self, error: BaseException | None = None) -> None:
        self.error = error
        self.done.cancel()


def run(engine: FishEngine, latency: str) -> RecordingSink:
    sink = RecordingSink(engine)
    request = SynthesisRequest(TEXT, max_new_tokens=120, seed=0, latency=latency)
    engine.submit(request, CancelToken(), sink, engine.reserve(bounded=True))
    while not sink.done.cancelled:
        sink.done._event.wait(0.05)
    assert sink.error is None
    return sink


def piece_sizes(first: int, total: int) -> list[int]:
    sizes, size = [], first
    while sum(sizes) < total:
        sizes.append(min(size, total - sum(sizes)))
        size = min(2 * size, MAX_PIECE_FRAMES)
    return sizes


@pytest.mark.parametrize("latency", ["low", "balanced", "normal"])
def test_audio_leaves_while_the_chunk_is_generated(engine, latency):
    before = engine.runner.decode_frames
    sink = run(engine, latency)
    frames = [segment.frames for segment, _ in sink.segments]
    assert sum(frames) == FRAMES
    assert frames == piece_sizes(FIRST_PIECE_FRAMES[latency], FRAMES)
    first, steps_then = sink.segments[0]
    assert len(first.samples) == FIRST_PIECE_FRAMES[latency] * HOP
    # The first piece went out after its own frames were made, long before the end.
    assert steps_then - before < FRAMES / 2
    assert all(0.0 <= segment.progress <= 1.0 for segment, _ in sink.segments)


@pytest.mark.parametrize("latency", ["low", "normal"])
def test_pieces_join_to_one_decode_of_the_codes(engine, alone, latency):
    codes = alone.generate(TEXT, max_new_tokens=120, seed=0)
    assert codes.shape[1] == FRAMES
    whole = tiny_codec().decode(codes)
    joined = np.concatenate([segment.samples for segment, _ in run(engine, latency).segments])
    assert joined.shape == whole.shape
    assert np.abs(joined - whole).max() < AUDIO_TOLERANCE


@pytest.fixture(scope="module")
def fish_server(tmp_path_factory):
    proc = launch_server(
        tmp_path_factory.mktemp("fish-streaming"),
        *TINY_FISH_ARGS,
    )
    yield proc
    proc.stop()


def test_streamed_reply_holds_the_samples_of_a_whole_one(fish_server):
    body = {"text": TEXT, "max_new_tokens": 120, "seed": 0, "format": "pcm", "latency": "low"}
    whole = fish_server.request("POST", "/v1/tts", json=body)
    assert whole.status_code == 200, whole.text
    streamed = fish_server.request("POST", "/v1/tts", json={**body, "streaming": True}, stream=True)
    pieces = [chunk for chunk in streamed.iter_content(chunk_size=None) if chunk]
    assert len(pieces) > 1
    assert b"".join(pieces) == whole.content
    assert len(whole.content) % (HOP * 2) == 0 and len(whole.content) > len(pieces[0])
