"""The one boundary between HTTP and synthesis.

A request goes in, float32 audio segments come out as they are made. Every engine
(the embedded CPU engine, the Fish Dual-AR engine) implements :class:`Engine`; the
server never touches a model directly.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

# Re-exported (they used to live here; engines and the server import them from this module).
from fish_speech.utils.cancel import Cancelled as Cancelled
from fish_speech.utils.cancel import CancelToken as CancelToken

OUTPUT_SAMPLE_RATE = 44100
"""Every engine answers at this rate, so clients can assume it (the seed plays at 44.1 kHz)."""


class UnsupportedRequest(ValueError):
    """The engine cannot do what the request asks; the message says why."""


class EngineFailure(Exception):
    """The engine can no longer work (its thread died, a CUDA context is poisoned, ...).

    Only a fresh process helps: the server reports it on /v1/health and exits non-zero so
    that a supervisor starts a new one. Accepted async tasks go back to the queue.
    """


def is_fatal(exc: BaseException) -> bool:
    """Errors after which the inference thread must run nothing more.

    Ordinary exceptions fail one request. SystemExit and the like escaping engine code, and
    CUDA errors (torch raises AcceleratorError once a kernel faulted; every later call fails
    the same way), mean the engine is broken.
    """
    if isinstance(exc, EngineFailure) or not isinstance(exc, Exception):
        return True
    torch = sys.modules.get("torch")  # only look: the embedded engine never imports torch
    accelerator_error = getattr(torch, "AcceleratorError", None)
    return accelerator_error is not None and isinstance(exc, accelerator_error)


class EngineBusy(Exception):
    """The engine cannot take another request now: every slot is busy and the waiting queue is
    full. ``retry_after_s`` is a hint of when a place may be free."""

    def __init__(self, retry_after_s: float, detail: str) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class PromptStore(Protocol):
    """Durable storage, beside a saved voice, of what an engine made of it (its prompt), so
    a restart or another worker process does not prepare it again."""

    def load(self, key: str) -> bytes | None:
        """The stored prompt if it was stored under ``key``, else None."""

    def save(self, key: str, data: bytes) -> None: ...


@dataclass(frozen=True)
class ReferenceAudio:
    """A decoded reference voice: mono float32 samples and their transcript."""

    audio: np.ndarray
    sample_rate: int
    text: str
    # Saved voices: where the prepared prompt is kept (None for inline references).
    stored: PromptStore | None = field(default=None, compare=False)


@dataclass
class SynthesisRequest:
    text: str
    # Engine-specific prepared voice prompts, made by Engine.prepare_reference.
    prompts: list[Any] = field(default_factory=list)
    chunk_length: int = 200
    max_new_tokens: int = 1024
    top_p: float = 0.8
    repetition_penalty: float = 1.1
    temperature: float = 0.8
    seed: int | None = None
    normalize: bool = True
    latency: str = "normal"  # see Engine.latency_modes


@dataclass(frozen=True)
class AudioSegment:
    """A piece of the utterance, mono float32 in [-1, 1]."""

    samples: np.ndarray
    sample_rate: int = OUTPUT_SAMPLE_RATE
    # Fraction of the request's text spoken once this segment is played (0-1), for progress
    # reports; None when the engine cannot tell.
    progress: float | None = None
    # Model frames generated for this segment (the Fish engine's semantic frames); 0 if none.
    frames: int = 0


def with_progress(pieces: list[str]) -> Iterator[tuple[str, float]]:
    """Each piece of a request's text with the fraction of its characters done after it."""
    total = sum(len(piece) for piece in pieces) or 1
    done = 0
    for piece in pieces:
        done += len(piece)
        yield piece, done / total


class Engine(ABC):
    """A speech engine. Methods are called from one inference thread only (a
    :class:`BatchingEngine` instead takes requests from any thread into its own)."""

    name: str = "engine"
    # "in-context": references steer the model itself; "approximate": post-hoc pitch/timbre match.
    voice_match: str = "none"
    # Latency mode -> what this engine does for it (reported by /v1/health); a mode that is
    # not here is refused with the reason in unavailable_latency.
    latency_modes: dict[str, str] = {"normal": "one segment per sentence"}
    unavailable_latency: dict[str, str] = {}

    def check_request(self, request: SynthesisRequest) -> None:
        """Raise UnsupportedRequest for what this engine cannot honour."""
        if request.latency not in self.latency_modes:
            reason = self.unavailable_latency.get(request.latency, "it is not implemented")
            modes = ", ".join(repr(m) for m in self.latency_modes)
            raise UnsupportedRequest(
                f"latency {request.latency!r} is not available with the {self.name} engine: "
                f"{reason}. Use {modes}"
            )

    @abstractmethod
    def capabilities(self) -> dict[str, Any]:
        """What this engine can do, reported by /v1/health."""

    @abstractmethod
    def prepare_reference(self, reference: ReferenceAudio) -> Any:
        """Turn a reference voice into whatever synthesize() needs (cacheable)."""

    # Engines whose prepared prompts are worth keeping on disk set this to a name of what
    # the prompt depends on (e.g. the codec's weights), and (de)serialise it below.
    prompt_format: str | None = None

    def dump_prompt(self, prompt: Any) -> bytes:
        raise NotImplementedError(f"the {self.name} engine keeps no prepared prompts")

    def load_prompt(self, data: bytes) -> Any:
        raise NotImplementedError(f"the {self.name} engine keeps no prepared prompts")

    def warm_up(self) -> None:  # noqa: B027 (optional hook: most engines need no warm-up)
        """Run once on the inference thread before the server reports itself ready."""

    @abstractmethod
    def synthesize(self, request: SynthesisRequest, cancel: CancelToken) -> Iterator[AudioSegment]:
        """Yield audio segments in order (one per sentence or chunk) at OUTPUT_SAMPLE_RATE.

        Must call ``cancel.raise_if_cancelled()`` often enough to stop within one step.
        """


class SegmentSink(Protocol):
    """Where an engine thread sends one request's audio, in order."""

    def put(self, segment: AudioSegment) -> None: ...

    def close(self, error: BaseException | None = None) -> None:
        """No more segments: the request is done, or failed with ``error``."""


class Reservation(Protocol):
    """A place in an engine's queue, held while a request's voice is being prepared."""

    def release(self) -> None:
        """Give the place back unused (submitting the request consumes it instead)."""


class BatchingEngine(Engine):
    """An engine that runs many requests at once on its own thread (continuous batching).

    The service hands requests to it instead of queueing them on the serial inference
    thread: ``reserve`` first (admission control, raising :class:`EngineBusy`), then
    ``submit`` once the voice prompts are prepared (``prepare_reference`` still runs on the
    inference thread). ``synthesize`` stays usable as a blocking form for callers on any
    thread.
    """

    @abstractmethod
    def reserve(self, bounded: bool) -> Reservation:
        """Hold a place for one request. ``bounded`` requests get :class:`EngineBusy` when the
        waiting queue is full; unbounded ones (durable async tasks, which limit themselves)
        always get one."""

    @abstractmethod
    def submit(
        self,
        request: SynthesisRequest,
        cancel: CancelToken,
        sink: SegmentSink,
        reservation: Reservation,
    ) -> None:
        """Queue a request; its segments go to ``sink``. Raises ValueError for input the
        engine refuses (then the reservation is released)."""

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Plain numbers for health and metrics: running, waiting, slots, step time."""

    @abstractmethod
    def room(self) -> int:
        """Requests that could start now without waiting (free slots not promised)."""

    @property
    @abstractmethod
    def failure(self) -> str | None:
        """Why the engine's thread died, or None while it is healthy."""

    @abstractmethod
    def close(self) -> None:
        """Stop the engine thread; requests still in it end with ``Cancelled``."""
