"""The local task store: SQLite and result files in ``--data-dir``, shared by the server
processes of one machine (``--workers N``).

Tasks left ``processing`` by a process that is gone (told by its PID and start time) go
back to ``pending`` at the next start, as do tasks a process hands back when it shuts down.
Result files are written to a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

from fish_speech.storage import StorageUnavailable
from fish_speech.tasks.base import (
    ACTIVE,
    MAX_ATTEMPTS,
    TASK_STATES,
    ResultWriteError,
    Task,
    TaskConflict,
    gave_up_message,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    step_id      TEXT PRIMARY KEY,
    status       TEXT NOT NULL,
    format       TEXT NOT NULL,
    request      BLOB NOT NULL,
    owner        TEXT,
    created_at   REAL NOT NULL,
    started_at   REAL,
    completed_at REAL,
    error        TEXT,
    progress     REAL,
    attempts     INTEGER NOT NULL DEFAULT 0
)
"""
# Columns added after the first release, with their definitions, for older data folders.
_ADDED_COLUMNS = {"progress": "REAL", "attempts": "INTEGER NOT NULL DEFAULT 0"}

# Columns by name, in Task's field order: a migrated table has its columns in another order.
_SELECT = ", ".join(field.name for field in fields(Task))


def _read(db: sqlite3.Connection, step_id: str) -> Task | None:
    row = db.execute(f"SELECT {_SELECT} FROM tasks WHERE step_id = ?", (step_id,)).fetchone()
    return Task(*row) if row else None


def process_identity(pid: int) -> str | None:
    """``pid:start-time`` of a live process, None if it is gone.

    The start time makes a reused PID (common after a container restart) a different owner.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name; start time is field 22 of the line.
    return f"{pid}:{stat.rsplit(')', 1)[1].split()[19]}"


def _owner_alive(owner: str | None) -> bool:
    if not owner:
        return False
    pid = int(owner.split(":", 1)[0])
    return process_identity(pid) == owner


class LocalTaskStore:
    stop_poll_s = 0.3  # a cancel may come through another process: notice it this quickly

    def __init__(self, data_dir: str | Path) -> None:
        self.root = Path(data_dir).resolve()
        self.results = self.root / "task_results"
        self.results.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "tasks.sqlite3"
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(tasks)")}
            for name, definition in _ADDED_COLUMNS.items():
                if name not in columns:  # a data folder made before this column existed
                    db.execute(f"ALTER TABLE tasks ADD COLUMN {name} {definition}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A connection per operation: cheap for SQLite, and safe from any thread.
        try:
            db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
            try:
                yield db
            finally:
                db.close()
        except sqlite3.Error as exc:  # e.g. a full or read-only disk
            raise StorageUnavailable(f"Task database: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # take the write lock now: no lost updates
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def make_owner(self) -> str:
        return process_identity(os.getpid()) or str(os.getpid())

    def result_path(self, step_id: str, fmt: str) -> Path:
        # Ids are free text; the file name is derived so no id can form a path.
        return self.results / f"{hashlib.sha256(step_id.encode()).hexdigest()}.{fmt}"

    def create(self, step_id: str, fmt: str, request: bytes) -> None:
        with self._transaction() as db:
            row = db.execute(
                "SELECT status, format FROM tasks WHERE step_id = ?", (step_id,)
            ).fetchone()
            if row is not None:
                if row[0] in ACTIVE:
                    raise TaskConflict(f"Task with step_id {step_id} is {row[0]}")
                self.result_path(step_id, row[1]).unlink(missing_ok=True)
                db.execute("DELETE FROM tasks WHERE step_id = ?", (step_id,))
            db.execute(
                "INSERT INTO tasks (step_id, status, format, request, created_at) "
                "VALUES (?, 'pending', ?, ?, ?)",
                (step_id, fmt, request, time.time()),
            )

    def get(self, step_id: str) -> Task | None:
        with self._connect() as db:
            return _read(db, step_id)

    def recent(self, limit: int) -> list[Task]:
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {_SELECT} FROM tasks ORDER BY created_at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [Task(*row) for row in rows]

    def count_by_status(self) -> dict[str, int]:
        counts = dict.fromkeys(TASK_STATES, 0)
        with self._connect() as db:
            for status, count in db.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status"):
                counts[status] = count
        return counts

    def set_progress(self, step_id: str, owner: str, progress: float) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE tasks SET progress = ? "
                "WHERE step_id = ? AND status = 'processing' AND owner = ?",
                (progress, step_id, owner),
            )

    def claim_next(self, owner: str) -> Task | None:
        with self._transaction() as db:
            while True:
                row = db.execute(
                    "SELECT step_id, attempts FROM tasks WHERE status = 'pending' "
                    "ORDER BY created_at LIMIT 1"
                ).fetchone()
                if row is None:
                    return None
                step_id, attempts = row
                if attempts < MAX_ATTEMPTS:
                    break
                db.execute(
                    "UPDATE tasks SET status = 'failed', error = ?, completed_at = ? "
                    "WHERE step_id = ?",
                    (gave_up_message(attempts), time.time(), step_id),
                )
            db.execute(
                "UPDATE tasks SET status = 'processing', owner = ?, started_at = ?, "
                "progress = 0, attempts = attempts + 1 WHERE step_id = ?",
                (owner, time.time(), step_id),
            )
            return _read(db, step_id)

    def _finish(
        self, db: sqlite3.Connection, step_id: str, owner: str, status: str, error: str | None
    ) -> bool:
        cursor = db.execute(
            "UPDATE tasks SET status = ?, error = ?, completed_at = ? "
            "WHERE step_id = ? AND status = 'processing' AND owner = ?",
            (status, error, time.time(), step_id, owner),
        )
        return cursor.rowcount == 1

    def complete(self, step_id: str, owner: str, data: bytes) -> bool:
        task = self.get(step_id)
        if task is None or task.status != "processing" or task.owner != owner:
            return False
        path = self.result_path(step_id, task.format)
        write_whole(path, data)
        with self._transaction() as db:
            if self._finish(db, step_id, owner, "completed", None):
                return True
            # Cancelled while the file was being written: drop the result (inside the write
            # lock, so a new task reusing the id cannot have written its own yet).
            path.unlink(missing_ok=True)
            return False

    def fail(self, step_id: str, owner: str, error: str) -> bool:
        with self._transaction() as db:
            return self._finish(db, step_id, owner, "failed", error)

    def requeue(self, step_id: str, owner: str, count_attempt: bool) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE tasks SET status = 'pending', owner = NULL, started_at = NULL, "
                "attempts = attempts - ? WHERE step_id = ? AND status = 'processing' AND owner = ?",
                (0 if count_attempt else 1, step_id, owner),
            )
            return cursor.rowcount == 1

    def release(self, step_id: str) -> None:
        """Nothing to do: a task still recorded as this process's is re-queued by
        :meth:`recover` once the process is gone."""

    def read_result(self, task: Task) -> bytes | None:
        try:
            return self.result_path(task.step_id, task.format).read_bytes()
        except FileNotFoundError:
            return None

    def cancel(self, step_id: str) -> Task | None:
        with self._transaction() as db:
            task = _read(db, step_id)
            if task is not None and task.status in ACTIVE:
                db.execute(
                    "UPDATE tasks SET status = 'cancelled', completed_at = ? WHERE step_id = ?",
                    (time.time(), step_id),
                )
        return task

    def cancel_all(self) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE tasks SET status = 'cancelled', completed_at = ? "
                "WHERE status IN ('pending', 'processing')",
                (time.time(),),
            )
            return cursor.rowcount

    def on_stop(self, listener: Callable[[str], None]) -> None:
        """Nothing pushes stops between processes here: runners notice them by polling."""

    def recover(self) -> list[str]:
        with self._transaction() as db:
            rows = db.execute(
                "SELECT step_id, owner FROM tasks WHERE status = 'processing'"
            ).fetchall()
            orphans = [sid for sid, owner in rows if not _owner_alive(owner)]
            db.executemany(
                "UPDATE tasks SET status = 'pending', owner = NULL, started_at = NULL, "
                "progress = NULL WHERE step_id = ?",
                [(sid,) for sid in orphans],
            )
        return orphans

    def sweep(self, finished_before: float, stray_before: float) -> int:
        with self._transaction() as db:
            rows = db.execute(
                "SELECT step_id, format FROM tasks "
                "WHERE status NOT IN ('pending', 'processing') AND completed_at < ?",
                (finished_before,),
            ).fetchall()
            # Inside the write lock, so no new task with a reused id can write its result
            # between our unlink and the row's deletion.
            for step_id, fmt in rows:
                self.result_path(step_id, fmt).unlink(missing_ok=True)
            db.executemany("DELETE FROM tasks WHERE step_id = ?", [(sid,) for sid, _ in rows])
            owned = {
                self.result_path(step_id, fmt).name
                for step_id, fmt in db.execute("SELECT step_id, format FROM tasks")
            }
        remove_stray_files(self.results, owned, stray_before)
        return len(rows)

    def close(self) -> None:
        """Connections are opened per operation: nothing is held."""


def remove_stray_files(folder: Path, owned: set[str], older_than: float) -> int:
    """Delete files in ``folder`` not named in ``owned`` (left by a crash, or by a run that
    lost its task) last touched before a time."""
    removed = 0
    for path in folder.iterdir():
        try:
            if path.name not in owned and path.stat().st_mtime < older_than:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # another process tidied it first
            continue
    return removed


def write_whole(final: Path, data: bytes) -> None:
    """Write under a temporary name, flush to disk, then rename: a reader sees the whole
    file or none. A failure (disk full, read-only folder) leaves nothing behind."""
    partial = final.with_suffix(f".{os.getpid()}.part")
    try:
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, final)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise ResultWriteError(f"Could not save the result: {exc}") from exc
