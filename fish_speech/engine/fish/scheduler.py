"""Who runs: the bounded waiting queue, admission into free slots between decode steps, and
retirement (finished, failed or cancelled sequences give their slot back at once).

Requests arrive from the event loop thread; everything else runs on the engine thread. The
lock guards what both touch: the queue, the reservations and the slot holders.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from fish_speech.engine.base import EngineBusy
from fish_speech.engine.fish.kv_slots import SlotPool
from fish_speech.engine.fish.sequence import Sequence, Status
from fish_speech.utils.cancel import Cancelled

DURATION_SMOOTHING = 0.2  # weight of the newest finished request in the duration estimate


class Reservation:
    """A place in the queue for a request whose voice is still being prepared."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._held = True

    def release(self) -> None:
        self.take()

    def take(self) -> bool:
        """Give up the place; True the first time (so a place is never given back twice)."""
        with self._scheduler.lock:
            held, self._held = self._held, False
            if held:
                self._scheduler.reserved -= 1
            return held


class Scheduler:
    def __init__(self, slots: SlotPool, max_queue: int) -> None:
        self.slots = slots
        self.max_queue = max_queue
        self.lock = threading.Condition()
        self.waiting: deque[Sequence] = deque()
        self.reserved = 0  # places held by requests not yet submitted
        self.closed = False
        self._duration_s: float | None = None  # smoothed time a request holds a slot

    @property
    def running(self) -> list[Sequence]:
        """The sequences holding slots, in slot order (engine thread)."""
        return self.slots.holders

    # -- event loop side ------------------------------------------------------------------

    def reserve(self, bounded: bool) -> Reservation:
        with self.lock:
            queued = len(self.waiting) + self.reserved + 1 - self.slots.free
            if bounded and queued > self.max_queue:
                raise EngineBusy(
                    self.retry_after_s(),
                    f"Server busy: {len(self.running)} request(s) running and "
                    f"{len(self.waiting) + self.reserved} waiting (at most {self.max_queue}); "
                    "retry later",
                )
            self.reserved += 1
            return Reservation(self)

    def add(self, seq: Sequence, reservation: Reservation) -> None:
        reservation.take()
        with self.lock:
            if self.closed:
                raise Cancelled()
            self.waiting.append(seq)
            self.lock.notify()

    def room(self) -> int:
        with self.lock:
            return max(0, self.slots.free - len(self.waiting) - self.reserved)

    def retry_after_s(self) -> float:
        """When a queue place may be free: a slot frees about every duration / slots."""
        if self._duration_s is None:
            return 1.0
        return max(1.0, math.ceil(self._duration_s / self.slots.size))

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {
                "running": len(self.running),
                "waiting": len(self.waiting) + self.reserved,
                "slots_total": self.slots.size,
                "slots_free": self.slots.free,
            }

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify()

    # -- engine thread side ---------------------------------------------------------------

    def wait_for_work(self) -> bool:
        """Block until something is waiting or running; False once closed."""
        with self.lock:
            while not self.closed and not self.waiting and not self.running:
                self.lock.wait()
            return not self.closed

    def admit(self) -> None:
        """Give free slots to waiting sequences, oldest first; drop cancelled ones."""
        with self.lock:
            while self.waiting and self.slots.free > 0:
                seq = self.waiting.popleft()
                if seq.cancel.cancelled:
                    self._finish(seq, Cancelled())
                    continue
                self.slots.allocate(seq)
                seq.status = Status.RUNNING
                seq.admitted_at = time.monotonic()

    def retire_cancelled(self) -> None:
        with self.lock:
            for seq in [s for s in self.running if s.cancel.cancelled]:
                self.retire(seq, Cancelled())
            for seq in [s for s in self.waiting if s.cancel.cancelled]:
                self.waiting.remove(seq)
                self._finish(seq, Cancelled())

    def retire(self, seq: Sequence, error: BaseException | None = None) -> None:
        """Free the sequence's slot and end its stream (with ``error`` if it failed)."""
        with self.lock:
            self.slots.release(seq)
            held = time.monotonic() - seq.admitted_at
            self._duration_s = (
                held
                if self._duration_s is None
                else DURATION_SMOOTHING * held + (1 - DURATION_SMOOTHING) * self._duration_s
            )
            self._finish(seq, error)

    def fail_all(self, error: BaseException) -> None:
        """End every waiting and running sequence with ``error`` (the engine is stopping)."""
        with self.lock:
            for seq in self.slots.clear():
                self._finish(seq, error)
            while self.waiting:
                self._finish(self.waiting.popleft(), error)

    @staticmethod
    def _finish(seq: Sequence, error: BaseException | None) -> None:
        seq.status = Status.FINISHED
        seq.sink.close(error)
