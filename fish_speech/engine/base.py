"""The one boundary between HTTP and synthesis.

A request goes in, float32 audio segments come out as they are made. Every engine
(the embedded CPU engine, the Fish Dual-AR engine) implements :class:`Engine`; the
server never touches a model directly.
"""

from __future__ import annotations

import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OUTPUT_SAMPLE_RATE = 44100
"""Every engine answers at this rate, so clients can assume it (the seed plays at 44.1 kHz)."""


class UnsupportedRequest(ValueError):
    """The engine cannot do what the request asks; the message says why."""


class Cancelled(Exception):
    """Raised inside an engine when the caller cancelled the request."""


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


class CancelToken:
    """A flag the caller sets and the engine polls between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()


@dataclass(frozen=True)
class ReferenceAudio:
    """A decoded reference voice: mono float32 samples and their transcript."""

    audio: np.ndarray
    sample_rate: int
    text: str


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
    """A speech engine. Methods are called from one inference thread only."""

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

    def warm_up(self) -> None:  # noqa: B027 (optional hook: most engines need no warm-up)
        """Run once on the inference thread before the server reports itself ready."""

    @abstractmethod
    def synthesize(self, request: SynthesisRequest, cancel: CancelToken) -> Iterator[AudioSegment]:
        """Yield audio segments in order (one per sentence or chunk) at OUTPUT_SAMPLE_RATE.

        Must call ``cancel.raise_if_cancelled()`` often enough to stop within one step.
        """
