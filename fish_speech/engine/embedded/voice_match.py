"""Approximate voice match with WORLD: move pitch and long-term timbre towards a reference.

This is not cloning. The embedded voices cannot take a speaker embedding, so we take the
two things a vocoder can change after the fact: the pitch (median and spread of F0) and the
long-term average spectral envelope (a broad EQ of the voice's colour). Rhythm, accent and
fine timbre stay those of the built-in voice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyworld
import soxr

_ANALYSIS_RATE = 16000  # references are analysed at 16 kHz: enough for F0 and broad timbre
_MAX_REFERENCE_SECONDS = 15.0  # harvest costs ~0.1 s per second of audio: bound it
_F0_FLOOR = 60.0
_F0_CEIL = 700.0
_FRAME_PERIOD_MS = 5.0
# The EQ curve lives on this grid (Hz); above 8 kHz the reference has no information and
# np.interp holds the last gain.
_ENVELOPE_FREQS = np.linspace(0.0, _ANALYSIS_RATE / 2, 161)
_EQ_SMOOTH_HZ = 600.0  # only broad colour: finer detail would follow the words, not the voice
_EQ_LIMIT_DB = 9.0
_SPREAD_RATIO_RANGE = (0.5, 2.0)
_MIN_VOICED_FRAMES = 10


@dataclass(frozen=True)
class VoiceProfile:
    """Pitch and colour statistics of a voice; what prepare_reference returns."""

    log_f0_median: float | None  # natural log of Hz; None when the audio had no voicing
    log_f0_std: float | None
    envelope_db: np.ndarray | None  # long-term voiced spectral envelope on _ENVELOPE_FREQS
    voiced_frames: int

    @property
    def median_f0(self) -> float | None:
        return None if self.log_f0_median is None else float(np.exp(self.log_f0_median))


_EMPTY = VoiceProfile(None, None, None, 0)


def _long_term_envelope_db(spectrogram: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mean log envelope of WORLD frames, on _ENVELOPE_FREQS, with its overall level removed."""
    db = 10.0 * np.log10(np.maximum(spectrogram, 1e-12)).mean(axis=0)
    freqs = np.linspace(0.0, sample_rate / 2, db.shape[0])
    on_grid = np.interp(_ENVELOPE_FREQS, freqs, db)
    return on_grid - on_grid.mean()


def _statistics(f0: np.ndarray, spectrogram: np.ndarray, sample_rate: int) -> VoiceProfile:
    voiced = f0 > 0
    if voiced.sum() < _MIN_VOICED_FRAMES:
        return _EMPTY
    log_f0 = np.log(f0[voiced])
    return VoiceProfile(
        log_f0_median=float(np.median(log_f0)),
        log_f0_std=float(np.std(log_f0)),
        envelope_db=_long_term_envelope_db(spectrogram[voiced], sample_rate),
        voiced_frames=int(voiced.sum()),
    )


def analyse_reference(audio: np.ndarray, sample_rate: int) -> VoiceProfile:
    """Profile a reference recording (harvest F0: robust on real, noisy speech)."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if sample_rate != _ANALYSIS_RATE:
        x = soxr.resample(x, sample_rate, _ANALYSIS_RATE)
    x = np.ascontiguousarray(x[: int(_MAX_REFERENCE_SECONDS * _ANALYSIS_RATE)])
    if x.size < _ANALYSIS_RATE // 10 or not np.any(np.abs(x) > 1e-4):
        return _EMPTY  # too short or silent: nothing to match
    f0, times = pyworld.harvest(
        x, _ANALYSIS_RATE, f0_floor=_F0_FLOOR, f0_ceil=_F0_CEIL, frame_period=_FRAME_PERIOD_MS
    )
    spectrogram = pyworld.cheaptrick(x, f0, times, _ANALYSIS_RATE)
    return _statistics(f0, spectrogram, _ANALYSIS_RATE)


def combine_profiles(profiles: list[VoiceProfile]) -> VoiceProfile | None:
    """Average several references, weighted by how much voiced speech each holds."""
    usable = [p for p in profiles if p.voiced_frames > 0]
    if not usable:
        return None
    weights = [p.voiced_frames for p in usable]
    return VoiceProfile(
        log_f0_median=float(np.average([p.log_f0_median for p in usable], weights=weights)),
        log_f0_std=float(np.average([p.log_f0_std for p in usable], weights=weights)),
        envelope_db=np.average([p.envelope_db for p in usable], axis=0, weights=weights),
        voiced_frames=sum(weights),
    )


def _smooth(values: np.ndarray, width_hz: float) -> np.ndarray:
    step = _ENVELOPE_FREQS[1] - _ENVELOPE_FREQS[0]
    taps = max(1, int(round(width_hz / step)) | 1)
    padded = np.pad(values, taps // 2, mode="edge")
    return np.convolve(padded, np.ones(taps) / taps, mode="valid")


def apply_profile(audio: np.ndarray, sample_rate: int, target: VoiceProfile) -> np.ndarray:
    """Re-synthesise ``audio`` with F0 mapped to ``target`` and a broad EQ towards its colour.

    ``target`` must be voiced; combine_profiles never returns one that is not.

    The output is analysed with harvest too: dio is several times cheaper but makes octave
    errors on Piper's voice, which resynthesis turns into audible pitch jumps.
    """
    x = np.ascontiguousarray(audio, dtype=np.float64)
    if x.size < sample_rate // 10:
        return audio
    f0, times = pyworld.harvest(
        x, sample_rate, f0_floor=_F0_FLOOR, f0_ceil=_F0_CEIL, frame_period=_FRAME_PERIOD_MS
    )
    spectrogram = pyworld.cheaptrick(x, f0, times, sample_rate)
    source = _statistics(f0, spectrogram, sample_rate)
    if source.voiced_frames == 0:
        return audio  # nothing voiced to move (e.g. a whispered or very short run)
    aperiodicity = pyworld.d4c(x, f0, times, sample_rate)

    # Same shape of intonation, re-centred on the reference's median and scaled to its spread.
    voiced = f0 > 0
    spread = np.clip(target.log_f0_std / max(source.log_f0_std, 1e-3), *_SPREAD_RATIO_RANGE)
    log_f0 = target.log_f0_median + (np.log(f0[voiced]) - source.log_f0_median) * spread
    new_f0 = f0.copy()
    new_f0[voiced] = np.exp(log_f0)

    gain_db = np.clip(
        _smooth(target.envelope_db - source.envelope_db, _EQ_SMOOTH_HZ),
        -_EQ_LIMIT_DB,
        _EQ_LIMIT_DB,
    )
    bin_freqs = np.linspace(0.0, sample_rate / 2, spectrogram.shape[1])
    spectrogram *= 10.0 ** (np.interp(bin_freqs, _ENVELOPE_FREQS, gain_db) / 10.0)

    y = pyworld.synthesize(new_f0, spectrogram, aperiodicity, sample_rate, _FRAME_PERIOD_MS)
    return y[: x.size].astype(np.float32)
