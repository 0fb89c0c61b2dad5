"""In-process eSpeak NG 1.52 via ctypes, using the library and data shipped by espeakng-loader.

The system eSpeak (Debian ships 1.51) reads Mandarin badly, so we never fall back to it.
The C library keeps global state (one current voice, one callback, one output buffer), so
every call goes through one process-wide lock and the library is initialised only once.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

# espeak_AUDIO_OUTPUT: synchronous retrieval, samples arrive through the synth callback.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
# espeak_Initialize options: never call exit() on a fatal data error.
_INITIALIZE_DONT_EXIT = 0x8000
# espeak_Synth flags: UTF-8 text, and add the usual pause at the end of the text.
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_POS_CHARACTER = 1

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakError(RuntimeError):
    """The packaged eSpeak NG library could not be loaded or refused a request."""


class EspeakSynth:
    """Thread-safe, process-wide wrapper around libespeak-ng in synchronous mode."""

    _instance: EspeakSynth | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader

        self._lock = threading.Lock()
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        data_path = espeakng_loader.get_data_path().encode()
        rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed for data at {data_path!r}")
        self.sample_rate: int = rate
        self._chunks: list[np.ndarray] = []
        # Keep the ctypes callback alive for the life of the process: the C side holds it.
        self._callback = _SynthCallback(self._collect)
        self._lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    @classmethod
    def shared(cls) -> EspeakSynth:
        """The one instance per process (eSpeak cannot be initialised twice safely)."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = EspeakSynth()
            return cls._instance

    def _collect(self, wav: ctypes.POINTER(ctypes.c_short), count: int, _events: int) -> int:
        if wav and count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0  # 0 = keep synthesising

    def synthesize(self, text: str, voice: str) -> np.ndarray:
        """Speak ``text`` with the eSpeak voice ``voice``; float32 mono at ``sample_rate``."""
        data = text.encode("utf-8") + b"\0"
        with self._lock:
            if voice != self._voice:
                if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise EspeakError(f"unknown eSpeak voice {voice!r}")
                self._voice = voice
            self._chunks = []
            err = self._lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
            )
            chunks, self._chunks = self._chunks, []
        if err != 0:
            raise EspeakError(f"espeak_Synth failed with code {err}")
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32) / 32768.0
