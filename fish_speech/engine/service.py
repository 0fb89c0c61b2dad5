"""What the server talks to: an engine, its inference thread and the reference cache."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import numpy as np

from fish_speech.engine.base import (
    AudioSegment,
    BatchingEngine,
    CancelToken,
    Engine,
    EngineBusy,
    ReferenceAudio,
    SynthesisRequest,
)
from fish_speech.engine.report import Listener, observe
from fish_speech.engine.sinks import Outbox
from fish_speech.engine.worker import InferenceWorker
from fish_speech.utils.schema import GenerationFields

T = TypeVar("T")
log = logging.getLogger(__name__)


def synthesis_request(fields: GenerationFields) -> SynthesisRequest:
    """The engine's view of a /v1/tts or async-task request (voice resolved separately)."""
    return SynthesisRequest(
        text=fields.text,
        chunk_length=fields.chunk_length,
        max_new_tokens=fields.max_new_tokens,
        top_p=fields.top_p,
        repetition_penalty=fields.repetition_penalty,
        temperature=fields.temperature,
        seed=fields.seed,
        normalize=fields.normalize,
        latency=fields.latency,
    )


async def collect_audio(segments: AsyncIterator[AudioSegment]) -> np.ndarray | None:
    """The whole utterance as one array, or None when the engine produced nothing."""
    pieces = [segment.samples async for segment in segments]
    return np.concatenate(pieces) if pieces else None


def reference_key(reference: ReferenceAudio) -> str:
    """Content key: the same audio with another transcript is another entry."""
    digest = hashlib.sha256()
    digest.update(reference.audio.tobytes())
    digest.update(str(reference.sample_rate).encode())
    digest.update(b"\0" + reference.text.encode("utf-8"))
    return digest.hexdigest()


class TTSService:
    """The engine behind one interface for the routes and the task runner.

    A batching engine (Fish) runs requests concurrently on its own thread and does its own
    admission control; a serial engine (embedded) runs one request at a time on the
    inference thread, behind a waiting queue of ``max_queue``. Voice references are
    prepared on the inference thread either way (the Fish engine encodes them with the
    codec there, beside the batch rather than inside it).
    """

    def __init__(self, engine: Engine, cache_entries: int = 64, max_queue: int = 32) -> None:
        self.engine = engine
        self.worker = InferenceWorker()
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_entries = cache_entries
        self.cache_hits = 0
        self.cache_misses = 0
        # Reference prompts made by the engine, and those read back from beside saved voices.
        self.prompts_prepared = 0
        self.prompts_loaded = 0
        # Called with a SynthesisReport when each synthesis ends (the server's metrics).
        self.listeners: list[Listener] = []
        self.max_queue = max_queue
        self._serial_requests = 0  # serial engine: requests accepted and not yet finished

    def close(self) -> None:
        if isinstance(self.engine, BatchingEngine):
            self.engine.close()
        self.worker.close()

    @property
    def failure(self) -> str | None:
        """Why this service can no longer synthesise (its engine or inference thread died),
        None while healthy. The server reports it on /v1/health and exits non-zero (a
        supervisor restarts it)."""
        if isinstance(self.engine, BatchingEngine) and self.engine.failure is not None:
            return self.engine.failure
        return self.worker.failure

    async def warm_up(self) -> None:
        """The engine's warm-up (e.g. torch.compile) as the first job of the inference thread."""
        await self.worker.call(self.engine.warm_up)

    @property
    def capacity(self) -> int:
        """Requests that run at the same time at most."""
        if isinstance(self.engine, BatchingEngine):
            return self.engine.stats()["slots_total"]
        return 1

    def room(self) -> int:
        """Requests that could start now without waiting."""
        if isinstance(self.engine, BatchingEngine):
            return self.engine.room()
        return 0 if self._serial_requests else 1

    def stats(self) -> dict[str, Any]:
        """Plain numbers for health and metrics (running, waiting, slots, step time, and the
        reference prompts prepared or read back from saved voices)."""
        prompts = {
            "reference_prompts_prepared": self.prompts_prepared,
            "reference_prompts_loaded": self.prompts_loaded,
        }
        if isinstance(self.engine, BatchingEngine):
            return {**self.engine.stats(), **prompts}
        running = min(self._serial_requests, 1)
        return {
            "running": running,
            "waiting": self._serial_requests - running,
            "slots_total": 1,
            "slots_free": 1 - running,
            **prompts,
        }

    @property
    def queue_depth(self) -> int:
        """Requests accepted and waiting for a place in the engine."""
        return self.stats()["waiting"]

    @property
    def running_batch(self) -> int:
        """Requests being computed now."""
        return self.stats()["running"]

    def _prepare(self, reference: ReferenceAudio, use_cache: bool) -> Any:
        """Runs on the inference thread (the Fish engine encodes with the codec there)."""
        if not use_cache:
            return self._stored_or_prepared(reference)
        key = reference_key(reference)
        if key in self._cache:
            self.cache_hits += 1
            self._cache.move_to_end(key)
            return self._cache[key]
        self.cache_misses += 1
        prompt = self._stored_or_prepared(reference, key)
        self._cache[key] = prompt
        while len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)
        return prompt

    def _stored_or_prepared(self, reference: ReferenceAudio, key: str | None = None) -> Any:
        """A saved voice's prompt as stored beside it for this very content (audio and
        transcript) and engine format; else prepared, and stored for next time."""
        fmt = self.engine.prompt_format
        if reference.stored is None or fmt is None:
            self.prompts_prepared += 1
            return self.engine.prepare_reference(reference)
        content = key or reference_key(reference)
        stored_key = hashlib.sha256(f"{fmt}\0{content}".encode()).hexdigest()
        if (data := reference.stored.load(stored_key)) is not None:
            self.prompts_loaded += 1
            return self.engine.load_prompt(data)
        self.prompts_prepared += 1
        prompt = self.engine.prepare_reference(reference)
        try:
            reference.stored.save(stored_key, self.engine.dump_prompt(prompt))
        except OSError as exc:  # a read-only or full disk costs the next request time, no more
            log.warning("Could not keep a saved voice's prompt: %s", exc)
        return prompt

    def synthesize(
        self,
        request: SynthesisRequest,
        references: list[ReferenceAudio],
        use_cache: bool,
        cancel: CancelToken,
        request_id: str | None = None,
        bounded: bool = True,
    ) -> AsyncIterator[AudioSegment]:
        """Audio segments of ``request`` as they are made; when it ends it is logged and
        reported to ``listeners`` under ``request_id`` (a fresh id if None).

        Raises UnsupportedRequest at once for what the engine refuses. Admission is decided
        when iteration starts, before any work: when every slot is busy and the waiting
        queue is full, ``bounded`` requests raise :class:`EngineBusy` from the first
        ``anext`` (unbounded ones, the durable async tasks, pace themselves with
        :meth:`room`). Leaving the iteration early cancels the request.
        """
        self.engine.check_request(request)
        return observe(
            self._segments(request, references, use_cache, cancel, bounded),
            request_id or uuid.uuid4().hex[:12],
            self.engine.name,
            len(request.text),
            self.listeners,
        )

    async def _segments(
        self,
        request: SynthesisRequest,
        references: list[ReferenceAudio],
        use_cache: bool,
        cancel: CancelToken,
        bounded: bool,
    ) -> AsyncIterator[AudioSegment]:
        if isinstance(self.engine, BatchingEngine):
            segments = self._batched(self.engine, request, references, use_cache, cancel, bounded)
        else:
            segments = self._serial(request, references, use_cache, cancel, bounded)
        try:
            async for segment in segments:
                yield segment
        finally:
            await segments.aclose()
            cancel.cancel()  # consumer gone or done: the engine stops and frees the slot

    async def _serial(
        self,
        request: SynthesisRequest,
        references: list[ReferenceAudio],
        use_cache: bool,
        cancel: CancelToken,
        bounded: bool,
    ) -> AsyncIterator[AudioSegment]:
        if bounded and self._serial_requests > self.max_queue:
            raise EngineBusy(
                1.0,
                f"Server busy: {self._serial_requests} request(s) running or waiting "
                f"(at most 1 + {self.max_queue}); retry later",
            )

        def produce():
            request.prompts = [self._prepare(ref, use_cache) for ref in references]
            cancel.raise_if_cancelled()
            yield from self.engine.synthesize(request, cancel)

        self._serial_requests += 1
        try:
            async for segment in self.worker.stream(produce, cancel):
                yield segment
        finally:
            self._serial_requests -= 1

    async def _batched(
        self,
        engine: BatchingEngine,
        request: SynthesisRequest,
        references: list[ReferenceAudio],
        use_cache: bool,
        cancel: CancelToken,
        bounded: bool,
    ) -> AsyncIterator[AudioSegment]:
        reservation = engine.reserve(bounded)
        try:
            if references:
                request.prompts = await self.worker.call(
                    lambda: [self._prepare(ref, use_cache) for ref in references]
                )
            outbox: Outbox[AudioSegment] = Outbox(cancel)
            engine.submit(request, cancel, outbox, reservation)
            async for segment in outbox:
                yield segment
        finally:
            reservation.release()  # a no-op once submitted

    async def run(self, fn: Callable[[], T]) -> T:
        """Run other device work (codec encode/decode) on the same inference thread."""
        return await self.worker.call(fn)
