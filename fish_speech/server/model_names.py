"""Model names clients send, and which of them this server answers to.

A server runs one engine. The hosted Fish API's SDKs always name a model (the ``model``
header: ``s1``, ``s2-pro``, ``speech-1.5``...) and OpenAI clients do too (``tts-1``...), so
those names are accepted as aliases of the one loaded engine, next to the engine's own
name; any other name is a 400 listing these, never silently served.
"""

from __future__ import annotations

from fastapi import HTTPException

FISH_HOSTED_MODELS = ("s1", "s1-mini", "s2-pro", "speech-1.5", "speech-1.6", "agent-x0")
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")


def served_models(engine_name: str) -> list[str]:
    return [engine_name, "fish-speech", *FISH_HOSTED_MODELS, *OPENAI_MODELS]


def check_model(name: str | None, engine_name: str, where: str) -> None:
    """``name`` (None: not given) must be one this server answers to."""
    if name is None:
        return
    served = served_models(engine_name)
    if name.strip() not in served:
        raise HTTPException(
            400,
            f"{where}: unknown model {name!r}. This server runs one engine ({engine_name}) "
            f"and answers to: {', '.join(served)} (GET /v1/models)",
        )
