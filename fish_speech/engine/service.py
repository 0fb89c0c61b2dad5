"""What the server talks to: an engine, its inference thread and the reference cache."""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import numpy as np

from fish_speech.engine.base import (
    AudioSegment,
    CancelToken,
    Engine,
    ReferenceAudio,
    SynthesisRequest,
)
from fish_speech.engine.report import Listener, observe
from fish_speech.engine.worker import InferenceWorker
from fish_speech.utils.schema import GenerationFields

T = TypeVar("T")


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
    def __init__(self, engine: Engine, cache_entries: int = 64) -> None:
        self.engine = engine
        self.worker = InferenceWorker()
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_entries = cache_entries
        self.cache_hits = 0
        self.cache_misses = 0
        # Called with a SynthesisReport when each synthesis ends (the server's metrics).
        self.listeners: list[Listener] = []

    @property
    def queue_depth(self) -> int:
        """Jobs waiting for the inference thread."""
        return self.worker.queue_depth

    @property
    def running_batch(self) -> int:
        """Requests being computed now (the serial worker runs one at a time)."""
        return self.worker.running

    @property
    def failure(self) -> str | None:
        """Why this service can no longer synthesise; None while healthy.

        The server reports it on /v1/health and exits non-zero (a supervisor restarts it).
        """
        return self.worker.failure

    async def warm_up(self) -> None:
        """The engine's warm-up (e.g. torch.compile) as the first job of the inference thread."""
        await self.worker.call(self.engine.warm_up)

    def close(self) -> None:
        self.worker.close()

    def _prepare(self, reference: ReferenceAudio, use_cache: bool) -> Any:
        """Runs on the inference thread (the Fish engine encodes with the codec there)."""
        if not use_cache:
            return self.engine.prepare_reference(reference)
        key = reference_key(reference)
        if key in self._cache:
            self.cache_hits += 1
            self._cache.move_to_end(key)
            return self._cache[key]
        self.cache_misses += 1
        prompt = self.engine.prepare_reference(reference)
        self._cache[key] = prompt
        while len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)
        return prompt

    def synthesize(
        self,
        request: SynthesisRequest,
        references: list[ReferenceAudio],
        use_cache: bool,
        cancel: CancelToken,
        request_id: str | None = None,
    ) -> AsyncIterator[AudioSegment]:
        """Queue the request; its segments arrive as they are made, and when it ends it is
        logged and reported to ``listeners`` under ``request_id`` (a fresh id if None).

        Raises UnsupportedRequest at once (before queueing) for what the engine refuses.
        """
        self.engine.check_request(request)

        def produce():
            request.prompts = [self._prepare(ref, use_cache) for ref in references]
            cancel.raise_if_cancelled()
            yield from self.engine.synthesize(request, cancel)

        return observe(
            self.worker.stream(produce, cancel),
            request_id or uuid.uuid4().hex[:12],
            self.engine.name,
            len(request.text),
            self.listeners,
        )

    async def run(self, fn: Callable[[], T]) -> T:
        """Run other device work (codec encode/decode) on the same inference thread."""
        return await self.worker.call(fn)
