"""Command-line behaviour: start-up errors, --listen forms, --workers, and the client."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (
    REPO,
    assert_speech,
    decode_wav,
    launch_server,
    make_wav_bytes,
    run_server_until_exit,
    server_env,
)


@pytest.mark.parametrize("flag", ["--llama-checkpoint-path", "--decoder-checkpoint-path"])
def test_explicit_missing_checkpoint_is_a_startup_error(tmp_path, flag):
    run = run_server_until_exit(tmp_path, flag, "no/such/checkpoint", timeout=60)
    assert run.returncode != 0
    assert "no/such/checkpoint" in run.stderr


@pytest.mark.parametrize("listen", ["::1:8080", "localhost", "host:notaport", "[::1]"])
def test_bad_listen_values(tmp_path, listen):
    run = run_server_until_exit(tmp_path, "--listen", listen, timeout=60)
    assert run.returncode != 0
    assert "--listen" in run.stderr


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--max-body-mb", "0"),
        ("--max-references", "-1"),
        ("--max-reference-seconds", "nan"),
        ("--shutdown-timeout", "inf"),
        ("--task-retention-hours", "-1"),
    ],
)
def test_bad_limits_are_startup_errors(tmp_path, flag, value):
    run = run_server_until_exit(tmp_path, flag, value, timeout=60)
    assert run.returncode == 2
    assert flag in run.stderr


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback_available(), reason="this machine has no IPv6 loopback")
def test_ipv6_listen(tmp_path):
    server = launch_server(tmp_path, host="::1")
    try:
        assert server.request("GET", "/v1/health").json()["status"] == "ok"
    finally:
        server.stop()


def worker_pids(pid: int) -> set[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(c) for c in children}


def test_workers_are_processes_sharing_references(tmp_path):
    server = launch_server(tmp_path, "--workers", "2")
    try:
        deadline = time.monotonic() + 60
        # uvicorn's supervisor spawns the workers; wait until both are up.
        while len(worker_pids(server.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(worker_pids(server.process.pid)) >= 2
        added = server.request(
            "POST",
            "/v1/references/add",
            files={"audio": ("v.wav", make_wav_bytes(), "audio/wav")},
            data={"id": "shared", "text": "Shared voice."},
        )
        assert added.status_code == 200
        # Fresh connections land on either worker; all of them see the voice.
        for _ in range(6):
            server.session.close()
            listed = server.request("GET", "/v1/references/list").json()["reference_ids"]
            assert "shared" in listed
        tts = server.request("POST", "/v1/tts", json={"text": "Hello.", "reference_id": "shared"})
        assert_speech(*decode_wav(tts.content))
    finally:
        server.stop()


def run_client(server, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "api_client.py"),
            "--url",
            server.url("/v1/tts"),
            *args,
        ],
        cwd=tmp_path,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_client_saves_audio(server, tmp_path):
    run = run_client(server, tmp_path, "--text", "Hello from the client.", "--output", "out")
    assert run.returncode == 0, run.stderr
    assert_speech(*decode_wav((tmp_path / "out.wav").read_bytes()))


def test_client_streaming_and_inline_reference(server, tmp_path):
    (tmp_path / "ref.wav").write_bytes(make_wav_bytes())
    run = run_client(
        server,
        tmp_path,
        "--text",
        "Streaming from the client. Second sentence.",
        "--streaming",
        "--reference_audio",
        "ref.wav",
        "--reference_text",
        "A reference.",
        "--output",
        "streamed",
    )
    assert run.returncode == 0, run.stderr
    data = (tmp_path / "streamed.wav").read_bytes()
    assert struct.unpack("<I", data[40:44])[0] == len(data) - 44  # header finalised
    assert_speech(*decode_wav(data))


def test_client_shows_streaming_progress(server, tmp_path):
    run = run_client(
        server, tmp_path, "--text", "Progress while it streams.", "--streaming", "--output", "s"
    )
    assert run.returncode == 0, run.stderr
    final = run.stderr.strip().splitlines()[-1]
    assert final.startswith("received ") and final.endswith("s of audio, done"), run.stderr
    seconds = float(final.split(", ")[1].split(" s")[0])
    samples, rate = decode_wav((tmp_path / "s.wav").read_bytes())
    assert seconds == pytest.approx(len(samples) / rate, abs=0.05)


def test_client_async_task_with_progress(server, tmp_path):
    text = " ".join(["A background task from the client."] * 4)
    run = run_client(
        server, tmp_path, "--text", text, "--async", "--step_id", "cli-task", "--output", "bg"
    )
    assert run.returncode == 0, run.stderr
    assert "Task cli-task queued" in run.stdout
    assert run.stderr.strip().splitlines()[-1] == "[" + "#" * 30 + "] 100.0% completed"
    assert_speech(*decode_wav((tmp_path / "bg.wav").read_bytes()), min_seconds=2)
    assert server.request("GET", "/get_task_status/cli-task").json()["progress"] == 1.0


def test_client_flags_have_help(tmp_path):
    from tools.api_client import build_parser

    for action in build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help text"


def test_client_reports_errors(server, tmp_path):
    local = run_client(server, tmp_path, "--text", "hi", "--top_p", "7")
    assert local.returncode == 2 and "top_p" in local.stderr
    remote = run_client(server, tmp_path, "--text", "hi", "--reference_id", "nobody")
    assert remote.returncode == 1
    assert "404" in remote.stderr and "nobody" in remote.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--max-batch-size", "0"], "--max-batch-size"),
        (["--max-seq-len", "8"], "--max-seq-len"),
        (["--max-queue", "-1"], "--max-queue"),
    ],
)
def test_batching_flags_are_checked(args, fragment):
    from fish_speech.server.config import ConfigError, config_from_args

    with pytest.raises(ConfigError, match=fragment):
        config_from_args(args)
    config = config_from_args(["--max-batch-size", "4", "--max-seq-len", "1024"])
    assert (config.max_batch_size, config.max_seq_len, config.max_queue) == (4, 1024, 32)
