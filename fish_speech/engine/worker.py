"""The inference thread: one thread owns the model and runs jobs in arrival order.

The event loop only enqueues work and awaits results, so health checks and other
routes keep answering while speech is being made.

A fatal error (see :func:`is_fatal`) or the thread dying sets :attr:`failure`: from then on
every queued and every new job fails at once with :class:`EngineFailure`, so no caller
waits forever on a thread that will never answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from fish_speech.engine.base import Cancelled, CancelToken, EngineFailure, is_fatal
from fish_speech.engine.sinks import Outbox

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Job:
    run: Callable[[], None]  # does the work and reports its outcome to the caller
    fail: Callable[[BaseException], None]  # reports an error without running


class InferenceWorker:
    def __init__(self, name: str = "inference") -> None:
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._failure: str | None = None
        self._closed = False
        self._running = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def failure(self) -> str | None:
        """Why this thread can run no more work; None while it is healthy."""
        if self._failure is None and not self._closed and not self._thread.is_alive():
            return "the inference thread has stopped"
        return self._failure

    def _run(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                if self._failure is not None:
                    job.fail(EngineFailure(self._failure))
                    continue
                self._running = 1
                try:
                    job.run()
                finally:
                    self._running = 0
        except BaseException as exc:
            self._failure = f"the inference thread crashed: {exc!r}"
            log.critical("%s", self._failure, exc_info=exc)
        finally:
            while True:  # whoever is still waiting gets an answer
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    failure = self._failure
                    job.fail(Cancelled() if failure is None else EngineFailure(failure))

    def _triage(self, exc: BaseException) -> BaseException:
        """The error to hand to the caller; a fatal one also stops this worker."""
        if not is_fatal(exc):
            return exc
        if self._failure is None:
            self._failure = f"{type(exc).__name__}: {exc}"
            log.critical("%s", self._failure, exc_info=exc)
        failure = EngineFailure(self._failure)
        failure.__cause__ = exc
        return failure

    def _submit(self, job: _Job) -> None:
        if self._closed:  # shutting down: nothing would ever run it
            raise Cancelled()
        if (failure := self.failure) is not None:
            raise EngineFailure(failure)
        self._jobs.put(job)

    @property
    def queue_depth(self) -> int:
        """Jobs queued behind the one running (read without a lock: a gauge, not a count)."""
        return self._jobs.qsize()

    @property
    def running(self) -> int:
        return self._running

    def close(self) -> None:
        self._closed = True
        self._jobs.put(None)
        self._thread.join(timeout=5)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the inference thread and await its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the awaiting coroutine
                future.set_exception(self._triage(exc))

        def fail(exc: BaseException) -> None:
            if future.set_running_or_notify_cancel():
                future.set_exception(exc)

        self._submit(_Job(run, fail))
        return await asyncio.wrap_future(future)

    async def stream(
        self, produce: Callable[[], Iterator[T]], cancel: CancelToken
    ) -> AsyncIterator[T]:
        """Iterate ``produce()`` on the inference thread, yielding items as they come.

        Leaving the ``async for`` early (client gone, error) sets ``cancel`` so the
        producer stops at its next check instead of finishing unwanted work. A request
        cancelled before its turn raises :class:`Cancelled` like one cancelled mid-way.
        """
        outbox: Outbox[T] = Outbox(cancel)

        def run() -> None:
            if cancel.cancelled:
                outbox.close(Cancelled())
                return
            try:
                for item in produce():
                    outbox.put(item)
                outbox.close()
            except BaseException as exc:
                outbox.close(self._triage(exc))

        self._submit(_Job(run, outbox.close))
        try:
            async for item in outbox:
                yield item
        finally:
            cancel.cancel()
