"""What every task store offers (local SQLite + files, or Redis shared by many instances).

A task is recorded before the client hears "created", so no accepted task is lost. An
instance claims a pending task, runs it and records the outcome with its result in one
step, which succeeds only while the task is still its own: a task cancelled meanwhile, or
reclaimed by another instance after this one was taken for dead, keeps the other outcome,
so clients observe each task finish exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

ACTIVE = ("pending", "processing")
TASK_STATES = ("pending", "processing", "completed", "failed", "cancelled")
# A task whose runs keep ending in a crash (a request that kills the engine) is given up
# after this many, instead of crashing every restart of the server.
MAX_ATTEMPTS = 3
ALL_TASKS = "*"  # what a stop listener hears for stop_generation


def gave_up_message(attempts: int) -> str:
    return f"Gave up after {attempts} attempts: the server crashed or its engine failed during each"


class TaskConflict(Exception):
    """A task with this id is still pending or running."""


class ResultWriteError(Exception):
    """A finished task's audio could not be saved (the task is then ``failed``)."""


@dataclass(frozen=True)
class Task:
    step_id: str
    status: str
    format: str
    request: bytes
    owner: str | None
    created_at: float
    started_at: float | None
    completed_at: float | None
    error: str | None
    progress: float | None = None  # fraction of the text done, set while processing
    attempts: int = 0  # runs started; one handed back by a clean shutdown is not counted

    @property
    def reported_progress(self) -> float:
        """0-1 for clients: 0 while pending, 1 once completed, else the last recorded value."""
        if self.status == "completed":
            return 1.0
        return self.progress or 0.0


class TaskStore(Protocol):
    """Storage errors surface as ``StorageUnavailable`` (the server answers 503)."""

    # How often a runner should check that its running task was not stopped, for stores
    # that cannot tell it at once through a stop listener.
    stop_poll_s: float

    def make_owner(self) -> str:
        """A name for this process as the owner of the tasks it runs, unique among
        everything sharing the store."""

    def create(self, step_id: str, fmt: str, request: bytes) -> None:
        """Record a new pending task; a finished one with the same id is replaced.
        Raises TaskConflict while a task with this id is active."""

    def get(self, step_id: str) -> Task | None: ...

    def recent(self, limit: int) -> list[Task]:
        """The newest ``limit`` tasks, newest first."""

    def count_by_status(self) -> dict[str, int]: ...

    def claim_next(self, owner: str) -> Task | None:
        """Move the oldest claimable task to ``processing`` for ``owner``; None if none."""

    def set_progress(self, step_id: str, owner: str, progress: float) -> None: ...

    def complete(self, step_id: str, owner: str, data: bytes) -> bool:
        """Store the result and mark the task completed, both or neither; False (and
        nothing stored) when the task is no longer this owner's."""

    def fail(self, step_id: str, owner: str, error: str) -> bool: ...

    def requeue(self, step_id: str, owner: str, count_attempt: bool) -> bool:
        """Put a task this owner runs back in the queue: a clean shutdown does not count
        the run as an attempt, a failed engine does."""

    def release(self, step_id: str) -> None:
        """This process no longer runs the task (whatever was recorded), so that a task it
        could not record an outcome for is eventually taken up again."""

    def read_result(self, task: Task) -> bytes | None:
        """A completed task's audio; None if it is gone."""

    def cancel(self, step_id: str) -> Task | None:
        """Cancel one task if it is still active; returns the task as it was, or None."""

    def cancel_all(self) -> int: ...

    def on_stop(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(step_id)`` (or ``ALL_TASKS``) from any thread when a task is
        stopped anywhere, if the store can tell at once; runners poll besides."""

    def recover(self) -> list[str]:
        """At start-up: tasks left running by processes that are gone go back to the queue."""

    def sweep(self, finished_before: float, stray_before: float) -> int:
        """Delete tasks finished before a time with their results, and result files no task
        owns last touched before another; returns how many tasks were removed."""

    def close(self) -> None: ...
