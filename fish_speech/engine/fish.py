"""The Fish engine: OpenAudio S1 text-to-semantic model + codec behind the Engine boundary."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fish_speech.engine.base import (
    AudioSegment,
    CancelToken,
    Engine,
    ReferenceAudio,
    SynthesisRequest,
    with_progress,
)
from fish_speech.models.text2semantic import Text2Semantic, load_text2semantic
from fish_speech.text.normalize import normalize_text
from fish_speech.text.split import split_for_latency


@dataclass(frozen=True)
class FishPrompt:
    """A reference voice as the model reads it: transcript + codec codes."""

    text: str
    codes: np.ndarray  # (num_codebooks, frames)


class FishEngine(Engine):
    name = "fish"
    voice_match = "in-context"
    latency_modes = {
        "normal": "one segment per text chunk (sentences, at most chunk_length characters)",
        "balanced": "as normal, but the first sentence is cut at its commas: earlier first "
        "audio, slightly less context for it",
    }
    unavailable_latency = {
        "low": "it needs frame-level streaming (audio before a chunk is fully generated), "
        "which this engine does not do yet"
    }

    def __init__(self, model: Text2Semantic, codec: Any, checkpoint: str) -> None:
        if model.num_codebooks != codec.num_codebooks:
            raise ValueError(
                f"the text model writes {model.num_codebooks} codebooks but the codec reads "
                f"{codec.num_codebooks}: they are not a matching pair"
            )
        if codec.sample_rate != 44100:
            raise ValueError(f"the codec runs at {codec.sample_rate} Hz; 44100 Hz is expected")
        self.model = model
        self.codec = codec
        self.checkpoint = checkpoint
        self.compiled = False

    @classmethod
    def load(
        cls, checkpoint_dir: Path, codec: Any, device: str, half: bool, compile: bool
    ) -> FishEngine:
        dtype = torch.float16 if half and device != "cpu" else None  # None: bf16 on GPU
        model = load_text2semantic(checkpoint_dir, device=device, dtype=dtype, compile=compile)
        engine = cls(model, codec, str(checkpoint_dir))
        engine.compiled = compile
        return engine

    def warm_up(self) -> None:
        # Compile before the server reports ready, not during the first request; on the
        # inference thread, which is where the compiled step then runs.
        if self.compiled:
            self.model.generate("Hello world.", max_new_tokens=4, seed=0)

    def capabilities(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "checkpoint": self.checkpoint,
            "num_codebooks": self.model.num_codebooks,
            "context_length": self.model.max_seq_len,
            "device": str(self.model.device),
            "voice_match": self.voice_match,
            "streaming": True,
            "latency": self.latency_modes,
            "sample_rate": self.codec.sample_rate,
            "limitations": [
                "Text is generated in chunks of about chunk_length characters; each chunk is "
                "one streamed segment.",
            ],
        }

    def prepare_reference(self, reference: ReferenceAudio) -> FishPrompt:
        codes = self.codec.encode(reference.audio, reference.sample_rate)
        return FishPrompt(reference.text, codes)

    def synthesize(self, request: SynthesisRequest, cancel: CancelToken) -> Iterator[AudioSegment]:
        text = normalize_text(request.text) if request.normalize else request.text
        prompts: list[FishPrompt] = request.prompts
        chunks = split_for_latency(text, request.chunk_length, request.latency)
        for chunk, progress in with_progress(chunks):
            codes = self.model.generate(
                chunk,
                [p.text for p in prompts],
                [p.codes for p in prompts],
                max_new_tokens=request.max_new_tokens,
                top_p=request.top_p,
                temperature=request.temperature,
                repetition_penalty=request.repetition_penalty,
                seed=request.seed,
                cancel=lambda: cancel.cancelled,
            )
            cancel.raise_if_cancelled()
            if codes.shape[1] == 0:
                continue
            audio = self.codec.decode(codes).astype(np.float32)
            yield AudioSegment(audio, progress=progress, frames=int(codes.shape[1]))
