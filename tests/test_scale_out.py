"""Scale-out over real HTTP: server instances on different ports (and working folders)
sharing one real redis-server through ``--redis-url``, as behind a load balancer.

The instances run ``tests/faulty_server.py`` (the real server) so that a ``SLOW`` file in an
instance's folder keeps its tasks running long enough to be watched, stopped and killed.
"""

from __future__ import annotations

import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from test_server_tasks import status, wait_for

from conftest import (
    REPO,
    TINY_FISH_ARGS,
    ServerProcess,
    add_reference,
    assert_speech,
    decode_wav,
    launch_server,
    make_wav_bytes,
    run_server_until_exit,
)

FAULTY = [sys.executable, str(REPO / "tests" / "faulty_server.py")]
VISIBILITY_S = 3.0  # an instance silent this long is taken for dead
LONG = " ".join(["This long task keeps the engine busy for a while."] * 36)  # 9 segments


def launch(workdir: Path, redis_url: str, *args: str) -> ServerProcess:
    return launch_server(
        workdir,
        "--redis-url",
        redis_url,
        "--task-visibility-timeout",
        str(VISIBILITY_S),
        *args,
        entry=FAULTY,
    )


def slow_down(*instances: ServerProcess, seconds: float | None = 1.0) -> None:
    """Each segment of these instances' engines takes ``seconds`` longer (None: normal)."""
    for instance in instances:
        marker = instance.workdir / "SLOW"
        if seconds is None:
            marker.unlink(missing_ok=True)
        else:
            marker.write_text(str(seconds))


_databases = iter(range(1, 16))  # db 0 is the store tests'


def empty_database(redis_server) -> str:
    """The URL of a Redis database no other instance uses: a deployment of its own."""
    db = next(_databases)
    redis.Redis(port=redis_server.port, db=db).flushdb()
    return f"redis://127.0.0.1:{redis_server.port}/{db}"


@pytest.fixture
def redis_url(redis_server) -> str:
    return empty_database(redis_server)


@pytest.fixture(scope="module")
def pair(redis_server, tmp_path_factory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    url = empty_database(redis_server)
    a = launch(tmp_path_factory.mktemp("instance_a"), url)
    b = launch(tmp_path_factory.mktemp("instance_b"), url)
    yield a, b
    a.stop()
    b.stop()


def create(instance: ServerProcess, step_id: str, text: str = "A short task.", **fields):
    return instance.request(
        "POST",
        "/generate_audio_enhanced_async",
        json={"step_id": step_id, "text": text, "format": "wav", **fields},
    )


def metric(instance: ServerProcess, name: str, labels: str = "") -> float:
    text = instance.request("GET", "/metrics").text
    pattern = rf"^{re.escape(name)}{re.escape(labels)} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"{name}{labels} not in /metrics"
    return float(found.group(1))


def running_here(instance: ServerProcess) -> float:
    return metric(instance, "fish_speech_tasks_running_here")


def runner_of(instances: tuple[ServerProcess, ...], timeout: float = 30) -> ServerProcess:
    """The instance running the one task that runs now."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [instance for instance in instances if running_here(instance) > 0]
        if len(busy) == 1:
            return busy[0]
        time.sleep(0.1)
    raise AssertionError("no single instance runs the task")


def test_a_voice_added_on_one_instance_is_used_and_renamed_on_the_other(pair):
    a, b = pair
    added = add_reference(
        a, "shared voice", make_wav_bytes(seconds=2.0), "The voice everybody shares."
    )
    assert added.status_code == 200, added.text
    assert "shared voice" in b.request("GET", "/v1/references/list").json()["reference_ids"]
    spoken = b.request(
        "POST", "/v1/tts", json={"text": "Hello there.", "reference_id": "shared voice"}
    )
    assert spoken.status_code == 200, spoken.text
    assert_speech(*decode_wav(spoken.content))
    again = add_reference(b, "shared voice", text="Another voice.")
    assert again.status_code == 409  # the id is taken everywhere

    renamed = b.request(
        "POST",
        "/v1/references/update",
        json={"old_reference_id": "shared voice", "new_reference_id": "renamed voice"},
    )
    assert renamed.status_code == 200, renamed.text
    ids = a.request("GET", "/v1/references/list").json()["reference_ids"]
    assert "renamed voice" in ids and "shared voice" not in ids
    old = a.request("POST", "/v1/tts", json={"text": "Hello.", "reference_id": "shared voice"})
    assert old.status_code == 404
    new = a.request("POST", "/v1/tts", json={"text": "Hello.", "reference_id": "renamed voice"})
    assert new.status_code == 200

    deleted = a.request("DELETE", "/v1/references/delete", json={"reference_id": "renamed voice"})
    assert deleted.status_code == 200
    gone = b.request("POST", "/v1/tts", json={"text": "Hello.", "reference_id": "renamed voice"})
    assert gone.status_code == 404
    # Neither instance wrote the voice into its own folder: it lives in Redis only.
    assert not (a.workdir / "references").exists() and not (b.workdir / "references").exists()


def test_a_task_created_on_one_is_polled_and_downloaded_on_the_other(pair):
    a, b = pair
    assert (
        create(a, "made on a", "Created on one instance, fetched from the other.").status_code
        == 200
    )
    done = wait_for(b, "made on a", {"completed", "failed"})
    assert done["status"] == "completed", done
    download = b.request("GET", done["download_url"])
    assert download.status_code == 200
    assert_speech(*decode_wav(download.content))
    listed = [task["step_id"] for task in b.request("GET", "/v1/tasks").json()["tasks"]]
    assert "made on a" in listed


def test_stopping_a_task_on_one_instance_stops_it_where_it_runs(pair):
    a, b = pair
    slow_down(a, b)
    try:
        assert create(a, "stop me", LONG).status_code == 200
        wait_for(b, "stop me", {"processing"})
        runner = runner_of(pair)
        other = b if runner is a else a
        stopped = other.request("POST", "/stop_async_task/stop me")
        assert stopped.json()["message"] == "Task stop me stopped"
        deadline = time.monotonic() + 5  # the task itself would run for 10 s or more
        while running_here(runner) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running_here(runner) == 0
        assert "Task stop me cancelled" in runner.log()
        assert status(runner, "stop me")["status"] == "cancelled"

        for step_id in ("all 1", "all 2"):
            assert create(b, step_id, LONG).status_code == 200
        wait_for(a, "all 1", {"processing"})
        assert other.request("POST", "/stop_generation").json()["message"] == "Stopped 2 task(s)"
        deadline = time.monotonic() + 5
        while (running_here(a) or running_here(b)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running_here(a) == running_here(b) == 0
    finally:
        slow_down(a, b, seconds=None)


def test_twenty_tasks_spread_over_both_run_exactly_once(pair):
    a, b = pair
    label = '{outcome="completed"}'
    before = sum(metric(i, "fish_speech_tasks_finished_here_total", label) for i in pair)
    ids = [f"spread {n}" for n in range(20)]
    for n, step_id in enumerate(ids):
        assert create(pair[n % 2], step_id, f"Task number {n}.").status_code == 200
    for n, step_id in enumerate(ids):
        done = wait_for(pair[(n + 1) % 2], step_id, {"completed", "failed"})
        assert done["status"] == "completed", done
        assert_speech(*decode_wav(pair[n % 2].request("GET", done["download_url"]).content))
    after = sum(metric(i, "fish_speech_tasks_finished_here_total", label) for i in pair)
    assert after - before == 20
    logs = a.log() + b.log()
    for step_id in ids:
        assert len(re.findall(rf"Running task {step_id} \(attempt", logs)) == 1, step_id


def test_the_task_of_a_killed_instance_is_finished_by_the_other(redis_url, tmp_path):
    first = launch(tmp_path / "first", redis_url)
    second = launch(tmp_path / "second", redis_url)
    try:
        slow_down(first, second)
        assert create(first, "survivor", LONG).status_code == 200
        wait_for(second, "survivor", {"processing"})
        victim = runner_of((first, second))
        survivor = second if victim is first else first
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(timeout=20)
        slow_down(survivor, seconds=None)
        done = wait_for(survivor, "survivor", {"completed", "failed"}, timeout=120)
        assert done["status"] == "completed", done
        assert "Running task survivor (attempt 2)" in survivor.log()
        audio, rate = decode_wav(survivor.request("GET", done["download_url"]).content)
        assert_speech(audio, rate, min_seconds=20)  # the whole text, not the part before
    finally:
        first.stop()
        second.stop()


def test_redis_down_gives_clear_503s_and_loses_no_accepted_task(pair, redis_server):
    a, b = pair
    slow_down(a, b, seconds=0.2)
    try:
        for n in range(4):
            assert create(pair[n % 2], f"through outage {n}", LONG).status_code == 200
        wait_for(a, "through outage 0", {"processing"})
        redis_server.stop()
        refused = create(a, "not accepted")
        assert refused.status_code == 503
        assert refused.headers["Retry-After"]
        assert "Redis at 127.0.0.1" in refused.json()["detail"]
        for path in ("/get_task_status/through outage 1", "/v1/references/list"):
            response = b.request("GET", path)
            assert response.status_code == 503 and "Redis" in response.json()["detail"], path
        with_voice = a.request("POST", "/v1/tts", json={"text": "Hi.", "reference_id": "any"})
        assert with_voice.status_code == 503
        # Speech that needs no shared state goes on.
        plain = b.request("POST", "/v1/tts", json={"text": "Still speaking."})
        assert plain.status_code == 200
        assert_speech(*decode_wav(plain.content))
        assert a.request("GET", "/v1/health").status_code == 200
        assert metric(a, "fish_speech_storage_up") == 0
        time.sleep(VISIBILITY_S)  # longer than an instance may go without touching its task
    finally:
        redis_server.start()
        slow_down(a, b, seconds=None)
    for n in range(4):
        done = wait_for(pair[(n + 1) % 2], f"through outage {n}", {"completed", "failed"})
        assert done["status"] == "completed", done
        audio, rate = decode_wav(a.request("GET", done["download_url"]).content)
        assert_speech(audio, rate, min_seconds=20)
    assert a.request("GET", "/get_task_status/not accepted").status_code == 404
    assert metric(a, "fish_speech_storage_up") == 1


def test_a_saved_voice_is_encoded_once_for_every_instance(redis_url, tmp_path):
    """With the Fish engine the prepared prompt (the codec's codes) is stored in Redis by
    the first instance that uses the voice; the other loads it instead of encoding again."""
    fish = [*TINY_FISH_ARGS, "--max-batch-size", "1"]
    first = launch(tmp_path / "first", redis_url, *fish)
    second = launch(tmp_path / "second", redis_url, *fish)
    try:
        added = add_reference(first, "fish voice", text="A voice for the Fish engine.")
        assert added.status_code == 200, added.text
        body = {"text": "Hi.", "reference_id": "fish voice", "max_new_tokens": 8, "seed": 1}
        for instance in (first, second):
            spoken = instance.request("POST", "/v1/tts", json=body)
            assert spoken.status_code == 200, spoken.text
            assert decode_wav(spoken.content)[1] == 44100
        loads = [
            instance.request("GET", "/v1/health").json()["load"] for instance in (first, second)
        ]
        assert (loads[0]["reference_prompts_prepared"], loads[0]["reference_prompts_loaded"]) == (
            1,
            0,
        )
        assert (loads[1]["reference_prompts_prepared"], loads[1]["reference_prompts_loaded"]) == (
            0,
            1,
        )
    finally:
        first.stop()
        second.stop()


def test_redis_flags_are_checked_at_start(tmp_path):
    result = run_server_until_exit(tmp_path, "--redis-url", "http://localhost:6379", timeout=60)
    assert result.returncode != 0
    assert "--redis-url must be a redis://" in result.stderr
