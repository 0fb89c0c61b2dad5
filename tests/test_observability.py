"""/metrics, the per-synthesis log line and progress reports, over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import API_KEY, make_wav_bytes
from fish_speech.engine import report
from fish_speech.engine.base import AudioSegment

LONG = " ".join(["Progress is reported while this runs."] * 40)
MEDIUM = " ".join(["Progress is reported while this task runs."] * 10)
TASK_STATES = {"pending", "processing", "completed", "failed", "cancelled"}


def scrape(server) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, keyed by (name, sorted labels), parsed by prometheus-client."""
    response = server.request("GET", "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def synthesis_lines(server) -> list[dict]:
    prefix = "fish_speech.synthesis: synthesis {"  # not "synthesis progress {...}"
    return [
        json.loads("{" + line.split(prefix, 1)[1])
        for line in server.log().splitlines()
        if prefix in line
    ]


def wait_for_line(server, **match) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in synthesis_lines(server):
            if all(line.get(k) == v for k, v in match.items()):
                return line
        time.sleep(0.1)
    raise AssertionError(f"no synthesis log line with {match}: {synthesis_lines(server)}")


def test_metrics_move_after_requests(server):
    before = scrape(server)
    reference = {"audio": base64.b64encode(make_wav_bytes()).decode(), "text": "A clip."}
    body = {"text": "Metrics count this.", "references": [reference], "use_memory_cache": "on"}
    for _ in range(2):
        assert server.request("POST", "/v1/tts", json=body).status_code == 200
    assert server.request("GET", "/v1/nothing/here").status_code == 404
    after = scrape(server)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    tts = {"route": "/v1/tts", "method": "POST", "status": "200"}
    assert moved("fish_speech_http_requests_total", **tts) == 2
    unmatched = {"route": "(unmatched)", "method": "GET", "status": "404"}
    assert moved("fish_speech_http_requests_total", **unmatched) == 1
    engine = {"engine": "embedded"}
    assert moved("fish_speech_syntheses_total", outcome="ok", **engine) == 2
    assert moved("fish_speech_characters_total", **engine) == 2 * len(body["text"])
    assert moved("fish_speech_audio_seconds_total", **engine) > 1.0
    for histogram in (
        "fish_speech_time_to_first_audio_seconds",
        "fish_speech_synthesis_seconds",
        "fish_speech_real_time_factor",
    ):
        assert moved(f"{histogram}_count", **engine) == 2
        assert moved(f"{histogram}_sum", **engine) > 0
    # The same reference twice with the memory cache on: one miss, then one hit.
    assert moved("fish_speech_reference_cache_misses_total") == 1
    assert moved("fish_speech_reference_cache_hits_total") == 1
    assert value(after, "fish_speech_queue_depth") == 0
    assert value(after, "fish_speech_running_batch") == 0
    states = {dict(labels)["state"] for name, labels in after if name == "fish_speech_tasks"}
    assert states == TASK_STATES
    # The embedded engine has no model frames: no frames-per-second observations.
    assert value(after, "fish_speech_frames_per_second_count", **engine) == 0


def test_refused_requests_are_counted_under_their_route(auth_server):
    before = scrape(auth_server)
    refused = auth_server.session.post(auth_server.url("/v1/tts"), json={"text": "x"}, timeout=10)
    assert refused.status_code == 401
    after = scrape(auth_server)
    labels = {"route": "/v1/tts", "method": "POST", "status": "401"}
    name = "fish_speech_http_requests_total"
    assert value(after, name, **labels) - value(before, name, **labels) == 1
    assert auth_server.session.get(auth_server.url("/metrics"), timeout=10).status_code == 401
    assert API_KEY  # /metrics needs the key (scrape() sends it)


def test_one_structured_log_line_per_synthesis(server):
    text = "One line in the log for this request, with its numbers."
    assert server.request("POST", "/v1/tts", json={"text": text}).status_code == 200
    line = wait_for_line(server, characters=len(text), outcome="ok")
    assert set(line) >= {
        "id",
        "engine",
        "characters",
        "audio_seconds",
        "first_audio_seconds",
        "synthesis_seconds",
        "rtf",
        "outcome",
    }
    assert line["engine"] == "embedded"
    assert line["audio_seconds"] > 1
    assert 0 < line["first_audio_seconds"] <= line["synthesis_seconds"]
    assert line["rtf"] == pytest.approx(line["synthesis_seconds"] / line["audio_seconds"], 1e-2)

    # A client that hangs up mid-stream: the synthesis stops and says so.
    with server.session.post(
        server.url("/v1/tts"), json={"text": LONG, "streaming": True}, stream=True, timeout=60
    ) as response:
        assert response.status_code == 200
        next(response.iter_content(4096))
    wait_for_line(server, characters=len(LONG), outcome="cancelled")


def test_task_status_reports_progress(server):
    created = server.request(
        "POST",
        "/generate_audio_enhanced_async",
        json={"step_id": "progress-task", "text": MEDIUM, "format": "wav"},
    )
    assert created.status_code == 200
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        reply = server.request("GET", "/get_task_status/progress-task")
        assert reply.status_code == 200, reply.text
        status = reply.json()
        seen.append((status["status"], status["progress"]))
        if status["status"] in ("completed", "failed"):
            break
        time.sleep(0.05)
    assert seen[-1] == ("completed", 1.0), seen
    assert all(p == 0 for s, p in seen if s == "pending")
    running = [p for s, p in seen if s == "processing"]
    assert any(0 < p < 1 for p in running), seen
    assert running == sorted(running)  # it only moves forward
    listed = server.request("GET", "/v1/tasks", params={"limit": 500}).json()["tasks"]
    entry = next(t for t in listed if t["step_id"] == "progress-task")
    assert entry["progress"] == 1.0 and entry["text"].startswith("Progress is reported")
    assert wait_for_line(server, id="task:progress-task")["outcome"] == "ok"


def test_long_requests_log_their_progress(monkeypatch, caplog):
    """In-process: the progress lines a minute-long request writes every PROGRESS_LOG_S."""
    monkeypatch.setattr(report, "PROGRESS_LOG_S", 0.0)

    async def segments():
        for progress in (0.25, 0.5, 1.0):
            yield AudioSegment(np.zeros(4410, np.float32), progress=progress, frames=3)

    reports = []

    async def consume():
        stream = report.observe(segments(), "req-1", "test", 40, [reports.append])
        return [segment async for segment in stream]

    with caplog.at_level(logging.INFO, logger="fish_speech.synthesis"):
        assert len(asyncio.run(consume())) == 3
    progress = [
        json.loads(r.getMessage().split("synthesis progress ", 1)[1])
        for r in caplog.records
        if r.getMessage().startswith("synthesis progress ")
    ]
    assert [p["progress"] for p in progress] == [0.25, 0.5, 1.0]
    assert progress[-1]["audio_seconds"] == pytest.approx(0.3)
    (final,) = reports
    assert (final.id, final.frames, final.outcome) == ("req-1", 9, "ok")
    assert final.audio_seconds == pytest.approx(0.3)
