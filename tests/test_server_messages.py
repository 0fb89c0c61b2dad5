"""Messages a user can act on: startup errors in one line, client connection errors,
undecodable uploads, wrong paths."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from conftest import REPO, TESTVECTORS, run_server_until_exit, server_env


def assert_one_line_error(run: subprocess.CompletedProcess, *fragments: str) -> None:
    assert run.returncode != 0
    assert "Traceback" not in run.stderr and "startup complete" not in run.stderr.lower()
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_port_in_use_is_one_line_before_loading(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = run_server_until_exit(tmp_path, "--listen", f"127.0.0.1:{port}")
    assert_one_line_error(run, f"127.0.0.1:{port}", "address already in use")
    assert "engine" not in run.stderr  # refused before any model was loaded


def test_text_model_without_codec_is_one_line(tmp_path):
    run = run_server_until_exit(tmp_path, "--llama-checkpoint-path", str(TESTVECTORS / "tiny-s1"))
    assert_one_line_error(run, "cannot load the models", "--decoder-checkpoint-path")


def test_codec_config_mismatch_is_one_line(tmp_path):
    # The tiny codec's weights against the full-size built-in config.
    codec = TESTVECTORS / "tiny-codec" / "codec.pth"
    run = run_server_until_exit(tmp_path, "--decoder-checkpoint-path", str(codec))
    assert_one_line_error(run, "cannot load the models", "codec.pth")


def test_client_connection_error_is_one_line(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens once it is closed
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "api_client.py"),
            "--url",
            f"http://127.0.0.1:{port}/v1/tts",
            "--text",
            "hi",
        ],
        cwd=tmp_path,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0 and "Traceback" not in run.stderr
    assert "cannot connect" in run.stderr and str(port) in run.stderr


@pytest.mark.parametrize("path", ["/tts", "/v1/speech", "/api/tts"])
def test_wrong_path_suggests_the_routes(server, path):
    response = server.request("POST", path, json={"text": "hi"})
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert path in detail and "POST /v1/tts" in detail and "/docs" in detail


def test_undecodable_upload_says_which_formats(server):
    response = server.request(
        "POST",
        "/v1/references/add",
        files={"audio": ("v.wav", b"this is not audio at all" * 20, "audio/wav")},
        data={"id": "broken", "text": "Broken."},
    )
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "not an audio file we can read (wav, mp3, flac, ogg)" in detail
    assert "object at 0x" not in detail and "<" not in detail
