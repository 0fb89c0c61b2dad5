"""Shared fixtures: real server processes on loopback, and audio checks."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# Before torch loads (test modules import it after this file): OpenMP threads that spin
# while idle stall on descheduled peers when the cores are shared, slowing small tensor
# work twentyfold (measured on 2 shared cores). The server sets the same for itself.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import requests
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
TESTVECTORS = REPO / "tests" / "data" / "testvectors"
API_KEY = "YOUR_API_KEY"  # the seed document's placeholder, so its snippets run unchanged
# Server flags for the Fish engine on the tiny checkpoints of the test vectors.
TINY_FISH_ARGS = (
    "--llama-checkpoint-path",
    str(TESTVECTORS / "tiny-s1"),
    "--decoder-checkpoint-path",
    str(TESTVECTORS / "tiny-codec" / "codec.pth"),
    "--decoder-config-name",
    str(TESTVECTORS / "tiny-codec" / "config.json"),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    process: subprocess.Popen
    base_url: str
    workdir: Path
    log_path: Path
    api_key: str | None = None
    session: requests.Session = field(default_factory=requests.Session)

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {**self.auth, **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 120)
        return self.session.request(method, self.url(path), headers=headers, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_server_until_exit(
    workdir: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run ``python -m tools.api_server`` expected to refuse to start; its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "tools.api_server", "--device", "cpu", *args],
        cwd=workdir,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def launch_server(
    workdir: Path,
    *args: str,
    api_key: str | None = None,
    host: str = "127.0.0.1",
    timeout: float = 120,
    entry: list[str] | None = None,
    **popen_kwargs,
) -> ServerProcess:
    """Start ``python -m tools.api_server`` (or ``entry``) in ``workdir``; wait until it answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    entry = entry or [sys.executable, "-m", "tools.api_server"]
    command = [*entry, "--listen", listen, "--device", "cpu"]
    if api_key:
        command += ["--api-key", api_key]
    log_path = workdir / f"server-{port}.log"
    log_file = log_path.open("w")
    popen_kwargs.setdefault("env", server_env())
    process = subprocess.Popen(
        [*command, *args], cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT, **popen_kwargs
    )
    server = ServerProcess(process, f"http://{listen}", workdir, log_path, api_key)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if server.request("GET", "/v1/health", timeout=2).status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not start in {timeout} s:\n{server.log()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The default server: embedded engine, no key, a text limit to test against."""
    proc = launch_server(tmp_path_factory.mktemp("server"), "--max-text-length", "2000")
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Small input limits, so that going over them is cheap to test."""
    proc = launch_server(
        tmp_path_factory.mktemp("limited_server"),
        "--max-body-mb",
        "1",
        "--max-references",
        "2",
        "--max-reference-seconds",
        "2",
        "--max-text-length",
        "300",
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = launch_server(tmp_path_factory.mktemp("auth_server"), api_key=API_KEY)
    yield proc
    proc.stop()


class RedisServer:
    """A real ``redis-server`` (Debian's package) on a free loopback port, persisting every
    write to its append-only file, so that a stop and start loses nothing, as in production
    with ``appendfsync always``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        command += ["--dir", str(self.workdir)]
        log = (self.workdir / "redis.log").open("a")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"redis-server did not start:\n{(self.workdir / 'redis.log').read_text()}"
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def add_reference(
    server: ServerProcess,
    ref_id: str,
    audio: bytes | None = None,
    text: str = "Hello there.",
    **kwargs,
) -> requests.Response:
    """``POST /v1/references/add`` as the seed's multipart form; a 1 s test clip by default."""
    audio = make_wav_bytes() if audio is None else audio
    return server.request(
        "POST",
        "/v1/references/add",
        files={"audio": ("voice.wav", audio, "audio/wav")},
        data={"id": ref_id, "text": text},
        **kwargs,
    )


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return samples, rate


def assert_speech(samples: np.ndarray, rate: int, min_seconds: float = 0.3) -> None:
    """Real audio: 44.1 kHz, long enough, and not silence."""
    assert rate == 44100
    assert samples.ndim == 1
    assert len(samples) / rate >= min_seconds, f"only {len(samples) / rate:.2f} s of audio"
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    assert rms > 0.01, f"audio is (nearly) silent: rms {rms:.4f}"


def make_wav_bytes(
    seconds: float = 1.0, rate: int = 22050, freq: float = 180.0, fmt="WAV"
) -> bytes:
    """A voiced-sounding test clip: a harmonic-rich tone with a slow vibrato."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * freq * (t + 0.002 * np.sin(2 * np.pi * 5 * t))
    tone = sum(np.sin(k * phase) / k for k in range(1, 12))
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * tone / np.abs(tone).max()).astype(np.float32), rate, format=fmt)
    return buffer.getvalue()


# Flags for headless Chromium on a machine with no outside network: without the
# background-networking ones it keeps trying (and failing) to reach Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # A fake microphone (a beep) that needs no permission prompt: the page records voices.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


def find_chromium() -> str | None:
    """The system Chromium (Debian's ``chromium``), or $CHROMIUM if set."""
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return os.environ.get("CHROMIUM") or found


@pytest.fixture(scope="module")
def browser():
    """A headless system Chromium driven by Playwright; skips, saying why, when there is none.

    Playwright never downloads a browser here: it drives the system one via executable_path.
    Module scope, not session: while Playwright's sync API is running it marks its event
    loop as running in the main thread, so asyncio.run() in later test modules would fail.
    """
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium found (install Debian's 'chromium' or set $CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the 'playwright' package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()
