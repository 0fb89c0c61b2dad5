"""Readiness, graceful shutdown, a failed engine and a vanishing client, on real processes."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import sys
import threading
import time
from pathlib import Path

import requests

from conftest import REPO, assert_speech, decode_wav, launch_server, server_env

FAULTY = [sys.executable, str(REPO / "tests" / "faulty_server.py")]
SENTENCE = "This sentence is one step of the engine."
TASK = " ".join(["This task keeps the engine busy for a while."] * 12)
LONG_STREAM = " ".join([SENTENCE] * 40)


def task_status_on_disk(workdir: Path, step_id: str) -> str:
    """The task's state as recorded in the data folder (readable after the server exited)."""
    with sqlite3.connect(workdir / "data" / "tasks.sqlite3") as db:
        return db.execute("SELECT status FROM tasks WHERE step_id = ?", (step_id,)).fetchone()[0]


def wait_for_status(server, step_id: str, wanted: set[str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = server.request("GET", f"/get_task_status/{step_id}").json()
        if body["status"] in wanted:
            return body
        time.sleep(0.05)
    raise AssertionError(f"{step_id} never reached {wanted}: {body}")


def create_task(server, step_id: str, text: str = TASK):
    body = {"step_id": step_id, "text": text, "format": "wav"}
    response = server.request("POST", "/generate_audio_enhanced_async", json=body)
    assert response.status_code == 200, response.text


def assert_retry_later(response: requests.Response, fragment: str) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    assert fragment in response.json()["detail"]


def slow_upload(server) -> socket.socket:
    """A request whose body never finishes arriving: it stays in flight."""
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        b"POST /v1/tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"text": '
    )
    return sock


def test_ready_waits_for_the_warm_up_while_health_answers(tmp_path):
    env = {**server_env(), "FAULTY_WARM_UP_S": "3"}
    server = launch_server(tmp_path, entry=FAULTY, env=env)
    try:
        assert server.request("GET", "/v1/health").json()["status"] == "ok"
        assert_retry_later(server.request("GET", "/v1/ready"), "warming up")
        # Work sent meanwhile waits for the warm-up instead of being refused.
        speech = server.request("POST", "/v1/tts", json={"text": "Hello there."})
        assert speech.status_code == 200, speech.text
        ready = server.request("GET", "/v1/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"ready": True, "status": "ready", "engine": "embedded"}
    finally:
        server.stop()


def test_sigterm_drains_then_requeues_and_the_task_resumes(tmp_path):
    timeout = 6
    first = launch_server(tmp_path, "--shutdown-timeout", str(timeout))
    streamed: dict = {}

    def stream_long_text() -> None:
        response = requests.post(
            first.url("/v1/tts"), json={"text": LONG_STREAM, "streaming": True}, stream=True
        )
        streamed["status"] = response.status_code
        streamed["body"] = b"".join(response.iter_content(chunk_size=None))

    try:
        create_task(first, "resumable")
        wait_for_status(first, "resumable", {"processing"})
        # A stream that is waiting behind the task when the signal comes; it starts once
        # the task has been handed back, and is still running at T/2.
        streamer = threading.Thread(target=stream_long_text)
        streamer.start()
        time.sleep(0.5)

        started = time.monotonic()
        first.process.send_signal(signal.SIGTERM)
        fresh = requests.Session()  # a new connection, as a new client would open
        new_work = fresh.post(first.url("/v1/tts"), json={"text": "Hi."}, timeout=10)
        assert_retry_later(new_work, "shutting down")
        assert_retry_later(fresh.get(first.url("/v1/ready"), timeout=10), "shutting down")
        assert fresh.get(first.url("/v1/health"), timeout=10).json()["status"] == "ok"

        streamer.join(timeout=timeout + 5)
        # The open stream ended cleanly (a broken chunked body raises in the thread).
        assert streamed["status"] == 200
        assert_speech(*decode_wav(streamed["body"]))
        assert first.process.wait(timeout=timeout + 5) == -signal.SIGTERM  # not the watchdog
        assert time.monotonic() - started < timeout
    finally:
        first.stop()
    assert task_status_on_disk(tmp_path, "resumable") == "pending"

    second = launch_server(tmp_path)
    try:
        done = wait_for_status(second, "resumable", {"completed", "failed"})
        assert done["status"] == "completed", done
        audio = second.request("GET", "/download_result/resumable").content
        assert_speech(*decode_wav(audio), min_seconds=15)  # all of it, not what was made first
        second.process.send_signal(signal.SIGINT)  # Ctrl+C: the same drain, a clean exit
        assert second.process.wait(timeout=15) == 0
    finally:
        second.stop()


def worker_pids(pid: int) -> list[int]:
    """uvicorn's worker processes (not multiprocessing's resource tracker)."""
    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def test_every_worker_process_drains_on_sigterm(tmp_path):
    timeout = 6
    server = launch_server(tmp_path, "--workers", "2", "--shutdown-timeout", str(timeout))
    try:
        deadline = time.monotonic() + 60
        while len(worker_pids(server.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = worker_pids(server.process.pid)
        assert len(workers) == 2
        # Both serving, so both have our signal handling: a worker still starting when the
        # signal comes is stopped by uvicorn alone (it hands its task back all the same).
        while server.log().count("Startup done") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        create_task(server, "in-a-worker")
        wait_for_status(server, "in-a-worker", {"processing"})
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=timeout + 5) == 0
        # The supervisor relays the signal within half a second, then every worker drains.
        assert time.monotonic() - started < timeout + 1
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    finally:
        server.stop()
    assert task_status_on_disk(tmp_path, "in-a-worker") == "pending"
    log = server.log()
    assert log.count("The server is shutting down (SIGTERM)") == 2, log


def test_a_failed_engine_is_reported_then_the_process_exits_for_a_restart(tmp_path):
    timeout = 4
    server = launch_server(tmp_path, "--shutdown-timeout", str(timeout), entry=FAULTY)
    try:
        create_task(server, "interrupted")
        wait_for_status(server, "interrupted", {"processing"})
        upload = slow_upload(server)  # keeps the drain open long enough to look at it
        (tmp_path / "CRASH").touch()  # the running task's next segment hits a "CUDA" fault
        deadline = time.monotonic() + 30
        while (health := server.request("GET", "/v1/health")).status_code == 200:
            assert time.monotonic() < deadline, "health never reported the failure"
            time.sleep(0.05)
        started = time.monotonic()
        assert health.status_code == 503
        assert health.json()["status"] == "failed"
        assert "illegal memory access" in health.json()["detail"]
        assert_retry_later(server.request("GET", "/v1/ready"), "engine failed")
        assert_retry_later(server.request("POST", "/v1/tts", json={"text": "Hi."}), "failed")
        assert server.process.wait(timeout=timeout + 5) == 70  # a supervisor restarts it
        assert time.monotonic() - started < timeout + 1
        upload.close()
    finally:
        server.stop()
    # Back in the queue for the restarted server (resuming is tested with SIGTERM above).
    assert task_status_on_disk(tmp_path, "interrupted") == "pending"
    assert "illegal memory access" in server.log()


def test_a_stuck_engine_cannot_hold_the_process_past_the_timeout(tmp_path):
    timeout = 3
    server = launch_server(tmp_path, "--shutdown-timeout", str(timeout), entry=FAULTY)
    try:
        create_task(server, "stuck")
        wait_for_status(server, "stuck", {"processing"})
        (tmp_path / "STUCK").touch()  # the engine stops answering, cancellation included
        time.sleep(0.5)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=timeout + 5) == 1  # the watchdog's way out
        assert time.monotonic() - started < timeout + 1
    finally:
        server.stop()
    # Still recorded as running in a process that is gone: the next start runs it again.
    assert task_status_on_disk(tmp_path, "stuck") == "processing"
    assert "did not finish within --shutdown-timeout" in server.log()


def test_a_client_leaving_mid_stream_stops_its_synthesis(server):
    """The engine makes one sentence per step; after the client leaves, at most about one
    more is made, so the next request is not stuck behind the abandoned stream."""

    def speak_one_sentence() -> float:
        started = time.perf_counter()
        response = server.request("POST", "/v1/tts", json={"text": SENTENCE})
        assert response.status_code == 200, response.text
        return time.perf_counter() - started

    speak_one_sentence()  # warm
    one_step = min(speak_one_sentence() for _ in range(3))

    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps({"streaming": True, "text": LONG_STREAM}).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert b"200 OK" in sock.recv(65536)  # the stream has started; now vanish
    after = speak_one_sentence()
    # Had the abandoned stream run on, this would wait for its ~39 remaining sentences.
    assert after < 8 * one_step + 0.5, (after, one_step)
    assert server.request("GET", "/v1/health").json()["status"] == "ok"
