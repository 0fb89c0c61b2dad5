"""Piece-by-piece decoding equals one decode of all the codes (the basis of streamed audio)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from codec_helpers import AUDIO_TOLERANCE, tiny_codec

from fish_speech.models.dac import Codec
from fish_speech.models.dac.model import CodecModel
from fish_speech.models.dac.streaming import StreamingDecoder

FRAMES = 200  # beyond the tiny post_module's 128-frame attention window


def random_codes(codec: Codec, frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, n, frames) for n in codec.codebook_sizes])


def stream_decode(decoder: StreamingDecoder, codes: np.ndarray, sizes: list[int]) -> np.ndarray:
    stream, pieces, start = decoder.new_stream(), [], 0
    for size in sizes:
        piece = torch.from_numpy(codes[:, start : start + size])
        pieces.append(decoder.decode([stream], [piece])[0].numpy())
        start += size
    assert start == codes.shape[1]
    return np.concatenate(pieces)


def split(total: int, pattern: list[int]) -> list[int]:
    sizes, i = [], 0
    while sum(sizes) < total:
        sizes.append(min(pattern[i % len(pattern)], total - sum(sizes)))
        i += 1
    return sizes


@pytest.mark.parametrize(
    ("frames", "pattern"), [(40, [1]), (FRAMES, [7]), (FRAMES, [3, 50, 1, 60]), (FRAMES, [FRAMES])]
)
def test_pieces_join_to_the_whole_decode(frames, pattern):
    codec = tiny_codec()
    codes = random_codes(codec, frames)
    whole = codec.decode(codes)
    joined = stream_decode(StreamingDecoder(codec.model), codes, split(frames, pattern))
    assert joined.shape == whole.shape
    difference = np.abs(joined - whole).max()
    assert difference < AUDIO_TOLERANCE, f"max |difference| {difference:.2e}"


def small_window_codec() -> Codec:
    """Three stacked transformer layers with a 6-frame window: the layers reach 15 frames
    back, so a decoder that kept only one window of history would be caught."""
    base = tiny_codec().model.cfg
    post = dataclasses.replace(base.quantizer.post_module, n_layer=3, window_size=6)
    cfg = dataclasses.replace(base, quantizer=dataclasses.replace(base.quantizer, post_module=post))
    torch.manual_seed(0)
    return Codec(CodecModel(cfg).eval())


def test_stacked_windows_and_conv_context_are_exact():
    codec = small_window_codec()
    codes = random_codes(codec, 80, seed=1)
    whole = codec.decode(codes)
    assert whole.std() > 0.01  # not saturated or silent: differences would show
    decoder = StreamingDecoder(codec.model)
    assert np.abs(stream_decode(decoder, codes, split(80, [5])) - whole).max() < AUDIO_TOLERANCE
    # Too little convolution context is visible, so the check above has teeth.
    decoder.context_frames = 2
    assert np.abs(stream_decode(decoder, codes, split(80, [5])) - whole).max() > AUDIO_TOLERANCE


def test_streams_at_different_positions_decode_in_one_batch():
    codec = tiny_codec()
    codes = [random_codes(codec, 60, seed=s) for s in (2, 3, 4)]
    decoder = StreamingDecoder(codec.model)
    streams = [decoder.new_stream() for _ in codes]
    # Stream 0 starts first; then each call advances every stream by its own piece size.
    pieces: list[list[np.ndarray]] = [[], [], []]
    pieces[0].append(decoder.decode([streams[0]], [torch.from_numpy(codes[0][:, :9])])[0].numpy())
    done, sizes = [9, 0, 0], [4, 11, 60]
    while any(d < 60 for d in done):
        active = [i for i in range(3) if done[i] < 60]
        parts = [torch.from_numpy(codes[i][:, done[i] : done[i] + sizes[i]]) for i in active]
        decoded = decoder.decode([streams[i] for i in active], parts)
        for i, audio in zip(active, decoded, strict=True):
            pieces[i].append(audio.numpy())
            done[i] = min(60, done[i] + sizes[i])
    for i in range(3):
        assert np.abs(np.concatenate(pieces[i]) - codec.decode(codes[i])).max() < AUDIO_TOLERANCE


def test_streams_may_run_past_the_one_pass_limit():
    codec = tiny_codec()
    limit = codec.max_frames
    codes = random_codes(codec, limit + 40, seed=5)
    joined = stream_decode(StreamingDecoder(codec.model), codes, split(limit + 40, [64]))
    assert joined.shape == (codes.shape[1] * codec.hop_length,)
    # Causal: the part a one-pass decode can reach is unchanged by what follows.
    head = codec.decode(codes[:, :limit])
    assert np.abs(joined[: len(head)] - head).max() < AUDIO_TOLERANCE
