"""Choosing and loading the engine (and codec) a server runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fish_speech.engine.base import Engine
from fish_speech.engine.cpu_memory import keep_freed_memory

log = logging.getLogger(__name__)


@dataclass
class LoadedModels:
    engine: Engine
    codec: Any | None  # fish_speech.models.dac.Codec, for /v1/vqgan/*


def resolve_device(requested: str) -> str:
    """The requested device if usable; CUDA falls back to CPU (with a log line) when absent."""
    import torch

    if requested.startswith("cuda") and not torch.cuda.is_available():
        log.warning("CUDA is not available: running on the CPU")
        return "cpu"
    return requested


def load_models(
    llama_path: Path | None,
    decoder_path: Path | None,
    decoder_config: str,
    device: str,
    half: bool,
    compile: bool,
    max_batch_size: int | None = None,
    max_seq_len: int | None = None,
    max_queue: int = 32,
    precision: str = "auto",
    quantize: str | None = None,
) -> LoadedModels:
    """The engine and codec the settings ask for. ``max_batch_size`` (None: sized from free
    memory), ``max_seq_len`` (None: the checkpoint's) and ``max_queue`` shape the Fish
    engine's batching."""
    codec = None
    if decoder_path is not None:
        from fish_speech.models.dac import load_codec

        device = resolve_device(device)
        if device == "cpu":
            keep_freed_memory()
        log.info("Loading codec %s (%s) on %s", decoder_path, decoder_config, device)
        codec = load_codec(decoder_path, decoder_config, device=device)

    if llama_path is not None:
        if codec is None:
            raise ValueError(
                f"{llama_path} needs the codec to speak: pass --decoder-checkpoint-path"
            )
        from fish_speech.engine.fish import FishEngine

        engine: Engine = FishEngine.load(
            llama_path,
            codec,
            device=device,
            half=half,
            compile=compile,
            max_batch_size=max_batch_size,
            max_seq_len=max_seq_len,
            max_queue=max_queue,
            precision=precision,
            quantize=quantize,
        )
        caps = engine.capabilities()
        log.info(
            "Fish engine ready: %s on %s (%s, weights %s)",
            llama_path,
            device,
            caps["precision"],
            caps["quantization"] or "float",
        )
    else:
        from fish_speech.engine.embedded import load_embedded_engine

        log.info(
            "No text-to-semantic checkpoint found: starting the embedded CPU engine "
            "(Piper English voice + eSpeak NG; references give an approximate voice match)"
        )
        engine = load_embedded_engine()
    return LoadedModels(engine=engine, codec=codec)
