"""The Fish engine (OpenAudio S1 Dual-AR + codec) with continuous batching.

``engine`` (the Engine boundary), ``sequence`` (one request's state), ``scheduler`` (who
runs), ``model_runner`` (how a batched step runs), ``kv_slots`` (the KV cache's slots),
``output`` (codes to audio) and ``loop`` (the engine thread).
"""

from fish_speech.engine.fish.engine import FishEngine, FishPrompt

__all__ = ["FishEngine", "FishPrompt"]
