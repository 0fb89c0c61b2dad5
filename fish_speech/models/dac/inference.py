"""Command line compatible with the original `python -m fish_speech.models.dac.inference`.

Audio input: writes the codes to OUTPUT with suffix .npy and the reconstruction to OUTPUT.
A .npy input (a code grid) is decoded to OUTPUT.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from .config import CodecLoadError
from .loader import load_codec


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fish_speech.models.dac.inference",
        description="Encode audio to codec codes and reconstruct it, or decode a .npy grid.",
    )
    parser.add_argument("-i", "--input-path", type=Path, default=Path("test.wav"))
    parser.add_argument("-o", "--output-path", type=Path, default=Path("fake.wav"))
    config = parser.add_mutually_exclusive_group()
    config.add_argument("--config-name", default="modded_dac_vq", help="built-in config")
    config.add_argument("--config", type=Path, help="YAML/JSON config in the original layout")
    parser.add_argument(
        "--checkpoint-path", type=Path, default=Path("checkpoints/openaudio-s1-mini/codec.pth")
    )
    parser.add_argument("-d", "--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    source: Path = args.input_path
    if not source.is_file():
        print(f"error: input not found: {source}", file=sys.stderr)
        return 2
    try:
        codec = load_codec(
            args.checkpoint_path, args.config or args.config_name, device=args.device
        )
        if source.suffix.lower() == ".npy":
            codes = np.load(source)
        else:
            try:
                audio, rate = sf.read(source, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise ValueError(f"cannot read audio {source}: {exc}") from exc
            codes = codec.encode(audio.T, rate)
            np.save(args.output_path.with_suffix(".npy"), codes)
            print(f"codes {codes.shape} -> {args.output_path.with_suffix('.npy')}")
        audio = codec.decode(codes)
    except (CodecLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sf.write(args.output_path, audio, codec.sample_rate)
    seconds = len(audio) / codec.sample_rate
    print(f"audio {seconds:.2f} s from {codes.shape[1]} frames -> {args.output_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
