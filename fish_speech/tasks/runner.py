"""Runs queued async tasks, one at a time per server process, on the shared inference thread."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

import ormsgpack
from starlette.concurrency import run_in_threadpool

from fish_speech.audio.encode import encode_audio
from fish_speech.engine.base import OUTPUT_SAMPLE_RATE, Cancelled, CancelToken, ReferenceAudio
from fish_speech.engine.service import TTSService, collect_audio, synthesis_request
from fish_speech.tasks.store import Task, TaskStore, process_identity
from fish_speech.utils.schema import AsyncGenerateRequest

log = logging.getLogger(__name__)

IDLE_POLL_S = 1.0  # other processes may queue tasks: look for work at least this often
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

    def notify(self) -> None:
        """A task was queued by this process: start it without waiting for the next poll."""
        self._wake.set()

    async def run_forever(self) -> None:
        requeued = await run_in_threadpool(self.store.requeue_orphans)
        if requeued:
            log.info("Re-queued %d task(s) interrupted by a restart: %s", len(requeued), requeued)
        while True:
            task = await run_in_threadpool(self.store.claim_next, self.owner)
            if task is None:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)
                except TimeoutError:
                    pass
                continue
            await self._execute(task)

    async def _execute(self, task: Task) -> None:
        cancel = CancelToken()
        watcher = asyncio.create_task(self._watch_for_cancel(task.step_id, cancel))
        try:
            request = AsyncGenerateRequest.model_validate(ormsgpack.unpackb(task.request))
            voice = await run_in_threadpool(self.resolve_voice, request)
            segments = self.service.synthesize(
                synthesis_request(request), voice, request.use_memory_cache == "on", cancel
            )
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
        except Exception as exc:
            log.warning("Task %s failed: %s", task.step_id, exc)
            await run_in_threadpool(self.store.finish, task.step_id, "failed", str(exc))
        finally:
            watcher.cancel()

    async def _watch_for_cancel(self, step_id: str, cancel: CancelToken) -> None:
        while not cancel.cancelled:
            await asyncio.sleep(CANCEL_POLL_S)
            task = await run_in_threadpool(self.store.get, step_id)
            if task is None or task.status != "processing" or task.owner != self.owner:
                cancel.cancel()
