"""Runs queued async tasks: each server process claims a task from the durable queue only
while its engine has room (a free slot nobody waits for), so tasks run several at once
beside interactive requests and never meet the waiting queue's 429.

When the store cannot be reached (a full disk, Redis down) a running task carries on, and
its outcome is recorded once the store answers again; if this process stops first, the
task is still recorded as running here and is taken up again (``TaskStore.recover``, or
another instance after the visibility timeout).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import numpy as np
import ormsgpack
from starlette.concurrency import run_in_threadpool

from fish_speech.audio.encode import encode_audio
from fish_speech.engine.base import (
    OUTPUT_SAMPLE_RATE,
    AudioSegment,
    Cancelled,
    CancelToken,
    EngineFailure,
    ReferenceAudio,
)
from fish_speech.engine.service import TTSService, synthesis_request
from fish_speech.storage import StorageUnavailable
from fish_speech.tasks.base import ALL_TASKS, Task, TaskStore
from fish_speech.utils.schema import AsyncGenerateRequest

log = logging.getLogger(__name__)

IDLE_POLL_S = 1.0  # other processes may queue tasks: look for work at least this often
ROOM_POLL_S = 0.25  # interactive requests free slots too: look for room this often
STORE_RETRY_S = 1.0  # the store is unreachable: try again this often
T = TypeVar("T")


class TaskRunner:
    """Claims queued tasks while the engine has room (several run at once with a batching
    engine) and records their outcome; :meth:`stop` hands running tasks back."""

    def __init__(
        self,
        store: TaskStore,
        service: TTSService,
        resolve_voice: Callable[[AsyncGenerateRequest], list[ReferenceAudio]],
    ) -> None:
        self.store = store
        self.service = service
        self.resolve_voice = resolve_voice
        self.owner = store.make_owner()
        self.finished: Counter[str] = Counter()  # outcomes of the tasks run here, for metrics
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task] = set()
        self._cancels: dict[str, CancelToken] = {}  # by step id, one per running task
        self._starting = 0  # claimed tasks whose synthesis has not taken its slot yet
        self._stopping = False
        self._stopped = asyncio.Event()

    def notify(self) -> None:
        """A task was queued by this process: start it without waiting for the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Claim nothing more and hand the running tasks back to the queue, then return.

        They resume on the next start (or in another worker process).
        """
        self._stopping = True
        self._wake.set()
        for cancel in self._cancels.values():
            cancel.cancel()
        await self._stopped.wait()

    @property
    def running(self) -> int:
        """Tasks this process runs now."""
        return len(self._running)

    def has_room(self) -> bool:
        if self.service.failure is not None:
            return False  # claimed tasks would fail; left queued, they run after a restart
        return len(self._running) < self.service.capacity and self.service.room() > self._starting

    async def _sleep(self, timeout: float) -> None:
        """Until notified (a task queued or finished here) or ``timeout`` passes."""
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        self.store.on_stop(lambda step_id: loop.call_soon_threadsafe(self._stop_here, step_id))
        try:
            await self._run()
            # Stopping: the running tasks hand themselves back once their cancel lands.
            await asyncio.gather(*self._running, return_exceptions=True)
        finally:
            for running in self._running:
                running.cancel()  # an unfinished task stays recorded and resumes on restart
            self._stopped.set()

    def _stop_here(self, step_id: str) -> None:
        """A stop published by the store (maybe from another instance)."""
        for running_id, cancel in self._cancels.items():
            if step_id in (running_id, ALL_TASKS):
                cancel.cancel()

    async def _run(self) -> None:
        requeued = await self._persist(self.store.recover)
        if requeued:
            log.info("Re-queued %d task(s) interrupted by a restart: %s", len(requeued), requeued)
        while not self._stopping:
            if not self.has_room():
                await self._sleep(ROOM_POLL_S)
                continue
            try:
                task = await run_in_threadpool(self.store.claim_next, self.owner)
            except StorageUnavailable as exc:  # e.g. a full disk, Redis down: try again later
                log.error("Cannot read the task queue: %s", exc)
                task = None
            if task is None:
                await self._sleep(IDLE_POLL_S)
                continue
            log.info("Running task %s (attempt %d)", task.step_id, task.attempts)
            self._starting += 1
            running = asyncio.create_task(self._execute(task))
            self._running.add(running)
            running.add_done_callback(self._finished)

    def _finished(self, running: asyncio.Task) -> None:
        self._running.discard(running)
        self._wake.set()

    async def _execute(self, task: Task) -> None:
        cancel = CancelToken()
        self._cancels[task.step_id] = cancel
        if self._stopping:  # stop() came while this task was being claimed
            cancel.cancel()
        watcher = asyncio.create_task(self._watch_for_cancel(task.step_id, cancel))
        starting = True
        try:
            request = AsyncGenerateRequest.model_validate(ormsgpack.unpackb(task.request))
            voice = await self._persist(self.resolve_voice, request)
            segments = self.service.synthesize(
                synthesis_request(request),
                voice,
                request.use_memory_cache == "on",
                cancel,
                request_id=f"task:{task.step_id}",
                bounded=False,
            )
            # Iterating reserves the engine place before its first await, so from here on
            # the engine's room() counts this task.
            self._starting -= 1
            starting = False
            audio = await self._collect_with_progress(task.step_id, segments)
            if audio is None:
                raise ValueError("No speech could be synthesised from this text")
            data = encode_audio(audio, OUTPUT_SAMPLE_RATE, request.format)
            completed = await self._persist(self.store.complete, task.step_id, self.owner, data)
            self.finished["completed" if completed else "superseded"] += 1
        except EngineFailure:
            self._stopping = True  # this process's engine will not come back
            await self._hand_back(task.step_id, count_attempt=True)  # maybe not its fault
        except Cancelled:
            if self._stopping:  # shutting down: it runs again on the next start
                await self._hand_back(task.step_id, count_attempt=False)
            else:
                log.info("Task %s cancelled", task.step_id)
                self.finished["cancelled"] += 1
        except StorageUnavailable as exc:  # given up while stopping: it runs again later
            log.error("Could not record the outcome of task %s: %s", task.step_id, exc)
        except Exception as exc:
            log.warning("Task %s failed: %s", task.step_id, exc)
            await self._record_failure(task.step_id, str(exc))
        finally:
            if starting:
                self._starting -= 1
            self._cancels.pop(task.step_id, None)
            watcher.cancel()
            self.store.release(task.step_id)

    async def _collect_with_progress(
        self, step_id: str, segments: AsyncIterator[AudioSegment]
    ) -> np.ndarray | None:
        """The whole utterance, recording the engine's progress in the task as it goes."""
        pieces = []
        async for segment in segments:
            pieces.append(segment.samples)
            if segment.progress is not None:
                try:
                    await run_in_threadpool(
                        self.store.set_progress, step_id, self.owner, segment.progress
                    )
                except StorageUnavailable:
                    pass  # progress is a hint: the audio matters more
        return np.concatenate(pieces) if pieces else None

    async def _persist(self, call: Callable[..., T], *args: object) -> T:
        """``call(*args)`` in a thread, retried while the store is unreachable, until this
        process stops (then StorageUnavailable is raised)."""
        while True:
            try:
                return await run_in_threadpool(call, *args)
            except StorageUnavailable as exc:
                if self._stopping:
                    raise
                log.warning("%s: retrying in %g s", exc, STORE_RETRY_S)
                await asyncio.sleep(STORE_RETRY_S)

    async def _hand_back(self, step_id: str, count_attempt: bool) -> None:
        try:
            if await self._persist(self.store.requeue, step_id, self.owner, count_attempt):
                log.info("Task %s returned to the queue", step_id)
        except StorageUnavailable as exc:  # still recorded as ours: taken up once we are gone
            log.error("Could not return task %s to the queue: %s", step_id, exc)

    async def _record_failure(self, step_id: str, reason: str) -> None:
        try:
            if await self._persist(self.store.fail, step_id, self.owner, reason):
                self.finished["failed"] += 1
        except StorageUnavailable as exc:
            log.error("Could not record that task %s failed (%s): %s", step_id, reason, exc)

    async def _watch_for_cancel(self, step_id: str, cancel: CancelToken) -> None:
        """Stops the task once it is no longer this process's to run: cancelled through
        another process, or taken over by another instance. The store's stop listener
        usually tells sooner."""
        while not cancel.cancelled:
            await asyncio.sleep(self.store.stop_poll_s)
            try:
                task = await run_in_threadpool(self.store.get, step_id)
            except StorageUnavailable:
                continue  # cannot tell now: keep running, the outcome is recorded later
            if task is None or task.status != "processing" or task.owner != self.owner:
                cancel.cancel()
