"""End-to-end latency through HTTP: time to the first streamed audio byte and total time.

    python bench/server.py [--url http://127.0.0.1:8080] [--repeats 3]

Without --url it starts `python -m tools.api_server` (embedded engine unless checkpoints
are present) on a free loopback port in a temporary folder, and stops it afterwards.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

TEXTS = {
    "en": (
        "The old lighthouse keeper climbed the stairs every evening. He lit the lamp, "
        "wrote a line in his logbook, and watched the ships pass in the dark. Nobody "
        "remembered when he had started, and nobody could imagine the coast without him."
    ),
    "zh": "今天的天气非常好。我们一起去公园散步吧。公园里有很多花，还有一个安静的小湖。",
}


def start_server(workdir: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.api_server", "--listen", f"127.0.0.1:{port}"],
        cwd=workdir,
        env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if requests.get(url + "/v1/health", timeout=1).ok:
                return process, url
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("server did not start")


def measure(url: str, text: str, streaming: bool) -> dict[str, float]:
    started = time.perf_counter()
    response = requests.post(
        url + "/v1/tts", json={"text": text, "streaming": streaming, "format": "pcm"}, stream=True
    )
    response.raise_for_status()
    first = None
    size = 0
    for chunk in response.iter_content(chunk_size=None):
        if first is None:
            first = time.perf_counter() - started
        size += len(chunk)
    total = time.perf_counter() - started
    audio_s = size / 2 / 44100
    return {"first_audio_s": first, "total_s": total, "audio_s": audio_s, "rtf": total / audio_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        process, url = (None, args.url) if args.url else start_server(Path(workdir))
        try:
            engine = requests.get(url + "/v1/health").json().get("engine")
            results: dict = {"engine": engine}
            for language, text in TEXTS.items():
                measure(url, text, streaming=True)  # warm-up
                for mode in ("streaming", "whole"):
                    runs = [measure(url, text, mode == "streaming") for _ in range(args.repeats)]
                    results[f"{language}_{mode}"] = {
                        key: round(min(run[key] for run in runs), 3) for key in runs[0]
                    }
            print(json.dumps(results))
        finally:
            if process is not None:
                process.terminate()
                process.wait()


if __name__ == "__main__":
    main()
