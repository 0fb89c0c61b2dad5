"""The shared task store: one Redis for every server instance (``--redis-url``).

- The queue is a Redis Stream read through one consumer group: each instance's runner is
  a consumer, so any instance with room takes the next task.
- A task's record is a hash; sets per state give counts, sorted sets give the newest tasks
  and the finished ones to expire. Every change of state is one Lua script, so it is atomic
  and conditional on the task still being in the state (and with the owner) expected.
- An entry stays in the group's pending list while its task runs; the running instance
  touches it every third of ``visibility_timeout_s``. An instance that dies stops touching
  it, and once it has been idle that long another instance claims it and runs the task again
  (a crash counts as an attempt, as in the local store).
- Results go into Redis with the retention as TTL, or into ``results_dir`` (a folder every
  instance mounts) under a name unique to the run, recorded when the task completes.
- A stop is published on a channel, so the instance running the task stops at once.
"""

from __future__ import annotations

import hashlib
import logging
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fish_speech.storage import StorageUnavailable
from fish_speech.storage.redis_client import PREFIX, describe, text, unavailable_on_error
from fish_speech.tasks.base import (
    ACTIVE,
    ALL_TASKS,
    MAX_ATTEMPTS,
    TASK_STATES,
    Task,
    TaskConflict,
    gave_up_message,
)
from fish_speech.tasks.local import remove_stray_files, write_whole

log = logging.getLogger(__name__)

QUEUE = PREFIX + "tasks:queue"
GROUP = "runners"
CREATED = PREFIX + "tasks:created"
FINISHED = PREFIX + "tasks:finished"
STOPS = PREFIX + "tasks:stops"
SWEEP_BATCH = 500
IDLE_CONSUMER_MS = 3_600_000  # consumers (instances) gone this long are forgotten
_GAVE_UP = gave_up_message(MAX_ATTEMPTS)


def _task_key(step_id: str) -> str:
    """A task's hash (the scripts' ``task_key``)."""
    return PREFIX + "task:" + step_id


def _state_key(status: str) -> str:
    """The set of the tasks in one state (the scripts' ``move``)."""
    return PREFIX + "tasks:state:" + status


# Shared by the scripts: key names, and moving a task between the per-state sets.
_LUA_COMMON = f"""
local P = '{PREFIX}'
local QUEUE, GROUP = '{QUEUE}', '{GROUP}'
local function task_key(id) return P .. 'task:' .. id end
local function move(id, from, to)
  redis.call('SREM', P .. 'tasks:state:' .. from, id)
  redis.call('SADD', P .. 'tasks:state:' .. to, id)
end
local function retire_entry(entry)
  if entry then
    redis.call('XACK', QUEUE, GROUP, entry)
    redis.call('XDEL', QUEUE, entry)
  end
end
local function finish(id, from, status, now, entry)
  move(id, from, status)
  redis.call('HSET', task_key(id), 'status', status, 'completed_at', now)
  redis.call('ZADD', '{FINISHED}', now, id)
  retire_entry(entry)
end
"""

# ARGV: id, format, request, now. Returns '' or the status of the active task in the way.
_CREATE = f"""
local id = ARGV[1]
local key = task_key(id)
local old = redis.call('HGET', key, 'status')
if old == 'pending' or old == 'processing' then return old end
if old then
  redis.call('SREM', P .. 'tasks:state:' .. old, id)
  redis.call('ZREM', '{FINISHED}', id)
  redis.call('DEL', key, P .. 'result:' .. id)
end
local entry = redis.call('XADD', QUEUE, '*', 'step_id', id)
redis.call('HSET', key, 'step_id', id, 'status', 'pending', 'format', ARGV[2],
  'request', ARGV[3], 'created_at', ARGV[4], 'attempts', 0, 'entry', entry)
redis.call('ZADD', '{CREATED}', ARGV[4], id)
redis.call('SADD', P .. 'tasks:state:pending', id)
return ''
"""

# ARGV: id, entry, owner, now, max attempts, gave-up message. Returns 1 if claimed.
_CLAIM = """
local id, entry = ARGV[1], ARGV[2]
local t = redis.call('HMGET', task_key(id), 'status', 'entry', 'attempts')
local status, attempts = t[1], tonumber(t[3] or '0')
if (not status) or t[2] ~= entry or (status ~= 'pending' and status ~= 'processing') then
  retire_entry(entry)  -- a task since cancelled, replaced or removed
  return 0
end
if attempts >= tonumber(ARGV[5]) then
  finish(id, status, 'failed', ARGV[4], entry)
  redis.call('HSET', task_key(id), 'error', ARGV[6])
  return 0
end
move(id, status, 'processing')
redis.call('HSET', task_key(id), 'status', 'processing', 'owner', ARGV[3],
  'started_at', ARGV[4], 'progress', 0, 'attempts', attempts + 1)
return 1
"""

# ARGV: id, owner. Keeps the entry of a task this owner still runs from looking abandoned.
_TOUCH = """
local t = redis.call('HMGET', task_key(ARGV[1]), 'status', 'owner', 'entry')
if t[1] ~= 'processing' or t[2] ~= ARGV[2] then return 0 end
local pending = redis.call('XPENDING', QUEUE, GROUP, t[3], t[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', QUEUE, GROUP, ARGV[2], 0, t[3], 'JUSTID')
return 1
"""

# ARGV: id, owner, progress.
_PROGRESS = """
local t = redis.call('HMGET', task_key(ARGV[1]), 'status', 'owner')
if t[1] == 'processing' and t[2] == ARGV[2] then
  redis.call('HSET', task_key(ARGV[1]), 'progress', ARGV[3])
end
"""

# ARGV: id, owner, now, status, error, result mode ('redis', 'file' or ''), result, TTL (s,
# 0 = none). Records the outcome only while the task is this owner's; returns 1 if it did.
_FINISH = """
local id = ARGV[1]
local key = task_key(id)
local t = redis.call('HMGET', key, 'status', 'owner', 'entry')
if t[1] ~= 'processing' or t[2] ~= ARGV[2] then return 0 end
if ARGV[6] == 'redis' then
  local result_key = P .. 'result:' .. id
  redis.call('SET', result_key, ARGV[7])
  if tonumber(ARGV[8]) > 0 then redis.call('EXPIRE', result_key, ARGV[8]) end
elseif ARGV[6] == 'file' then
  redis.call('HSET', key, 'result', ARGV[7])
end
if ARGV[5] ~= '' then redis.call('HSET', key, 'error', ARGV[5]) end
finish(id, 'processing', ARGV[4], ARGV[3], t[3])
return 1
"""

# ARGV: id, owner, 1 to count the run as an attempt.
_REQUEUE = """
local id = ARGV[1]
local key = task_key(id)
local t = redis.call('HMGET', key, 'status', 'owner', 'entry', 'attempts')
if t[1] ~= 'processing' or t[2] ~= ARGV[2] then return 0 end
retire_entry(t[3])
local entry = redis.call('XADD', QUEUE, '*', 'step_id', id)
move(id, 'processing', 'pending')
redis.call('HDEL', key, 'owner', 'started_at', 'progress')
local attempts = tonumber(t[4]) - (ARGV[3] == '1' and 0 or 1)
redis.call('HSET', key, 'status', 'pending', 'entry', entry, 'attempts', attempts)
return 1
"""

# ARGV: now, what to publish ('' = each cancelled id), then the ids. Returns how many were
# still active (and are now cancelled).
_CANCEL = f"""
local cancelled = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local t = redis.call('HMGET', task_key(id), 'status', 'entry')
  if t[1] == 'pending' or t[1] == 'processing' then
    finish(id, t[1], 'cancelled', ARGV[1], t[2])
    if ARGV[2] == '' then redis.call('PUBLISH', '{STOPS}', id) end
    cancelled = cancelled + 1
  end
end
if ARGV[2] ~= '' and cancelled > 0 then redis.call('PUBLISH', '{STOPS}', ARGV[2]) end
return cancelled
"""

# ARGV: cutoff, batch. Removes tasks finished before the cutoff; returns them.
_SWEEP = f"""
local ids = redis.call('ZRANGEBYSCORE', '{FINISHED}', '-inf', '(' .. ARGV[1],
  'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local status = redis.call('HGET', task_key(id), 'status')
  if status then redis.call('SREM', P .. 'tasks:state:' .. status, id) end
  redis.call('DEL', task_key(id), P .. 'result:' .. id)
  redis.call('ZREM', '{FINISHED}', id)
  redis.call('ZREM', '{CREATED}', id)
end
return ids
"""


def _decode_task(raw: dict[bytes, bytes]) -> Task | None:
    if not raw:
        return None
    values = {key.decode(): value for key, value in raw.items()}

    def number(name: str) -> float | None:
        return float(values[name]) if name in values else None

    return Task(
        step_id=values["step_id"].decode(),
        status=values["status"].decode(),
        format=values["format"].decode(),
        request=values["request"],
        owner=text(values.get("owner")),
        created_at=float(values["created_at"]),
        started_at=number("started_at"),
        completed_at=number("completed_at"),
        error=text(values.get("error")),
        progress=number("progress"),
        attempts=int(values.get("attempts", b"0")),
    )


class RedisTaskStore:
    # Stops arrive by pub/sub at once; polling only covers a message missed while the
    # connection to Redis was down.
    stop_poll_s = 2.0

    def __init__(
        self,
        client: Any,
        visibility_timeout_s: float,
        retention_s: float,
        results_dir: Path | None = None,
    ) -> None:
        self.client = client
        self.visibility_ms = max(1, int(visibility_timeout_s * 1000))
        self.retention_s = retention_s
        self.results_dir = results_dir
        if results_dir is not None:
            results_dir.mkdir(parents=True, exist_ok=True)
        self._scripts = {
            name: client.register_script(_LUA_COMMON + body)
            for name, body in {
                "create": _CREATE, "claim": _CLAIM, "touch": _TOUCH, "progress": _PROGRESS,
                "finish": _FINISH, "requeue": _REQUEUE, "cancel": _CANCEL, "sweep": _SWEEP,
            }.items()
        }  # fmt: skip
        self._group_ready = False
        self._held: dict[str, str] = {}  # step_id -> owner, of the tasks this process runs
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._listeners: list[Callable[[str], None]] = []
        self._threads: list[threading.Thread] = []
        self._start_thread(self._touch_forever, "task-heartbeat")

    @contextmanager
    def _redis(self) -> Iterator[None]:
        with unavailable_on_error(self.client):
            yield

    def _run(self, script: str, *args: Any) -> Any:
        with self._redis():
            return self._scripts[script](args=args)

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def make_owner(self) -> str:
        # Containers often share PIDs and start times: the random part keeps names apart.
        return f"{socket.gethostname()}:{uuid.uuid4().hex[:12]}"

    def create(self, step_id: str, fmt: str, request: bytes) -> None:
        self._ensure_group()
        in_the_way = self._run("create", step_id, fmt, request, repr(time.time()))
        if in_the_way:
            raise TaskConflict(f"Task with step_id {step_id} is {in_the_way.decode()}")

    def get(self, step_id: str) -> Task | None:
        with self._redis():
            return _decode_task(self.client.hgetall(_task_key(step_id)))

    def recent(self, limit: int) -> list[Task]:
        with self._redis():
            ids = self.client.zrevrange(CREATED, 0, limit - 1)
            pipe = self.client.pipeline(transaction=False)
            for step_id in ids:
                pipe.hgetall(_task_key(step_id.decode()))
            found = [_decode_task(raw) for raw in pipe.execute()]
        return [task for task in found if task is not None]

    def count_by_status(self) -> dict[str, int]:
        with self._redis():
            pipe = self.client.pipeline(transaction=False)
            for status in TASK_STATES:
                pipe.scard(_state_key(status))
            return dict(zip(TASK_STATES, pipe.execute(), strict=True))

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        import redis

        with self._redis():
            try:
                self.client.xgroup_create(QUEUE, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._group_ready = True

    def _next_entry(self, owner: str) -> tuple[str, str | None] | None:
        """(entry id, step id) of the first entry abandoned by a dead instance, else of a
        new one; None when the queue is empty."""
        with self._redis():
            _, claimed, *_ = self.client.xautoclaim(
                QUEUE, GROUP, owner, self.visibility_ms, "0-0", count=1
            )
            if not claimed:
                read = self.client.xreadgroup(GROUP, owner, {QUEUE: ">"}, count=1)
                claimed = read[0][1] if read else []
        if not claimed:
            return None
        entry, values = claimed[0]
        # An entry deleted meanwhile comes back without its fields.
        return entry.decode(), values[b"step_id"].decode() if values else None

    def claim_next(self, owner: str) -> Task | None:
        self._ensure_group()
        while (found := self._next_entry(owner)) is not None:
            entry, step_id = found
            if step_id is None:
                with self._redis():
                    self.client.xack(QUEUE, GROUP, entry)
                continue
            now = repr(time.time())
            if self._run("claim", step_id, entry, owner, now, MAX_ATTEMPTS, _GAVE_UP):
                with self._lock:
                    self._held[step_id] = owner
                task = self.get(step_id)
                if task is not None:
                    return task
        return None

    def set_progress(self, step_id: str, owner: str, progress: float) -> None:
        self._run("progress", step_id, owner, repr(progress))

    def _result_file(self, task_id: str) -> str:
        digest = hashlib.sha256(task_id.encode()).hexdigest()
        return f"{digest}.{uuid.uuid4().hex[:12]}"

    def complete(self, step_id: str, owner: str, data: bytes) -> bool:
        ttl = math.ceil(self.retention_s) if self.retention_s > 0 else 0
        if self.results_dir is None:
            return bool(self._finish(step_id, owner, "completed", "", "redis", data, ttl))
        task = self.get(step_id)
        if task is None or task.owner != owner:
            return False
        name = f"{self._result_file(step_id)}.{task.format}"
        write_whole(self.results_dir / name, data)
        try:
            if self._finish(step_id, owner, "completed", "", "file", name, ttl):
                return True
        except StorageUnavailable:
            (self.results_dir / name).unlink(missing_ok=True)
            raise
        (self.results_dir / name).unlink(missing_ok=True)  # not ours any more
        return False

    def _finish(self, step_id: str, owner: str, *outcome: Any) -> int:
        done = self._run("finish", step_id, owner, repr(time.time()), *outcome)
        if done:
            self.release(step_id)
        return done

    def fail(self, step_id: str, owner: str, error: str) -> bool:
        return bool(self._finish(step_id, owner, "failed", error or "failed", "", "", 0))

    def requeue(self, step_id: str, owner: str, count_attempt: bool) -> bool:
        done = bool(self._run("requeue", step_id, owner, "1" if count_attempt else "0"))
        if done:
            self.release(step_id)
        return done

    def release(self, step_id: str) -> None:
        with self._lock:
            self._held.pop(step_id, None)

    def read_result(self, task: Task) -> bytes | None:
        if self.results_dir is None:
            with self._redis():
                return self.client.get(PREFIX + "result:" + task.step_id)
        with self._redis():
            name = self.client.hget(_task_key(task.step_id), "result")
        try:
            return (self.results_dir / name.decode()).read_bytes() if name else None
        except FileNotFoundError:
            return None

    def cancel(self, step_id: str) -> Task | None:
        task = self.get(step_id)
        if task is not None and task.status in ACTIVE:
            self._run("cancel", repr(time.time()), "", step_id)
        return task

    def cancel_all(self) -> int:
        with self._redis():
            ids = self.client.sunion(*(_state_key(s) for s in ACTIVE))
        if not ids:
            return 0
        return int(self._run("cancel", repr(time.time()), ALL_TASKS, *ids))

    def on_stop(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)
        if len(self._listeners) == 1:
            self._start_thread(self._listen_forever, "task-stops")

    def recover(self) -> list[str]:
        """Nothing at start-up: abandoned tasks are claimed by :meth:`claim_next` once their
        entry has been idle for the visibility timeout."""
        return []

    def sweep(self, finished_before: float, stray_before: float) -> int:
        removed = 0
        while batch := self._run("sweep", repr(finished_before), SWEEP_BATCH):
            removed += len(batch)
            if len(batch) < SWEEP_BATCH:
                break
        if self.results_dir is not None:
            remove_stray_files(self.results_dir, self._owned_files(), stray_before)
        self._forget_idle_consumers()
        return removed

    def _owned_files(self) -> set[str]:
        with self._redis():
            ids = self.client.zrange(CREATED, 0, -1)
            pipe = self.client.pipeline(transaction=False)
            for step_id in ids:
                pipe.hget(_task_key(step_id.decode()), "result")
            return {name.decode() for name in pipe.execute() if name}

    def _forget_idle_consumers(self) -> None:
        import redis

        with self._redis():
            try:
                consumers = self.client.xinfo_consumers(QUEUE, GROUP)
            except redis.ResponseError:  # no queue yet
                return
            for consumer in consumers:
                if consumer["pending"] == 0 and consumer["idle"] > IDLE_CONSUMER_MS:
                    self.client.xgroup_delconsumer(QUEUE, GROUP, consumer["name"])

    def close(self) -> None:
        self._closed.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _touch_forever(self) -> None:
        interval = self.visibility_ms / 3000
        while not self._closed.wait(interval):
            with self._lock:
                held = list(self._held.items())
            for step_id, owner in held:
                try:
                    if not self._run("touch", step_id, owner):
                        self.release(step_id)  # cancelled, or taken over: the runner sees it
                except StorageUnavailable as exc:
                    log.warning("Cannot keep task %s claimed: %s", step_id, exc)
                    break

    def _tell_listeners(self, step_id: str) -> None:
        for listener in self._listeners:
            try:
                listener(step_id)
            except Exception:  # e.g. the server's event loop already closed
                log.exception("A stop listener failed")

    def _listen_forever(self) -> None:
        import redis

        while not self._closed.is_set():
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(STOPS)
                while not self._closed.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._tell_listeners(message["data"].decode())
                pubsub.close()
            except redis.RedisError as exc:
                where = describe(self.client)
                log.warning("Lost the stop channel of %s (%s): retrying", where, exc)
                self._closed.wait(1.0)
