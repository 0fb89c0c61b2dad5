"""Runs queued async tasks: each server process claims a task from the durable queue only
while its engine has room (a free slot nobody waits for), so tasks run several at once
beside interactive requests and never meet the waiting queue's 429."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

import ormsgpack
from starlette.concurrency import run_in_threadpool

from fish_speech.audio.io import encode_audio
from fish_speech.engine.base import (
    OUTPUT_SAMPLE_RATE,
    Cancelled,
    CancelToken,
    EngineFailed,
    ReferenceAudio,
)
from fish_speech.engine.service import TTSService, collect_audio, synthesis_request
from fish_speech.tasks.store import Task, TaskStore, process_identity
from fish_speech.utils.schema import AsyncGenerateRequest

log = logging.getLogger(__name__)

IDLE_POLL_S = 1.0  # other processes may queue tasks: look for work at least this often
ROOM_POLL_S = 0.25  # interactive requests free slots too: look for room this often
CANCEL_POLL_S = 0.3  # a cancel may come through another process: notice it this quickly


class TaskRunner:
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
        self._starting = 0  # claimed tasks whose synthesis has not taken its slot yet

    def notify(self) -> None:
        """A task was queued by this process: start it without waiting for the next poll."""
        self._wake.set()

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
        requeued = await run_in_threadpool(self.store.requeue_orphans)
        if requeued:
            log.info("Re-queued %d task(s) interrupted by a restart: %s", len(requeued), requeued)
        try:
            while True:
                if not self.has_room():
                    await self._sleep(ROOM_POLL_S)
                    continue
                task = await run_in_threadpool(self.store.claim_next, self.owner)
                if task is None:
                    await self._sleep(IDLE_POLL_S)
                    continue
                self._starting += 1
                running = asyncio.create_task(self._execute(task))
                self._running.add(running)
                running.add_done_callback(self._finished)
        finally:
            for running in self._running:
                running.cancel()  # an unfinished task stays recorded and resumes on restart

    def _finished(self, running: asyncio.Task) -> None:
        self._running.discard(running)
        self._wake.set()

    async def _execute(self, task: Task) -> None:
        cancel = CancelToken()
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
                bounded=False,
            )
            # Iterating reserves the engine place before its first await, so from here on
            # the engine's room() counts this task.
            self._starting -= 1
            starting = False
            audio = await collect_audio(segments)
            if audio is None:
                raise ValueError("No speech could be synthesised from this text")
            data = encode_audio(audio, OUTPUT_SAMPLE_RATE, request.format)
            await run_in_threadpool(self.store.write_result, task.step_id, request.format, data)
            if not await run_in_threadpool(self.store.finish, task.step_id, "completed"):
                # Cancelled while the file was being written: drop the result.
                self.store.result_path(task.step_id, request.format).unlink(missing_ok=True)
        except Cancelled:
            log.info("Task %s cancelled", task.step_id)
        except EngineFailed as exc:
            # Not the task's fault: left "processing", it is re-queued when the server restarts.
            log.error("Task %s interrupted: %s", task.step_id, exc)
        except Exception as exc:
            log.warning("Task %s failed: %s", task.step_id, exc)
            await run_in_threadpool(self.store.finish, task.step_id, "failed", str(exc))
        finally:
            if starting:
                self._starting -= 1
            watcher.cancel()

    async def _watch_for_cancel(self, step_id: str, cancel: CancelToken) -> None:
        while not cancel.cancelled:
            await asyncio.sleep(CANCEL_POLL_S)
            task = await run_in_threadpool(self.store.get, step_id)
            if task is None or task.status != "processing" or task.owner != self.owner:
                cancel.cancel()
