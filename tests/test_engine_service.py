"""The inference thread and the reference cache, with a counting engine under them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import numpy as np
import pytest

from fish_speech.engine.base import (
    AudioSegment,
    Cancelled,
    CancelToken,
    Engine,
    EngineBusy,
    EngineFailure,
    ReferenceAudio,
    SynthesisRequest,
)
from fish_speech.engine.service import TTSService


def run(coroutine):
    """asyncio.run on a thread of its own: a session fixture (Playwright's sync API) may
    leave an event loop set on the main thread, where asyncio.run refuses to start."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class CountingEngine(Engine):
    """Yields one short segment per word, records what it was asked to do."""

    name = "counting"

    def __init__(self) -> None:
        self.prepared: list[str] = []
        self.threads: set[str] = set()
        self.segments_made = 0

    def capabilities(self) -> dict:
        return {}

    def prepare_reference(self, reference: ReferenceAudio) -> str:
        self.prepared.append(reference.text)
        return reference.text

    def synthesize(self, request: SynthesisRequest, cancel: CancelToken):
        self.threads.add(threading.current_thread().name)
        if request.text == "fail":
            raise ValueError("refused")
        if request.text == "device fault":
            time.sleep(0.2)  # let other requests queue up behind this one
            raise EngineFailure("simulated device fault")
        if request.text == "exit":
            raise SystemExit(1)
        for _ in request.text.split():
            cancel.raise_if_cancelled()
            self.segments_made += 1
            time.sleep(0.001)  # like real work: 10 s for the long request if never cancelled
            yield AudioSegment(np.zeros(10, np.float32))


def reference(text: str, value: float = 0.5) -> ReferenceAudio:
    return ReferenceAudio(np.full(100, value, np.float32), 16000, text)


async def collect(service: TTSService, text: str, refs, use_cache: bool) -> int:
    segments = service.synthesize(SynthesisRequest(text), refs, use_cache, CancelToken())
    return len([s async for s in segments])


def test_cache_is_keyed_by_audio_and_text():
    engine = CountingEngine()
    service = TTSService(engine)
    try:
        run(collect(service, "a b", [reference("one")], use_cache=True))
        run(collect(service, "a b", [reference("one")], use_cache=True))
        assert engine.prepared == ["one"]  # second request served from the cache
        run(collect(service, "a b", [reference("two")], use_cache=True))
        run(collect(service, "a b", [reference("one", 0.1)], use_cache=True))
        assert engine.prepared == ["one", "two", "one"]  # new text, new audio: re-prepared
        run(collect(service, "a b", [reference("two")], use_cache=False))
        assert engine.prepared[-1] == "two" and len(engine.prepared) == 4
    finally:
        service.close()


def test_work_runs_on_the_inference_thread_and_errors_propagate():
    engine = CountingEngine()
    service = TTSService(engine)
    try:
        assert run(collect(service, "one two three", [], False)) == 3
        assert engine.threads == {"inference"}
        with pytest.raises(ValueError, match="refused"):
            run(collect(service, "fail", [], False))
    finally:
        service.close()


def test_leaving_the_stream_cancels_the_engine():
    engine = CountingEngine()
    service = TTSService(engine)
    cancel = CancelToken()

    async def take_one() -> None:
        segments = service.synthesize(SynthesisRequest("w " * 10_000), [], False, cancel)
        async for _ in segments:
            break
        await segments.aclose()
        await service.run(lambda: None)  # wait until the inference thread is free again

    try:
        run(take_one())
        assert cancel.cancelled
        assert engine.segments_made < 10_000
    finally:
        service.close()


def test_a_fatal_error_fails_queued_and_later_work_at_once():
    service = TTSService(CountingEngine())

    async def crash_with_a_request_queued_behind() -> list:
        doomed = collect(service, "device fault", [], False)
        queued = collect(service, "one two", [], False)
        return await asyncio.gather(doomed, queued, return_exceptions=True)

    try:
        assert service.failure is None
        doomed, queued = run(crash_with_a_request_queued_behind())
        assert isinstance(doomed, EngineFailure) and "simulated device fault" in str(doomed)
        assert isinstance(queued, EngineFailure), "a request queued behind must not hang"
        assert "simulated device fault" in service.failure
        with pytest.raises(EngineFailure):
            run(collect(service, "later", [], False))
        with pytest.raises(EngineFailure):
            run(service.run(lambda: 1))
    finally:
        service.close()


def test_system_exit_in_engine_code_is_fatal_but_ordinary_errors_are_not():
    service = TTSService(CountingEngine())
    try:
        with pytest.raises(ValueError):
            run(collect(service, "fail", [], False))
        assert service.failure is None
        with pytest.raises(EngineFailure):
            run(collect(service, "exit", [], False))
        assert "SystemExit" in service.failure
    finally:
        service.close()


def test_a_dead_inference_thread_is_reported():
    service = TTSService(CountingEngine())
    try:
        service.worker._jobs.put(object())  # not a job: the thread's own loop breaks
        deadline = time.monotonic() + 5
        while service.failure is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "inference thread crashed" in service.failure
        with pytest.raises(EngineFailure):
            run(collect(service, "a b", [], False))
    finally:
        service.close()


def test_a_request_cancelled_before_its_turn_raises_cancelled():
    service = TTSService(CountingEngine())
    cancel = CancelToken()
    cancel.cancel()
    try:
        with pytest.raises(Cancelled):
            run(collect_with(service, "a b", cancel))
        assert service.failure is None
    finally:
        service.close()


async def collect_with(service: TTSService, text: str, cancel: CancelToken) -> int:
    return len([s async for s in service.synthesize(SynthesisRequest(text), [], False, cancel)])


def test_work_sent_after_close_is_cancelled_not_left_waiting():
    service = TTSService(CountingEngine())
    service.close()
    with pytest.raises(Cancelled):
        run(service.run(lambda: 1))
    with pytest.raises(Cancelled):
        run(collect(service, "a b", [], False))


def test_serial_engine_queue_is_bounded():
    """One request runs and max_queue wait; the next is refused before any work is done."""
    engine = CountingEngine()
    service = TTSService(engine, max_queue=1)

    async def scenario() -> None:
        running = service.synthesize(SynthesisRequest("w " * 10_000), [], False, CancelToken())
        waiting = service.synthesize(SynthesisRequest("w " * 10_000), [], False, CancelToken())
        assert (await anext(running)).samples.size and service.room() == 0
        waiting_first = asyncio.ensure_future(anext(waiting))
        await asyncio.sleep(0.05)
        expected = {"running": 1, "waiting": 1, "slots_total": 1, "slots_free": 0}
        assert service.stats().items() >= expected.items()
        refused = service.synthesize(SynthesisRequest("w"), [], False, CancelToken())
        with pytest.raises(EngineBusy):
            await anext(refused)
        task = service.synthesize(SynthesisRequest("w"), [], False, CancelToken(), bounded=False)
        task_first = asyncio.ensure_future(anext(task))  # an async task is never refused
        await asyncio.sleep(0.05)
        assert not task_first.done() and service.stats()["waiting"] == 2
        await running.aclose()
        await waiting_first
        await waiting.aclose()
        await task_first
        await task.aclose()

    try:
        run(scenario())
        assert service.stats()["running"] == 0
    finally:
        service.close()
