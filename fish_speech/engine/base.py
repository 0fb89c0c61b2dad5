"""The one boundary between HTTP and synthesis.

A request goes in, float32 audio segments come out as they are made. Every engine
(the embedded CPU engine, the Fish Dual-AR engine) implements :class:`Engine`; the
server never touches a model directly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Re-exported (they used to live here; engines and the server import them from this module).
from fish_speech.utils.cancel import Cancelled as Cancelled
from fish_speech.utils.cancel import CancelToken as CancelToken

OUTPUT_SAMPLE_RATE = 44100
"""Every engine answers at this rate, so clients can assume it (the seed plays at 44.1 kHz)."""


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


@dataclass(frozen=True)
class AudioSegment:
    """A piece of the utterance, mono float32 in [-1, 1]."""

    samples: np.ndarray
    sample_rate: int = OUTPUT_SAMPLE_RATE


class Engine(ABC):
    """A speech engine. Methods are called from one inference thread only."""

    name: str = "engine"
    # "in-context": references steer the model itself; "approximate": post-hoc pitch/timbre match.
    voice_match: str = "none"

    @abstractmethod
    def capabilities(self) -> dict[str, Any]:
        """What this engine can do, reported by /v1/health."""

    @abstractmethod
    def prepare_reference(self, reference: ReferenceAudio) -> Any:
        """Turn a reference voice into whatever synthesize() needs (cacheable)."""

    @abstractmethod
    def synthesize(self, request: SynthesisRequest, cancel: CancelToken) -> Iterator[AudioSegment]:
        """Yield audio segments in order (one per sentence or chunk) at OUTPUT_SAMPLE_RATE.

        Must call ``cancel.raise_if_cancelled()`` often enough to stop within one step.
        """
