"""Async tasks over real HTTP: lifecycle, cancellation, and surviving a crash."""

from __future__ import annotations

import io
import os
import resource
import signal
import sqlite3
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


def result_files(workdir) -> list[str]:
    return sorted(p.name for p in (workdir / "data" / "task_results").iterdir())


def test_finished_tasks_expire_at_start_up_and_while_running(tmp_path):
    first = launch_server(tmp_path)
    try:
        assert create(first, step_id="old", text="Hello.", format="wav").status_code == 200
        wait_for(first, "old", {"completed"})
    finally:
        first.stop()
    assert len(result_files(tmp_path)) == 1
    with sqlite3.connect(tmp_path / "data" / "tasks.sqlite3") as db:
        day_ago = time.time() - 25 * 3600
        db.execute("UPDATE tasks SET completed_at = ? WHERE step_id = 'old'", (day_ago,))
    # Left by a crash: a result no task owns and a half-written file, both hours old; and
    # a file another process is writing right now, which must be left alone.
    results = tmp_path / "data" / "task_results"
    hours_ago = time.time() - 2 * 3600
    for name in ("0123abcd.wav", "0123abcd.4242.part"):
        (results / name).write_bytes(b"left over")
        os.utime(results / name, (hours_ago, hours_ago))
    (results / "being-written.77.part").write_bytes(b"in progress")
    in_future = time.time() + 600  # "just written", however slowly the server starts
    os.utime(results / "being-written.77.part", (in_future, in_future))

    second = launch_server(tmp_path, "--task-retention-hours", "0.002")  # 7.2 s
    try:
        assert second.request("GET", "/get_task_status/old").status_code == 404
        assert result_files(tmp_path) == ["being-written.77.part"]

        assert create(second, step_id="recent", text="Hello.", format="wav").status_code == 200
        wait_for(second, "recent", {"completed"})
        assert second.request("GET", "/download_result/recent").status_code == 200
        deadline = time.monotonic() + 30
        while second.request("GET", "/get_task_status/recent").status_code != 404:
            assert time.monotonic() < deadline, "the finished task never expired"
            time.sleep(0.2)
        assert result_files(tmp_path) == ["being-written.77.part"]
    finally:
        second.stop()


def limit_file_size(limit: int):
    # Like a full disk, but one that root cannot write past either: writes beyond the
    # limit fail with EFBIG (Python ignores SIGXFSZ, so it is an OSError, not a kill).
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_result_that_cannot_be_written_fails_the_task_and_the_server_keeps_serving(tmp_path):
    server = launch_server(tmp_path, preexec_fn=limit_file_size(256 * 1024))
    try:
        text = "This result is too big for the space left on the disk. " * 3  # ~700 kB
        assert create(server, step_id="big", text=text, format="wav").status_code == 200
        failed = wait_for(server, "big", {"completed", "failed"})
        assert failed["status"] == "failed", failed
        assert "Could not save the result" in failed["error"]
        assert "File too large" in failed["error"]
        assert result_files(tmp_path) == []  # nothing half-written left, or served
        assert server.request("GET", "/download_result/big").status_code == 400

        # The results folder becomes unwritable (here: a file where the folder was).
        results = tmp_path / "data" / "task_results"
        results.rename(tmp_path / "data" / "results-away")
        results.write_text("not a folder")
        assert create(server, step_id="nowhere", text="Hi.", format="wav").status_code == 200
        nowhere = wait_for(server, "nowhere", {"completed", "failed"})
        assert nowhere["status"] == "failed" and "Not a directory" in nowhere["error"]

        # Meanwhile, and afterwards, everything else keeps working.
        speech = server.request("POST", "/v1/tts", json={"text": "Still serving."})
        assert_speech(*decode_wav(speech.content))
        results.unlink()
        (tmp_path / "data" / "results-away").rename(results)
        assert create(server, step_id="small", text="Hello.", format="wav").status_code == 200
        assert wait_for(server, "small", {"completed", "failed"})["status"] == "completed"
        assert_speech(*decode_wav(server.request("GET", "/download_result/small").content))
    finally:
        server.stop()
