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
)
from fish_speech.models.precision import cpu_description, resolve_dtype
from fish_speech.models.text2semantic import Text2Semantic, load_text2semantic
from fish_speech.text.normalize import normalize_text
from fish_speech.text.split import split_text


@dataclass(frozen=True)
class FishPrompt:
    """A reference voice as the model reads it: transcript + codec codes."""

    text: str
    codes: np.ndarray  # (num_codebooks, frames)


def model_dtype(device: str, precision: str, half: bool) -> torch.dtype:
    """``--half`` keeps its meaning: float16 instead of bfloat16 on a GPU, when no precision
    is named; on CPU it is ignored (float16 matmuls are slow there)."""
    if half and precision == "auto" and torch.device(device).type != "cpu":
        return torch.float16
    return resolve_dtype(device, precision)


class FishEngine(Engine):
    name = "fish"
    voice_match = "in-context"

    def __init__(
        self,
        model: Text2Semantic,
        codec: Any,
        checkpoint: str,
        decode_dtype: torch.dtype | None = None,
    ) -> None:
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
        # Speech is decoded in the engine's precision, as the original's TTS path does (its
        # autocast); /v1/vqgan/decode keeps the codec's float32. Made now, not per request.
        self.decode_dtype = decode_dtype or codec.dtype
        codec.decode_model(self.decode_dtype)

    @classmethod
    def load(
        cls,
        checkpoint_dir: Path,
        codec: Any,
        device: str,
        half: bool,
        compile: bool,
        precision: str = "auto",
        quantize: str | None = None,
    ) -> FishEngine:
        dtype = model_dtype(device, precision, half)
        model = load_text2semantic(
            checkpoint_dir, device=device, dtype=dtype, compile=compile, quantize=quantize
        )
        if compile:
            # Compile now, before the server accepts requests, not during the first one.
            model.generate("Hello world.", max_new_tokens=4, seed=0)
        return cls(model, codec, str(checkpoint_dir), decode_dtype=dtype)

    def capabilities(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "checkpoint": self.checkpoint,
            "num_codebooks": self.model.num_codebooks,
            "context_length": self.model.max_seq_len,
            "device": str(self.model.device),
            "precision": str(self.model.dtype).removeprefix("torch."),
            "quantization": self.model.quantization,
            "codec_decode_precision": str(self.decode_dtype).removeprefix("torch."),
            **(cpu_description() if self.model.device.type == "cpu" else {}),
            "voice_match": self.voice_match,
            "streaming": True,
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
        for chunk in split_text(text, request.chunk_length):
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
            audio = self.codec.decode(codes, self.decode_dtype)
            yield AudioSegment(audio.astype(np.float32))
