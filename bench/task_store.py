"""Bookkeeping cost of one async task in each task store; prints JSON.

    python bench/task_store.py [--tasks 500] [--redis-url redis://127.0.0.1:6379/15]

Times create, claim and complete (with a 100 kB result, about 1 s of WAV) per task, for
the local store (SQLite in a temporary folder) and, when a Redis is given, the Redis store
(the database is emptied first). Without --redis-url a redis-server on PATH is started on a
free port for the run. These are the only store calls on a task's path besides polling,
so they bound the tasks per second a queue can hand out, far above what engines consume.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from fish_speech.models.precision import cpu_name
from fish_speech.storage.redis_client import connect
from fish_speech.tasks.base import TaskStore
from fish_speech.tasks.local import LocalTaskStore
from fish_speech.tasks.redis_store import RedisTaskStore

RESULT = bytes(100_000)


def measure(store: TaskStore, tasks: int) -> dict[str, float]:
    owner = store.make_owner()
    timings = {"create_ms": 0.0, "claim_ms": 0.0, "complete_ms": 0.0}
    for n in range(tasks):
        start = time.perf_counter()
        store.create(f"bench {n}", "wav", b"request")
        created = time.perf_counter()
        task = store.claim_next(owner)
        claimed = time.perf_counter()
        assert task is not None and store.complete(task.step_id, owner, RESULT)
        done = time.perf_counter()
        timings["create_ms"] += created - start
        timings["claim_ms"] += claimed - created
        timings["complete_ms"] += done - claimed
    per_task = {name: round(total * 1000 / tasks, 3) for name, total in timings.items()}
    per_task["tasks_per_second"] = round(tasks / sum(timings.values()), 1)
    return per_task


@contextmanager
def local_redis() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    figures: dict[str, object] = {"cpu": cpu_name(), "tasks": args.tasks}
    with tempfile.TemporaryDirectory() as folder:
        figures["local"] = measure(LocalTaskStore(Path(folder)), args.tasks)
    if args.redis_url is None and shutil.which("redis-server") is None:
        figures["redis"] = "skipped: no --redis-url and no redis-server on PATH"
    else:
        with local_redis() if args.redis_url is None else nullcontext(args.redis_url) as url:
            client = connect(url)
            client.flushdb()
            store = RedisTaskStore(client, visibility_timeout_s=60, retention_s=3600)
            figures["redis"] = measure(store, args.tasks)
            store.close()
            figures["redis_server"] = client.info("server")["redis_version"]
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
