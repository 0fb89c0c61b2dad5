"""The inference thread: one thread owns the model and runs jobs in arrival order.

The event loop only enqueues work and awaits results, so health checks and other
routes keep answering while speech is being made.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

from fish_speech.engine.base import CancelToken
from fish_speech.engine.sinks import Outbox

T = TypeVar("T")
log = logging.getLogger(__name__)


class InferenceWorker:
    def __init__(self, name: str = "inference") -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=5)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the inference thread and await its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def job() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the awaiting coroutine
                future.set_exception(exc)

        self._jobs.put(job)
        return await asyncio.wrap_future(future)

    async def stream(
        self, produce: Callable[[], Iterator[T]], cancel: CancelToken
    ) -> AsyncIterator[T]:
        """Iterate ``produce()`` on the inference thread, yielding items as they come.

        Leaving the ``async for`` early (client gone, error) sets ``cancel`` so the
        producer stops at its next check instead of finishing unwanted work.
        """
        outbox: Outbox[T] = Outbox(cancel)

        def job() -> None:
            if cancel.cancelled:
                outbox.close()
                return
            try:
                for item in produce():
                    outbox.put(item)
                outbox.close()
            except BaseException as exc:
                outbox.close(exc)

        self._jobs.put(job)
        try:
            async for item in outbox:
                yield item
        finally:
            cancel.cancel()
