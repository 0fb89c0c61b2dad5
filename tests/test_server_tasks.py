"""Async tasks over real HTTP: lifecycle, cancellation, and surviving a crash."""

from __future__ import annotations

import io
import signal
import time

import ormsgpack
import pytest
import soundfile as sf

from conftest import assert_speech, decode_wav, launch_server
from fish_speech.utils.schema import AsyncGenerateRequest

LONG = " ".join(["This long task keeps the engine busy for a while."] * 36)


def create(server, **fields):
    return server.request("POST", "/generate_audio_enhanced_async", json=fields)


def status(server, step_id: str) -> dict:
    response = server.request("GET", f"/get_task_status/{step_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(server, step_id: str, states: set[str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = status(server, step_id)
        if current["status"] in states:
            return current
        time.sleep(0.1)
    raise AssertionError(f"task {step_id} never reached {states}: {current}")


def test_seed_snippet_creates_a_task_that_completes(server):
    data = AsyncGenerateRequest(step_id="task_001", text="这是一段需要异步处理的文本。And English.")
    response = server.request(
        "POST",
        "/generate_audio_enhanced_async",
        params={"format": "msgpack"},
        data=ormsgpack.packb(data, option=ormsgpack.OPT_SERIALIZE_PYDANTIC),
        headers={"content-type": "application/msgpack"},
    )
    assert response.status_code == 200, response.text
    result = ormsgpack.unpackb(response.content)
    assert result == {
        "success": True,
        "message": "Task created and started",
        "step_id": "task_001",
        "status": "pending",
    }
    done = wait_for(server, "task_001", {"completed", "failed"})
    assert done["status"] == "completed", done
    assert done["created_at"] <= done["started_at"] <= done["completed_at"]
    assert done["download_url"] == "/download_result/task_001"

    download = server.request("GET", done["download_url"])
    assert download.headers["content-type"] == "audio/mpeg"  # the async default format
    assert_speech(*sf.read(io.BytesIO(download.content), dtype="float32"))
    by_query = server.request("GET", "/download_result", params={"step_id": "task_001"})
    assert by_query.content == download.content
    assert server.request("GET", "/get_task_status", params={"step_id": "task_001"}).json() == done


def test_ids_conflict_while_active_and_are_reusable_after(server):
    assert create(server, step_id="dup", text=LONG, format="wav").status_code == 200
    again = create(server, step_id="dup", text="Hi.")
    assert again.status_code == 409
    early = server.request("GET", "/download_result/dup")
    assert early.status_code == 400 and "not completed" in early.json()["detail"]
    wait_for(server, "dup", {"completed"})
    assert create(server, step_id="dup", text="Short now.", format="wav").status_code == 200
    wait_for(server, "dup", {"completed"})
    short = decode_wav(server.request("GET", "/download_result/dup").content)[0]
    assert len(short) / 44100 < 5  # the replaced task's result, not the long one


def test_cancel_one_and_all(server):
    assert create(server, step_id="c1", text=LONG).status_code == 200
    assert create(server, step_id="c2", text=LONG).status_code == 200
    assert create(server, step_id="c3", text=LONG).status_code == 200
    wait_for(server, "c1", {"processing"})
    stopped = server.request("POST", "/stop_async_task/c1")
    assert stopped.json() == {"success": True, "message": "Task c1 stopped", "step_id": "c1"}
    all_stopped = server.request("POST", "/stop_generation").json()
    assert all_stopped == {"success": True, "message": "Stopped 2 task(s)", "step_id": None}
    time.sleep(1.0)  # give a runner the chance to (wrongly) overwrite the cancellation
    for step_id in ("c1", "c2", "c3"):
        assert status(server, step_id)["status"] == "cancelled"
    assert server.request("GET", "/download_result/c1").status_code == 400


def test_unknown_and_invalid(server):
    assert server.request("GET", "/get_task_status/nope").status_code == 404
    assert server.request("GET", "/download_result/nope").status_code == 404
    assert server.request("POST", "/stop_async_task/nope").status_code == 404
    assert server.request("GET", "/get_task_status").status_code == 400
    assert create(server, text="no id").status_code == 400
    assert create(server, step_id="x", text="hi", format="ogg").status_code == 400
    missing_voice = create(server, step_id="x", text="hi", reference_id="nobody")
    assert missing_voice.status_code == 404
    assert server.request("GET", "/get_task_status/x").status_code == 404  # nothing queued


@pytest.mark.parametrize("kill_signal", [signal.SIGKILL])
def test_accepted_task_survives_a_crash(tmp_path, kill_signal):
    first = launch_server(tmp_path)
    try:
        assert create(first, step_id="survivor", text=LONG, format="wav").status_code == 200
        wait_for(first, "survivor", {"processing"})
        first.process.send_signal(kill_signal)
        first.process.wait(timeout=20)
    finally:
        first.stop()
    second = launch_server(tmp_path)
    try:
        done = wait_for(second, "survivor", {"completed", "failed"})
        assert done["status"] == "completed", done
        audio, rate = decode_wav(second.request("GET", "/download_result/survivor").content)
        assert_speech(audio, rate, min_seconds=20)
    finally:
        second.stop()
