"""Command-line client for /v1/tts, with the flags of the original ``tools/api_client.py``.

Saves ``<output>.<format>``; ``--play`` plays it only if an audio library is installed
(sounddevice), never a hard dependency.
"""

from __future__ import annotations

import argparse
import sys
import time
import wave
from pathlib import Path

import ormsgpack
import requests
from pydantic import ValidationError

from fish_speech.audio.io import finalize_streamed_wav
from fish_speech.utils.file import audio_to_bytes, read_ref_text
from fish_speech.utils.schema import (
    ServeReferenceAudio,
    ServeTTSRequest,
    describe_validation_error,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Send text to a Fish Speech server and save the audio")
    p.add_argument("--url", "-u", default="http://127.0.0.1:8080/v1/tts")
    p.add_argument("--text", "-t", required=True)
    p.add_argument("--reference_id", "-id", default=None, help="a saved voice on the server")
    p.add_argument("--reference_audio", "-ra", nargs="+", default=None, help="inline voice files")
    p.add_argument(
        "--reference_text", "-rt", nargs="+", default=None, help="transcripts (text or file paths)"
    )
    p.add_argument("--output", "-o", default="generated_audio", help="file name without extension")
    p.add_argument("--play", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--format", choices=["wav", "mp3", "pcm", "opus", "flac"], default="wav")
    p.add_argument("--max_new_tokens", type=int, default=1024)
    p.add_argument("--chunk_length", type=int, default=300)
    p.add_argument("--top_p", type=float, default=0.8)
    p.add_argument("--repetition_penalty", type=float, default=1.1)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--streaming", action="store_true", help="receive audio as it is made")
    p.add_argument("--use_memory_cache", choices=["on", "off"], default="off")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--api_key", "--api-key", dest="api_key", default=None)
    return p


def build_request(args: argparse.Namespace) -> ServeTTSRequest:
    references = []
    if args.reference_id is None and args.reference_audio:
        texts = args.reference_text or []
        if len(texts) != len(args.reference_audio):
            raise SystemExit("give one --reference_text for each --reference_audio")
        for audio_path, text in zip(args.reference_audio, texts, strict=True):
            audio = audio_to_bytes(audio_path)
            if audio is None:
                raise SystemExit(f"reference audio not found: {audio_path}")
            references.append(ServeReferenceAudio(audio=audio, text=read_ref_text(text)))
    return ServeTTSRequest(
        text=args.text,
        references=references,
        reference_id=args.reference_id,
        format=args.format,
        max_new_tokens=args.max_new_tokens,
        chunk_length=args.chunk_length,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        temperature=args.temperature,
        streaming=args.streaming,
        use_memory_cache=args.use_memory_cache,
        seed=args.seed,
    )


def play(path: Path) -> None:
    try:
        import sounddevice
        import soundfile
    except ImportError:
        print("--play needs the 'sounddevice' package; the file is saved", file=sys.stderr)
        return
    samples, rate = soundfile.read(path)
    sounddevice.play(samples, rate)
    sounddevice.wait()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        request = build_request(args)
    except ValidationError as exc:
        print(describe_validation_error(exc), file=sys.stderr)
        return 2
    headers = {"content-type": "application/msgpack"}
    if args.api_key:
        headers["authorization"] = f"Bearer {args.api_key}"

    started = time.perf_counter()
    try:
        response = requests.post(
            args.url,
            params={"format": "msgpack"},
            data=ormsgpack.packb(request, option=ormsgpack.OPT_SERIALIZE_PYDANTIC),
            headers=headers,
            stream=args.streaming,
            timeout=600,
        )
    except requests.ConnectionError:
        print(f"error: cannot connect to {args.url}: is the server running there?", file=sys.stderr)
        return 1
    except requests.RequestException as exc:  # timeouts, invalid URLs
        print(f"error: request to {args.url} failed: {type(exc).__name__}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        print(f"Request failed with status {response.status_code}: {detail}", file=sys.stderr)
        return 1

    output = Path(f"{args.output}.{args.format}")
    with output.open("wb") as f:
        first_byte_at = None
        for chunk in response.iter_content(chunk_size=4096):
            if first_byte_at is None:
                first_byte_at = time.perf_counter() - started
                print(f"First audio after {first_byte_at:.2f} s")
            f.write(chunk)
    if args.format == "wav" and args.streaming:
        body = bytearray(output.read_bytes())
        finalize_streamed_wav(body)
        output.write_bytes(body)
    print(f"Saved {output} in {time.perf_counter() - started:.2f} s")
    if args.format == "wav":
        with wave.open(str(output)) as w:
            print(f"{w.getnframes() / w.getframerate():.2f} s of audio at {w.getframerate()} Hz")
    if args.play:
        play(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
