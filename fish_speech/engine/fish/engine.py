"""The Fish engine: OpenAudio S1 text-to-semantic model + codec behind the Engine boundary,
serving every request through one continuously batched engine loop."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fish_speech.engine.base import (
    AudioSegment,
    BatchingEngine,
    CancelToken,
    EngineFailure,
    ReferenceAudio,
    SegmentSink,
    SynthesisRequest,
    with_progress,
)
from fish_speech.engine.fish.kv_slots import SlotPool, default_slots, kv_bytes_per_slot
from fish_speech.engine.fish.loop import EngineLoop
from fish_speech.engine.fish.model_runner import ModelRunner
from fish_speech.engine.fish.output import FIRST_PIECE_FRAMES, AudioOutput, OutputStage
from fish_speech.engine.fish.prompts import ContextPrompts
from fish_speech.engine.fish.scheduler import Reservation, Scheduler
from fish_speech.engine.fish.sequence import Sequence
from fish_speech.engine.sinks import BlockingSink
from fish_speech.models.precision import cpu_description, resolve_dtype
from fish_speech.models.text2semantic import SamplingParams, Text2Semantic, load_text2semantic
from fish_speech.text.normalize import normalize_text
from fish_speech.text.split import split_text
from fish_speech.text.verbalize import verbalize

DEFAULT_MAX_QUEUE = 32
log = logging.getLogger(__name__)


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


class FishEngine(BatchingEngine):
    name = "fish"
    voice_match = "in-context"
    latency_modes = {
        mode: f"the first audio after {frames} generated frames ({frames / 21.5:.1f} s of "
        "audio), then pieces twice as long each time, up to 128 frames"
        for mode, frames in FIRST_PIECE_FRAMES.items()
    }

    def __init__(
        self,
        model: Text2Semantic,
        codec: Any,
        checkpoint: str,
        max_batch_size: int | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        compile: bool = False,
        output: OutputStage | None = None,
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
        dtype = model.model.embeddings.weight.dtype
        self.slot_bytes = kv_bytes_per_slot(model.config, model.max_seq_len, dtype)
        slots = max_batch_size or default_slots(self.slot_bytes, model.device)
        if slots != model.model.cache_slots:
            model.model.setup_caches(slots, model.max_seq_len)
        log.info(
            "Fish engine: %d KV slot(s) of %d positions (%.2f GB each), up to %d waiting",
            slots,
            model.max_seq_len,
            self.slot_bytes / 1e9,
            max_queue,
        )
        self.scheduler = Scheduler(SlotPool(model.model, slots), max_queue)
        self.runner = ModelRunner(model, compile=compile)
        self.output = output or AudioOutput(codec, self.decode_dtype)
        self.loop = EngineLoop(self.scheduler, self.runner, self.output)
        self.loop.start()

    @classmethod
    def load(
        cls,
        checkpoint_dir: Path,
        codec: Any,
        device: str,
        half: bool,
        compile: bool,
        max_batch_size: int | None = None,
        max_seq_len: int | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        precision: str = "auto",
        quantize: str | None = None,
    ) -> FishEngine:
        dtype = model_dtype(device, precision, half)
        # One slot first: the pool is sized from the memory left once the weights are in.
        model = load_text2semantic(
            checkpoint_dir, device=device, dtype=dtype, max_seq_len=max_seq_len, quantize=quantize
        )
        return cls(
            model,
            codec,
            str(checkpoint_dir),
            max_batch_size,
            max_queue,
            compile,
            decode_dtype=dtype,
        )

    def warm_up(self) -> None:
        """With --compile, compile before the server reports ready, not during the first
        requests: two requests decode side by side, then one alone (one graph each)."""
        if not self.runner.compiled:
            return
        sinks = []
        for frames in (4, 8):
            sink: BlockingSink[AudioSegment] = BlockingSink()
            request = SynthesisRequest("Hello world.", max_new_tokens=frames, seed=0)
            self.submit(request, CancelToken(), sink, self.reserve(bounded=False))
            sinks.append(sink)
        for sink in sinks:
            list(sink)

    def capabilities(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "checkpoint": self.checkpoint,
            "num_codebooks": self.model.num_codebooks,
            "context_length": self.model.max_seq_len,
            "device": str(self.model.device),
            "threads": torch.get_num_threads(),
            "precision": str(self.model.dtype).removeprefix("torch."),
            "quantization": self.model.quantization,
            "codec_decode_precision": str(self.decode_dtype).removeprefix("torch."),
            **(cpu_description() if self.model.device.type == "cpu" else {}),
            "voice_match": self.voice_match,
            "streaming": True,
            "latency": self.latency_modes,
            "sample_rate": self.codec.sample_rate,
            "max_batch_size": self.scheduler.slots.size,
            "max_queue": self.scheduler.max_queue,
            "kv_bytes_per_slot": self.slot_bytes,
            "limitations": [
                "Text is generated in chunks of about chunk_length characters, each with the "
                "previous chunk as context; audio streams while a chunk is generated.",
            ],
        }

    def prepare_reference(self, reference: ReferenceAudio) -> FishPrompt:
        codes = self.codec.encode(reference.audio, reference.sample_rate)
        return FishPrompt(reference.text, codes)

    @property
    def prompt_format(self) -> str:
        # Codes depend on the codec's weights (encoding always runs in its float32).
        return f"fish-codes-v1:{self.codec.fingerprint}"

    def dump_prompt(self, prompt: FishPrompt) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, codes=prompt.codes, text=np.array(prompt.text))
        return buffer.getvalue()

    def load_prompt(self, data: bytes) -> FishPrompt:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            return FishPrompt(str(stored["text"]), stored["codes"])

    # -- batching ---------------------------------------------------------------------------

    def reserve(self, bounded: bool) -> Reservation:
        if self.failure is not None:
            raise EngineFailure(self.failure)
        return self.scheduler.reserve(bounded)

    def submit(
        self,
        request: SynthesisRequest,
        cancel: CancelToken,
        sink: SegmentSink,
        reservation: Reservation,
    ) -> None:
        try:
            seq = self._sequence(request, cancel, sink)
        except BaseException:
            reservation.release()
            raise
        if seq is None:  # nothing to say
            reservation.release()
            sink.close()
            return
        self.scheduler.add(seq, reservation)

    def _sequence(
        self, request: SynthesisRequest, cancel: CancelToken, sink: SegmentSink
    ) -> Sequence | None:
        """The request as a sequence (None if its text holds nothing to say); its chunks'
        prompts are checked against the context now, so a request that cannot run is
        refused before it queues (ValueError)."""
        params = SamplingParams(request.temperature, request.top_p, request.repetition_penalty)
        text = request.text
        if request.normalize:
            text = verbalize(normalize_text(text))
        chunks = split_text(text, request.chunk_length)
        if not chunks:
            return None
        references: list[FishPrompt] = request.prompts
        prompts = ContextPrompts(
            self.model,
            chunks,
            [p.text for p in references],
            [p.codes for p in references],
            request.max_new_tokens,
        )
        return Sequence(
            prompts,
            params,
            request.max_new_tokens,
            request.seed,
            cancel,
            sink,
            self.model.device,
            [done for _, done in with_progress(chunks)],
            request.latency,
        )

    def synthesize(
        self, request: SynthesisRequest, cancel: CancelToken | None = None
    ) -> Iterator[AudioSegment]:
        """Blocking form of reserve + submit, for callers outside the event loop."""
        cancel = cancel or CancelToken()
        sink: BlockingSink[AudioSegment] = BlockingSink()
        self.submit(request, cancel, sink, self.reserve(bounded=False))
        try:
            yield from sink
        finally:
            cancel.cancel()

    def stats(self) -> dict[str, Any]:
        runner = self.runner
        stats = {
            **self.scheduler.counts(),
            "decode_batch": runner.last_batch,
            "decode_step_s": None if runner.step_s is None else round(runner.step_s, 4),
            # Totals since start: differences over an interval give throughput and how the
            # engine thread's time splits between decode steps, prefills and the codec.
            "decode_steps_total": runner.decode_steps,
            "decode_frames_total": runner.decode_frames,
            "decode_seconds_total": round(runner.decode_seconds, 3),
            "prefills_total": runner.prefills,
            "prefill_seconds_total": round(runner.prefill_seconds, 3),
        }
        if isinstance(self.output, AudioOutput):
            stats["codec_seconds_total"] = round(self.output.decode_s, 3)
            stats["codec_audio_seconds_total"] = round(self.output.decoded_audio_s, 3)
        return stats

    def room(self) -> int:
        return self.scheduler.room()

    @property
    def failure(self) -> str | None:
        return self.loop.failure

    def close(self) -> None:
        self.loop.close()
