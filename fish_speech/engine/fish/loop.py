"""The engine thread: continuous batching of every running request.

Each iteration, between decode steps: retire cancelled sequences and admit waiting ones
into the freed slots; prefill the sequences that start a chunk; run one batched decode step
for all the others; tell the output stage who has new frames and let it deliver; retire
sequences that have nothing left. A sequence therefore joins or leaves the batch within one
decode step.
"""

from __future__ import annotations

import logging
import threading

from fish_speech.engine.base import EngineFailure
from fish_speech.engine.fish.model_runner import ModelRunner
from fish_speech.engine.fish.output import OutputStage
from fish_speech.engine.fish.scheduler import Scheduler
from fish_speech.utils.cancel import Cancelled

log = logging.getLogger(__name__)


class EngineLoop:
    def __init__(self, scheduler: Scheduler, runner: ModelRunner, output: OutputStage) -> None:
        self.scheduler = scheduler
        self.runner = runner
        self.output = output
        self.failure: str | None = None
        self._thread = threading.Thread(target=self._run, name="fish-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.scheduler.close()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            while self.scheduler.wait_for_work():
                self.step()
        except BaseException as exc:
            log.exception("The Fish engine loop died")
            self.failure = f"the engine loop died: {type(exc).__name__}: {exc}"
            self.scheduler.close()
            self.scheduler.fail_all(EngineFailure(self.failure))
        else:
            self.scheduler.fail_all(Cancelled())  # shutting down

    def step(self) -> None:
        scheduler = self.scheduler
        scheduler.retire_cancelled()
        scheduler.admit()
        starting = [seq for seq in scheduler.running if seq.needs_prefill]
        if starting:
            self.runner.prefill(starting)
            for seq in starting:
                self.output.frames_added(seq)
        decoding = [seq for seq in scheduler.running if seq.decoding]
        if decoding:
            self.runner.decode(decoding)
            for seq in decoding:
                self.output.frames_added(seq)
        self.output.flush()
        for seq in list(scheduler.running):
            if seq.state is not None and seq.state.finished:
                try:
                    seq.end_chunk()
                except Exception as exc:  # this request's next prompt: fail it alone
                    scheduler.retire(seq, exc)
                    continue
                if not seq.has_more_chunks:
                    scheduler.retire(seq)
