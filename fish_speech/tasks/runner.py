"""Runs queued async tasks: each server process claims a task from the durable queue only
while its engine has room (a free slot nobody waits for), so tasks run several at once
beside interactive requests and never meet the waiting queue's 429."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable

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
from fish_speech.tasks.store import Task, TaskStore, process_identity
from fish_speech.utils.schema import AsyncGenerateRequest

log = logging.getLogger(__name__)

IDLE_POLL_S = 1.0  # other processes may queue tasks: look for work at least this often
ROOM_POLL_S = 0.25  # interactive requests free slots too: look for room this often
CANCEL_POLL_S = 0.3  # a cancel may come through another process: notice it this quickly


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
        self.owner = process_identity(os.getpid()) or str(os.getpid())
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task] = set()
        self._cancels: set[CancelToken] = set()  # one per running task
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
        for cancel in self._cancels:
            cancel.cancel()
        await self._stopped.wait()

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
        try:
            await self._run()
            # Stopping: the running tasks hand themselves back once their cancel lands.
            await asyncio.gather(*self._running, return_exceptions=True)
        finally:
            for running in self._running:
                running.cancel()  # an unfinished task stays recorded and resumes on restart
            self._stopped.set()

    async def _run(self) -> None:
        requeued = await run_in_threadpool(self.store.requeue_orphans)
        if requeued:
            log.info("Re-queued %d task(s) interrupted by a restart: %s", len(requeued), requeued)
        while not self._stopping:
            if not self.has_room():
                await self._sleep(ROOM_POLL_S)
                continue
            try:
                task = await run_in_threadpool(self.store.claim_next, self.owner)
            except sqlite3.Error as exc:  # e.g. a full or read-only disk: try again later
                log.error("Cannot read the task queue: %s", exc)
                task = None
            if task is None:
                await self._sleep(IDLE_POLL_S)
                continue
            self._starting += 1
            running = asyncio.create_task(self._execute(task))
            self._running.add(running)
            running.add_done_callback(self._finished)

    def _finished(self, running: asyncio.Task) -> None:
        self._running.discard(running)
        self._wake.set()

    async def _execute(self, task: Task) -> None:
        cancel = CancelToken()
        self._cancels.add(cancel)
        if self._stopping:  # stop() came while this task was being claimed
            cancel.cancel()
        watcher = asyncio.create_task(self._watch_for_cancel(task.step_id, cancel))
        starting = True
        try:
            request = AsyncGenerateRequest.model_validate(ormsgpack.unpackb(task.request))
            voice = await run_in_threadpool(self.resolve_voice, request)
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
            await run_in_threadpool(self.store.write_result, task.step_id, request.format, data)
            if not await run_in_threadpool(self.store.finish, task.step_id, "completed"):
                # Cancelled while the file was being written: drop the result.
                self.store.result_path(task.step_id, request.format).unlink(missing_ok=True)
        except EngineFailure:
            self._stopping = True  # this process's engine will not come back
            await self._hand_back(task.step_id, count_attempt=True)  # maybe not its fault
        except Cancelled:
            if self._stopping:  # shutting down: it runs again on the next start
                await self._hand_back(task.step_id, count_attempt=False)
            else:
                log.info("Task %s cancelled", task.step_id)
        except Exception as exc:
            log.warning("Task %s failed: %s", task.step_id, exc)
            await self._record_failure(task.step_id, str(exc))
        finally:
            if starting:
                self._starting -= 1
            self._cancels.discard(cancel)
            watcher.cancel()

    async def _collect_with_progress(
        self, step_id: str, segments: AsyncIterator[AudioSegment]
    ) -> np.ndarray | None:
        """The whole utterance, recording the engine's progress in the task as it goes."""
        pieces = []
        async for segment in segments:
            pieces.append(segment.samples)
            if segment.progress is not None:
                await run_in_threadpool(self.store.set_progress, step_id, segment.progress)
        return np.concatenate(pieces) if pieces else None

    async def _hand_back(self, step_id: str, count_attempt: bool) -> None:
        try:
            if await run_in_threadpool(self.store.requeue, step_id, self.owner, count_attempt):
                log.info("Task %s returned to the queue", step_id)
        except sqlite3.Error as exc:  # still recorded as ours: re-queued once we are gone
            log.error("Could not return task %s to the queue: %s", step_id, exc)

    async def _record_failure(self, step_id: str, reason: str) -> None:
        try:
            await run_in_threadpool(self.store.finish, step_id, "failed", reason)
        except sqlite3.Error as exc:
            log.error("Could not record that task %s failed (%s): %s", step_id, reason, exc)

    async def _watch_for_cancel(self, step_id: str, cancel: CancelToken) -> None:
        while not cancel.cancelled:
            await asyncio.sleep(CANCEL_POLL_S)
            task = await run_in_threadpool(self.store.get, step_id)
            if task is None or task.status != "processing" or task.owner != self.owner:
                cancel.cancel()
