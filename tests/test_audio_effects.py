"""Post-processing works on short segments cut anywhere (the Fish engine's streamed pieces)
as it does on the whole reply: no clicks at joins, the right length, steady loudness."""

from __future__ import annotations

import numpy as np
import pytest

from fish_speech.audio.effects import AudioPipeline, stretch

RATE = 44100


def voiced(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.5 * np.sin(2 * np.pi * 220 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(
        np.float32
    )


def in_pieces(pipeline: AudioPipeline, samples: np.ndarray, seconds: float) -> np.ndarray:
    size = int(seconds * RATE)
    parts = [pipeline.process(samples[i : i + size]) for i in range(0, len(samples), size)]
    return np.concatenate([*parts, pipeline.finish()])


@pytest.mark.parametrize("speed", [2.0, 0.5])
def test_stretching_short_pieces_leaves_no_clicks(speed):
    audio = voiced(3.0)
    whole = stretch(audio, RATE, speed)
    joined = in_pieces(AudioPipeline(RATE, RATE, speed=speed), audio, 0.3)
    assert len(joined) == len(whole)
    # A restart at each join would jump by ~0.4; the smooth signal moves at most ~0.02 a step.
    assert np.abs(np.diff(joined)).max() < 1.5 * np.abs(np.diff(whole)).max()


def test_loudness_of_short_pieces_keeps_their_dynamics():
    """Loud and soft syllables alternate every 0.25 s: normalising each piece on its own
    would pump the soft ones up to the loud ones; measured over recent audio they keep their
    difference (2.5x here)."""
    piece = int(0.25 * RATE)
    audio = voiced(4.0)
    levels = np.where((np.arange(len(audio)) // piece) % 2 == 0, 1.0, 0.4).astype(np.float32)
    out = in_pieces(AudioPipeline(RATE, RATE, normalize_loudness=True), audio * levels, 0.25)
    assert len(out) == len(audio)

    def rms(index: int) -> float:
        return float(np.sqrt(np.mean(out[index * piece : (index + 1) * piece] ** 2)))

    ratios = [rms(i) / rms(i + 1) for i in range(8, 14, 2)]  # loud piece / the soft one after
    assert min(ratios) > 1.8
