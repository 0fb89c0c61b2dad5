"""The original-compatible command line, on the tiny codec."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import soundfile as sf
from codec_helpers import CODEC_VECTORS, TINY_CHECKPOINT, TINY_CONFIG, vector

from fish_speech.models.dac.inference import main

# The CLI writes 16-bit wav, as the original's soundfile call does; libsndfile scales by 32767
# on write and 32768 on read, so allow two steps.
PCM16_ERROR = 2 / 32768


def test_round_trip_from_wav_then_from_codes(tmp_path):
    out = tmp_path / "out.wav"
    common = ["--checkpoint-path", str(TINY_CHECKPOINT), "--config", str(TINY_CONFIG)]
    subprocess.run(
        [sys.executable, "-m", "fish_speech.models.dac.inference"]
        + ["-i", str(CODEC_VECTORS / "test_waveform.wav"), "-o", str(out), "--device", "cpu"]
        + common,
        check=True,
        capture_output=True,
        timeout=120,
    )
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), vector("test_waveform_codes"))
    audio, rate = sf.read(out, dtype="float32")
    assert rate == 44100
    assert np.abs(audio - vector("test_waveform_decoded")).max() <= PCM16_ERROR

    # The .npy path, in-process to keep the test quick.
    again = tmp_path / "again.wav"
    assert main(["-i", str(tmp_path / "out.npy"), "-o", str(again), "-d", "cpu"] + common) == 0
    np.testing.assert_array_equal(sf.read(again, dtype="float32")[0], audio)


def test_errors_exit_nonzero_with_a_message(tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, -np.ones((4, 3), dtype=np.int64))
    args = ["--checkpoint-path", str(TINY_CHECKPOINT), "--config", str(TINY_CONFIG)]
    assert main(["-i", str(bad), "-o", str(tmp_path / "x.wav")] + args) == 1
    assert "non-negative" in capsys.readouterr().err
    assert main(["-i", str(tmp_path / "absent.wav")] + args) == 2
