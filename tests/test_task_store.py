"""The task store's bookkeeping of attempts, without a server: a task that crashes the
server every time it runs is given up, a clean shutdown does not count as an attempt."""

from __future__ import annotations

import sqlite3

from fish_speech.tasks.store import MAX_ATTEMPTS, TaskStore

GONE = "999999999:0"  # an owner whose process does not exist: a crashed server


def test_a_task_that_keeps_crashing_the_server_is_given_up(tmp_path):
    store = TaskStore(tmp_path)
    store.create("poison", "wav", b"request")
    store.create("fine", "wav", b"request")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        task = store.claim_next(GONE)
        assert (task.step_id, task.attempts) == ("poison", attempt)
        assert store.requeue_orphans() == ["poison"]  # the next start finds it
    assert store.claim_next(GONE).step_id == "fine"  # the poisoned one is skipped...
    poison = store.get("poison")
    assert poison.status == "failed"  # ...and failed, saying why
    assert f"Gave up after {MAX_ATTEMPTS} attempts" in poison.error


def test_clean_hand_backs_are_not_attempts_and_engine_failures_are(tmp_path):
    store = TaskStore(tmp_path)
    store.create("long", "wav", b"request")
    for _ in range(MAX_ATTEMPTS + 2):  # restarted for deploys, again and again
        store.claim_next("me")
        assert store.requeue("long", "me", count_attempt=False)
    assert store.get("long").attempts == 0
    store.claim_next("me")
    assert store.requeue("long", "me", count_attempt=True)
    assert store.get("long").attempts == 1
    assert not store.requeue("long", "someone else", count_attempt=False)  # not theirs


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
    store = TaskStore(tmp_path)
    task = store.claim_next("me")
    assert (task.step_id, task.attempts) == ("old", 1)
