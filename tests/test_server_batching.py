"""Continuous batching through a real server on the tiny checkpoints: concurrent requests run
together, a client that leaves frees its slot, a full queue answers 429, async tasks queue
durably instead and run several at once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import TINY_FISH_ARGS, assert_speech, decode_wav, launch_server

HOP = 2048
SLOTS, QUEUE = 6, 2
# Every sentence is a chunk, streamed as one segment: long requests that stream early.
LONG_TEXT = " ".join(f"This is sentence number {i} of a long request." for i in range(30))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = launch_server(
        tmp_path_factory.mktemp("batching"),
        *TINY_FISH_ARGS,
        "--max-batch-size",
        str(SLOTS),
        "--max-queue",
        str(QUEUE),
    )
    yield proc
    proc.stop()


def load(server) -> dict:
    return server.request("GET", "/v1/health").json()["load"]


def wait_for(server, predicate, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = load(server)
        if predicate(current):
            return current
        time.sleep(0.02)
    raise AssertionError(f"health load never matched; last: {current}")


class Streams:
    """Long streaming requests, each in its own thread, read segment by segment until
    ``stop(i)`` closes stream i (its connection), as a client that leaves."""

    def __init__(self, server, count: int, text: str = LONG_TEXT) -> None:
        self.server = server
        self.text = text
        self.stopped = [threading.Event() for _ in range(count)]
        self.statuses: list[int | None] = [None] * count
        self.segments = [0] * count
        self.data = [b""] * count
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(count)]
        for thread in self.threads:
            thread.start()

    def _run(self, i: int) -> None:
        body = {"text": self.text, "max_new_tokens": 60, "seed": i, "streaming": True}
        with self.server.request("POST", "/v1/tts", json=body, stream=True) as response:
            self.statuses[i] = response.status_code
            for chunk in response.iter_content(chunk_size=None):
                self.segments[i] += bool(chunk)
                self.data[i] += chunk
                if self.stopped[i].is_set():
                    break

    def stop(self, i: int) -> None:
        self.stopped[i].set()
        self.threads[i].join(timeout=30)

    def stop_all(self) -> None:
        for i in range(len(self.threads)):
            self.stop(i)


def test_concurrent_requests_run_in_one_batch(server):
    bodies = [
        {"text": f"Request {i} says hello.", "max_new_tokens": 120, "seed": i} for i in range(8)
    ]
    spans: list[tuple[float, float]] = []
    peak = peak_batch = 0

    def send(body):
        started = time.monotonic()
        response = server.request("POST", "/v1/tts", json=body)
        spans.append((started, time.monotonic()))
        return response

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(send, body) for body in bodies]
        while not all(f.done() for f in futures):
            current = load(server)
            peak = max(peak, current["running"])
            peak_batch = max(peak_batch, current["decode_batch"])
            time.sleep(0.01)
    for future in futures:
        response = future.result()
        assert response.status_code == 200, response.text
        samples, rate = decode_wav(response.content)
        assert len(samples) % HOP == 0
        assert_speech(samples, rate, min_seconds=HOP / 44100)
    assert max(start for start, _ in spans) < min(end for _, end in spans), "no overlap"
    assert peak > 1 and peak_batch > 1, "the engine never ran two requests at once"
    stats = load(server)
    assert stats["decode_step_s"] > 0 and stats["slots_total"] == SLOTS


def test_a_client_that_leaves_frees_its_slot_and_spares_the_others(server):
    text = " ".join(f"Sentence {i} of a shorter request." for i in range(8))
    streams = Streams(server, 3, text)
    try:
        wait_for(server, lambda s: s["running"] == 3)
        while streams.segments[0] == 0:
            time.sleep(0.01)
        streams.stop(0)
        freed = wait_for(server, lambda s: s["running"] < 3, timeout=10)
        # Freed while the other two still run.
        assert freed["running"] == 2 and freed["slots_free"] == SLOTS - 2
        for i in (1, 2):
            streams.threads[i].join(timeout=60)
    finally:
        streams.stop_all()
    # The others ran to the end: audio for all 8 sentences (at most 59 frames each).
    for i in (1, 2):
        assert streams.statuses[i] == 200
        samples, rate = decode_wav(streams.data[i])
        assert len(samples) % HOP == 0 and 8 <= len(samples) // HOP <= 8 * 59
        assert_speech(samples, rate, min_seconds=1.0)
    wait_for(server, lambda s: s["running"] == 0 and s["waiting"] == 0)


def test_a_whole_file_request_whose_client_leaves_is_cancelled(server):
    body = {"text": LONG_TEXT, "max_new_tokens": 60, "seed": 2}
    with pytest.raises(requests.Timeout):
        server.request("POST", "/v1/tts", json=body, timeout=1.5)
    # 30 chunks would take far longer than this to generate.
    wait_for(server, lambda s: s["running"] == 0, timeout=5)


def test_full_queue_answers_429_while_async_tasks_still_queue(server):
    streams = Streams(server, SLOTS + QUEUE)
    try:
        wait_for(server, lambda s: s["running"] == SLOTS and s["waiting"] == QUEUE)
        refused = server.request("POST", "/v1/tts", json={"text": "One more.", "seed": 1})
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert "busy" in refused.json()["detail"].lower()

        task = {"step_id": "while-full", "text": "A task waits its turn.", "max_new_tokens": 20}
        created = server.request("POST", "/generate_audio_enhanced_async", json=task)
        assert created.status_code == 200, created.text
        time.sleep(0.5)
        status = server.request("GET", "/get_task_status/while-full").json()["status"]
        assert status == "pending", "a task must not take a place while the engine is full"
    finally:
        streams.stop_all()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = server.request("GET", "/get_task_status/while-full").json()
        if status["status"] not in ("pending", "processing"):
            break
        time.sleep(0.1)
    assert status["status"] == "completed", status
    audio = server.request("GET", "/download_result/while-full")
    assert audio.status_code == 200 and len(audio.content) > 100


def test_async_tasks_run_several_at_once(server):
    for i in range(3):
        task = {"step_id": f"together-{i}", "text": LONG_TEXT[:200], "max_new_tokens": 40}
        assert server.request("POST", "/generate_audio_enhanced_async", json=task).ok
    peak = wait_for(server, lambda s: s["running"] >= 2)["running"]
    assert peak >= 2
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = [
            server.request("GET", f"/get_task_status/together-{i}").json()["status"]
            for i in range(3)
        ]
        if all(s == "completed" for s in done):
            break
        time.sleep(0.1)
    assert done == ["completed"] * 3
