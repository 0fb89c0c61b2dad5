"""Cost of the output stage (post-processing + encoding) per second of audio; prints JSON.

    python bench/audio_output.py [--seconds 10] [--repeats 3]

Input is a 44.1 kHz harmonic tone cut into 2-second segments, as an engine sends them.
Each figure is the best wall time over the repeats divided by the audio duration (an RTF:
0.01 means 10 ms of work per second of audio).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from fish_speech.audio.encode import AudioOutput

CASES = {
    "wav": dict(fmt="wav", sample_rate=44100),
    "wav_16k": dict(fmt="wav", sample_rate=16000),
    "mp3_128": dict(fmt="mp3", sample_rate=44100),
    "opus_32": dict(fmt="opus", sample_rate=48000, opus_bps=32000),
    "flac": dict(fmt="flac", sample_rate=44100),
    "wav_speed_2": dict(fmt="wav", sample_rate=44100, speed=2.0),
    "wav_speed_0.5": dict(fmt="wav", sample_rate=44100, speed=0.5),
    "wav_loudness": dict(fmt="wav", sample_rate=44100, normalize_loudness=True),
}


def segments(seconds: float, rate: int = 44100) -> list[np.ndarray]:
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * 180 * k * t) / k for k in range(1, 10))
    audio = (0.2 * tone / np.abs(tone).max()).astype(np.float32)
    return np.array_split(audio, max(1, int(seconds / 2)))


def run(case: dict, pieces: list[np.ndarray], streaming: bool) -> float:
    fmt, rate = case["fmt"], case["sample_rate"]
    options = {k: v for k, v in case.items() if k not in ("fmt", "sample_rate")}
    started = time.perf_counter()
    output = AudioOutput(fmt, rate, streaming, **options)
    for piece in pieces:
        output.feed(piece)
    output.finish()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pieces = segments(args.seconds)
    figures = {}
    for name, case in CASES.items():
        best = min(run(case, pieces, streaming=True) for _ in range(args.repeats))
        figures[f"{name}_rtf"] = round(best / args.seconds, 5)
    print(
        json.dumps(
            {"audio_seconds": args.seconds, "load_1min": os.getloadavg()[0], **figures}, indent=1
        )
    )


if __name__ == "__main__":
    main()
