"""The task stores' contract, without a server, on both implementations: the local one
(SQLite + files) and the Redis one (a real redis-server). A task that crashes the server
every time it runs is given up, a clean shutdown does not count as an attempt, an outcome
is recorded only by the task's owner, and finished tasks expire with their results."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from fish_speech.storage import StorageUnavailable
from fish_speech.storage.redis_client import connect
from fish_speech.tasks.base import ALL_TASKS, MAX_ATTEMPTS, TaskConflict, TaskStore
from fish_speech.tasks.local import LocalTaskStore
from fish_speech.tasks.redis_store import RedisTaskStore

GONE = "999999999:0"  # a local owner whose process does not exist: a crashed server
VISIBILITY_S = 0.3


@dataclass
class Subject:
    store: TaskStore
    owner: str
    crash: Callable[[str], None]  # the owner of a running task dies; make it claimable


@pytest.fixture(params=["local", "redis"])
def subject(request, tmp_path) -> Iterator[Subject]:
    if request.param == "local":
        store = LocalTaskStore(tmp_path)
        # The next start finds the dead owner's task.
        yield Subject(store, GONE, lambda _: store.recover())
        return
    redis_server = request.getfixturevalue("redis_server")
    redis_server.client().flushdb()
    store = RedisTaskStore(connect(redis_server.url), VISIBILITY_S, retention_s=3600)

    def crash(step_id: str) -> None:
        store.release(step_id)  # no more heartbeats, as from a killed process
        time.sleep(VISIBILITY_S * 1.5)

    yield Subject(store, store.make_owner(), crash)
    store.close()


def test_a_task_that_keeps_crashing_the_server_is_given_up(subject):
    store = subject.store
    store.create("poison", "wav", b"request")
    time.sleep(0.01)  # created strictly later
    store.create("fine", "wav", b"request")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        task = store.claim_next(subject.owner)
        assert (task.step_id, task.attempts) == ("poison", attempt)
        subject.crash("poison")
    assert store.claim_next(subject.owner).step_id == "fine"  # the poisoned one is skipped...
    poison = store.get("poison")
    assert poison.status == "failed"  # ...and failed, saying why
    assert f"Gave up after {MAX_ATTEMPTS} attempts" in poison.error


def test_clean_hand_backs_are_not_attempts_and_engine_failures_are(subject):
    store, me = subject.store, subject.owner
    store.create("long", "wav", b"request")
    for _ in range(MAX_ATTEMPTS + 2):  # restarted for deploys, again and again
        assert store.claim_next(me).step_id == "long"
        assert store.requeue("long", me, count_attempt=False)
    assert store.get("long").attempts == 0
    store.claim_next(me)
    assert store.requeue("long", me, count_attempt=True)
    assert store.get("long").attempts == 1
    assert not store.requeue("long", "someone else", count_attempt=False)  # not theirs


def test_only_the_owner_records_the_outcome_and_only_once(subject):
    store, me = subject.store, subject.owner
    store.create("t", "mp3", b"request")
    assert store.claim_next(me).status == "processing"
    store.set_progress("t", me, 0.5)
    store.set_progress("t", "someone else", 0.9)  # ignored
    assert store.get("t").progress == 0.5
    assert not store.complete("t", "someone else", b"theirs")
    assert store.complete("t", me, b"audio")
    task = store.get("t")
    assert (task.status, task.format, task.completed_at is not None) == ("completed", "mp3", True)
    assert store.read_result(task) == b"audio"
    assert not store.complete("t", me, b"again")  # once
    assert not store.fail("t", me, "late")
    assert store.get("t").status == "completed"


def test_a_cancelled_task_keeps_no_result(subject):
    store, me = subject.store, subject.owner
    store.create("t", "wav", b"request")
    store.claim_next(me)
    assert store.cancel("t").status == "processing"  # as it was
    assert not store.complete("t", me, b"audio")
    task = store.get("t")
    assert task.status == "cancelled" and store.read_result(task) is None
    assert store.cancel("t").status == "cancelled"  # nothing more to do
    assert store.cancel("unknown") is None
    assert store.claim_next(me) is None


def test_ids_are_reused_only_once_the_task_is_finished(subject):
    store, me = subject.store, subject.owner
    store.create("t", "wav", b"first")
    with pytest.raises(TaskConflict, match="pending"):
        store.create("t", "wav", b"second")
    store.claim_next(me)
    with pytest.raises(TaskConflict, match="processing"):
        store.create("t", "wav", b"second")
    store.complete("t", me, b"audio")
    store.create("t", "flac", b"second")  # replaces the finished one and its result
    task = store.get("t")
    assert (task.status, task.request, task.format) == ("pending", b"second", "flac")
    assert store.read_result(task) is None
    assert store.claim_next(me).request == b"second"


def test_counts_recent_and_stop_all(subject):
    store, me = subject.store, subject.owner
    for name in ("a", "b", "c"):
        store.create(name, "wav", name.encode())
        time.sleep(0.01)
    store.claim_next(me)
    assert store.count_by_status() == {
        "pending": 2,
        "processing": 1,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert [task.step_id for task in store.recent(2)] == ["c", "b"]
    assert store.cancel_all() == 3
    assert store.count_by_status()["cancelled"] == 3
    assert store.claim_next(me) is None


def test_finished_tasks_expire_with_their_results(subject):
    store, me = subject.store, subject.owner
    store.create("old", "wav", b"request")
    store.claim_next(me)
    store.complete("old", me, b"audio")
    store.create("waiting", "wav", b"request")
    assert store.sweep(time.time() - 60, 0) == 0  # finished only just now
    assert store.sweep(time.time() + 1, 0) == 1
    assert store.get("old") is None
    assert store.get("waiting").status == "pending"  # active tasks never expire
    assert [task.step_id for task in store.recent(10)] == ["waiting"]


def test_a_data_folder_from_before_attempts_opens(tmp_path):
    with sqlite3.connect(tmp_path / "tasks.sqlite3") as db:
        db.execute(
            "CREATE TABLE tasks (step_id TEXT PRIMARY KEY, status TEXT NOT NULL, "
            "format TEXT NOT NULL, request BLOB NOT NULL, owner TEXT, created_at REAL NOT NULL, "
            "started_at REAL, completed_at REAL, error TEXT)"
        )
        db.execute(
            "INSERT INTO tasks VALUES ('old', 'pending', 'wav', x'00', NULL, 1, NULL, NULL, NULL)"
        )
    store = LocalTaskStore(tmp_path)
    task = store.claim_next("me")
    assert (task.step_id, task.attempts) == ("old", 1)


def _redis_store(redis_server, **kwargs) -> RedisTaskStore:
    redis_server.client().flushdb()
    return RedisTaskStore(connect(redis_server.url), VISIBILITY_S, retention_s=3600, **kwargs)


def test_a_running_instance_keeps_its_task_and_a_dead_one_loses_it(redis_server):
    store = _redis_store(redis_server)
    alive, other = store.make_owner(), store.make_owner()
    store.create("t", "wav", b"request")
    store.claim_next(alive)
    time.sleep(VISIBILITY_S * 3)  # heartbeats keep it from looking abandoned
    assert store.claim_next(other) is None
    store.release("t")  # dies
    time.sleep(VISIBILITY_S * 1.5)
    taken = store.claim_next(other)
    assert (taken.step_id, taken.owner, taken.attempts) == ("t", other, 2)
    assert not store.complete("t", alive, b"late")  # the old owner, back from a pause
    assert store.complete("t", other, b"audio")
    assert store.read_result(store.get("t")) == b"audio"
    store.close()


def test_stops_are_published_to_every_instance(redis_server):
    store = _redis_store(redis_server)
    heard: list[str] = []
    got_two = threading.Event()

    def listen(step_id: str) -> None:
        heard.append(step_id)
        if len(heard) == 2:
            got_two.set()

    store.on_stop(listen)
    time.sleep(0.5)  # subscribed
    for name in ("a", "b", "c"):
        store.create(name, "wav", b"request")
    store.cancel("a")
    store.cancel_all()
    assert got_two.wait(5)
    assert heard == ["a", ALL_TASKS]
    store.close()


def test_results_in_a_shared_folder_belong_to_one_run(redis_server, tmp_path):
    store = _redis_store(redis_server, results_dir=tmp_path / "results")
    me, other = store.make_owner(), store.make_owner()
    store.create("t", "wav", b"request")
    store.claim_next(me)
    assert not store.complete("t", other, b"theirs")
    assert store.complete("t", me, b"audio")
    files = list((tmp_path / "results").iterdir())
    assert len(files) == 1 and files[0].read_bytes() == b"audio"  # the loser left nothing
    assert store.read_result(store.get("t")) == b"audio"
    stray = tmp_path / "results" / "left-by-a-crash.wav"
    stray.write_bytes(b"x")
    store.sweep(time.time() - 60, time.time() + 1)
    assert not stray.exists() and files[0].exists()
    store.sweep(time.time() + 1, time.time() + 1)
    assert not any((tmp_path / "results").iterdir())
    store.close()


def test_an_unreachable_redis_is_a_clear_error():
    from conftest import free_port

    store = RedisTaskStore(connect(f"redis://127.0.0.1:{free_port()}/0"), 5, 3600)
    with pytest.raises(StorageUnavailable, match=r"Redis at 127\.0\.0\.1:\d+/0 is unavailable"):
        store.create("t", "wav", b"request")
    with pytest.raises(StorageUnavailable):
        store.get("t")
    store.close()
