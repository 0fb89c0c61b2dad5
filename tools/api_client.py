"""Command-line client for /v1/tts, with the flags of the original ``tools/api_client.py``.

Saves ``<output>.<format>``; ``--play`` plays it only if an audio library is installed
(sounddevice), never a hard dependency. Shows on stderr how much audio has arrived while
streaming, and with ``--async`` submits a background task, follows its progress and
downloads the result.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
import wave
from pathlib import Path
from urllib.parse import quote

import ormsgpack
import requests
from pydantic import ValidationError

from fish_speech.audio.io import finalize_streamed_wav
from fish_speech.engine.base import OUTPUT_SAMPLE_RATE
from fish_speech.utils.file import audio_to_bytes, read_ref_text
from fish_speech.utils.schema import (
    AsyncGenerateRequest,
    ServeReferenceAudio,
    ServeTTSRequest,
    describe_validation_error,
)

MP3_BITRATE = 128_000  # bits per second of the server's mp3 (fish_speech.audio.io)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Send text to a Fish Speech server and save the audio "
        "(streamed, whole, or as a background task with --async)"
    )
    p.add_argument(
        "--url", "-u", default="http://127.0.0.1:8080/v1/tts", help="the server's /v1/tts URL"
    )
    p.add_argument("--text", "-t", required=True, help="the text to speak")
    p.add_argument("--reference_id", "-id", default=None, help="a saved voice on the server")
    p.add_argument("--reference_audio", "-ra", nargs="+", default=None, help="inline voice files")
    p.add_argument(
        "--reference_text", "-rt", nargs="+", default=None, help="transcripts (text or file paths)"
    )
    p.add_argument("--output", "-o", default="generated_audio", help="file name without extension")
    p.add_argument(
        "--play",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="play the saved file (needs the sounddevice package)",
    )
    p.add_argument(
        "--format",
        choices=["wav", "mp3", "pcm", "opus", "flac"],
        default="wav",
        help="audio format",
    )
    p.add_argument("--max_new_tokens", type=int, default=1024, help="generation cap (0: none)")
    p.add_argument("--chunk_length", type=int, default=300, help="characters per chunk (100-300)")
    p.add_argument("--top_p", type=float, default=0.8, help="nucleus sampling (0.1-1.0)")
    p.add_argument(
        "--repetition_penalty", type=float, default=1.1, help="repetition penalty (0.9-2.0)"
    )
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (0.1-1.0)")
    p.add_argument("--streaming", action="store_true", help="receive audio as it is made")
    p.add_argument(
        "--use_memory_cache",
        choices=["on", "off"],
        default="off",
        help="let the server cache the processed reference voice",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument(
        "--api_key", "--api-key", dest="api_key", default=None, help="the server's --api-key"
    )
    p.add_argument(
        "--async",
        dest="async_task",
        action="store_true",
        help="run as a background task: submit, follow its progress, download the result",
    )
    p.add_argument("--step_id", default=None, help="id of the background task (default: a new one)")
    p.add_argument(
        "--poll_interval", type=float, default=0.5, help="seconds between task status checks"
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show progress on stderr (bytes and seconds received, or task progress)",
    )
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


class Progress:
    """One status line on stderr: redrawn in place on a terminal (10 times a second at most),
    else printed at most once a second."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def show(self, text: str, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self._last < (0.1 if self.tty else 1.0):
            return
        self._last = now
        if self.tty:
            print(f"\r\033[K{text}", end="\n" if final else "", file=sys.stderr, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)


def bar(fraction: float, width: int = 30) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "." * (width - filled) + f"] {fraction * 100:5.1f}%"


def received_text(fmt: str, received: int) -> str:
    """What has arrived: bytes, and seconds of audio where the format tells them (wav and pcm
    from their sample size, mp3 from its 128 kbit/s rate; not opus or flac)."""
    text = f"received {received / 1024:,.0f} kB"
    if fmt == "mp3":
        return text + f", {received * 8 / MP3_BITRATE:.1f} s of audio"
    if fmt in ("wav", "pcm"):
        header = 44 if fmt == "wav" else 0
        return text + f", {max(0, received - header) / (2 * OUTPUT_SAMPLE_RATE):.1f} s of audio"
    return text


def report_failure(response: requests.Response) -> int:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text
    print(f"Request failed with status {response.status_code}: {detail}", file=sys.stderr)
    return 1


def save_tts(args: argparse.Namespace, request: ServeTTSRequest, headers: dict) -> Path | None:
    """POST /v1/tts and write the reply to the output file, showing what has arrived."""
    started = time.perf_counter()
    response = requests.post(
        args.url,
        params={"format": "msgpack"},
        data=ormsgpack.packb(request, option=ormsgpack.OPT_SERIALIZE_PYDANTIC),
        headers=headers,
        stream=args.streaming,
        timeout=600,
    )
    if response.status_code != 200:
        report_failure(response)
        return None

    progress = Progress(args.progress)
    output = Path(f"{args.output}.{args.format}")
    received = 0
    with output.open("wb") as f:
        first_byte_at = None
        for chunk in response.iter_content(chunk_size=4096):
            if first_byte_at is None:
                first_byte_at = time.perf_counter() - started
                print(f"First audio after {first_byte_at:.2f} s")
            f.write(chunk)
            received += len(chunk)
            progress.show(received_text(args.format, received))
    progress.show(received_text(args.format, received) + ", done", final=True)
    if args.format == "wav" and args.streaming:
        body = bytearray(output.read_bytes())
        finalize_streamed_wav(body)
        output.write_bytes(body)
    print(f"Saved {output} in {time.perf_counter() - started:.2f} s")
    return output


def run_task(args: argparse.Namespace, request: ServeTTSRequest, headers: dict) -> Path | None:
    """Submit a background task, follow its progress, then download its result."""
    base = args.url.removesuffix("/").removesuffix("/v1/tts")
    step_id = args.step_id or f"client-{uuid.uuid4().hex[:12]}"
    shared = {
        name: getattr(request, name)
        for name in AsyncGenerateRequest.model_fields
        if name in ServeTTSRequest.model_fields
    }
    task = AsyncGenerateRequest(step_id=step_id, **shared)
    response = requests.post(
        f"{base}/generate_audio_enhanced_async",
        params={"format": "msgpack"},
        data=ormsgpack.packb(task, option=ormsgpack.OPT_SERIALIZE_PYDANTIC),
        headers=headers,
        timeout=60,
    )
    if response.status_code != 200:
        report_failure(response)
        return None
    print(f"Task {step_id} queued")
    progress = Progress(args.progress)
    status_url = f"{base}/get_task_status/{quote(step_id, safe='')}"
    auth = {k: v for k, v in headers.items() if k == "authorization"}
    try:
        while True:
            reply = requests.get(status_url, headers=auth, timeout=60)
            if reply.status_code != 200:
                report_failure(reply)
                return None
            status = reply.json()
            progress.show(f"{bar(status.get('progress', 0.0))} {status['status']}")
            if status["status"] not in ("pending", "processing"):
                break
            time.sleep(args.poll_interval)
    except KeyboardInterrupt:
        requests.post(f"{base}/stop_async_task/{quote(step_id, safe='')}", headers=auth, timeout=60)
        print(f"\nTask {step_id} cancelled", file=sys.stderr)
        return None
    progress.show(f"{bar(status.get('progress', 0.0))} {status['status']}", final=True)
    if status["status"] != "completed":
        print(f"Task {step_id} {status['status']}: {status.get('error')}", file=sys.stderr)
        return None
    download = requests.get(base + status["download_url"], headers=auth, timeout=600)
    if download.status_code != 200:
        report_failure(download)
        return None
    output = Path(f"{args.output}.{args.format}")
    output.write_bytes(download.content)
    print(f"Saved {output}")
    return output


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

    try:
        output = (
            run_task(args, request, headers)
            if args.async_task
            else save_tts(args, request, headers)
        )
    except requests.ConnectionError:
        print(f"error: cannot connect to {args.url}: is the server running there?", file=sys.stderr)
        return 1
    except requests.RequestException as exc:  # timeouts, invalid URLs
        print(f"error: request to {args.url} failed: {type(exc).__name__}", file=sys.stderr)
        return 1
    if output is None:
        return 1
    if args.format == "wav":
        with wave.open(str(output)) as w:
            print(f"{w.getnframes() / w.getframerate():.2f} s of audio at {w.getframerate()} Hz")
    if args.play:
        play(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
