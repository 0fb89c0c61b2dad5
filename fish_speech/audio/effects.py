"""Engine-independent post-processing between the engine's segments and the encoder.

Order: loudness normalisation, volume, time stretch, resampling to the output rate, clip.
Every step works segment by segment, so a stream and a whole file get the same samples:

- Loudness (``pyloudnorm``, ITU-R BS.1770 with gating) is measured per segment, and the
  gain moves from the previous segment's over the first few milliseconds, so a join never
  steps. Peaks are held below full scale rather than limited.
- Time stretch (``python-stretch``, the MIT Signalsmith Stretch library: pitch-preserving
  phase-vocoder) runs on each segment on its own. Segments are sentences or text chunks,
  and speech pauses there (the embedded engine always ends a segment in silence), so a
  join is where a fresh start costs least. Cost on one core: about 4 ms per second of audio
  at 2x, 17 ms at 0.5x (bench/audio_output.py).
- Resampling (``soxr``) is one stream for the whole reply, continuous across joins.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyloudnorm
import soxr
from python_stretch import Signalsmith

LOUDNESS_TARGET_LUFS = -20.0  # about the level of the embedded engine's voices
_PEAK_LIMIT = 0.97
_GAIN_RAMP_S = 0.01
_LOUDNESS_BLOCK_S = 0.4  # BS.1770's gating block; shorter segments use their own length


def _segment_loudness_gain(samples: np.ndarray, rate: int) -> float | None:
    """Linear gain that brings the segment to the target, or None if it is silent."""
    block = min(_LOUDNESS_BLOCK_S, len(samples) / rate)
    if block <= 0:
        return None
    with warnings.catch_warnings():  # pyloudnorm warns about clipping it will not cause
        warnings.simplefilter("ignore")
        loudness = pyloudnorm.Meter(rate, block_size=block).integrated_loudness(
            samples.astype(np.float64)
        )
    if not np.isfinite(loudness):
        return None
    gain = 10 ** ((LOUDNESS_TARGET_LUFS - loudness) / 20)
    peak = float(np.max(np.abs(samples), initial=0.0))
    return min(gain, _PEAK_LIMIT / peak) if peak > 0 else gain


def stretch(samples: np.ndarray, rate: int, speed: float) -> np.ndarray:
    """``samples`` played ``speed`` times faster at the same pitch."""
    stretcher = Signalsmith.Stretch()
    stretcher.preset(1, rate)
    stretcher.timeFactor = speed
    return stretcher.process(np.ascontiguousarray(samples, dtype=np.float32)[None, :])[0]


class AudioPipeline:
    """Float32 segments at ``input_rate`` in, processed samples at ``output_rate`` out."""

    def __init__(
        self,
        input_rate: int,
        output_rate: int,
        speed: float = 1.0,
        volume_db: float = 0.0,
        normalize_loudness: bool = False,
    ) -> None:
        self.input_rate = input_rate
        self.output_rate = output_rate
        self.speed = speed
        self.volume = 10 ** (volume_db / 20)
        self.normalize_loudness = normalize_loudness
        self._gain = 1.0  # the loudness gain where the previous segment ended
        self._resampler = (
            soxr.ResampleStream(input_rate, output_rate, 1, dtype="float32")
            if input_rate != output_rate
            else None
        )

    def _normalize(self, samples: np.ndarray) -> np.ndarray:
        target = _segment_loudness_gain(samples, self.input_rate)
        if target is None:
            target = self._gain
        ramp = min(len(samples), int(_GAIN_RAMP_S * self.input_rate))
        gains = np.full(len(samples), target, dtype=np.float32)
        gains[:ramp] = np.linspace(self._gain, target, ramp, endpoint=False)
        self._gain = target
        return samples * gains

    def process(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32)
        if samples.size == 0:
            return samples
        if self.normalize_loudness:
            samples = self._normalize(samples)
        if self.volume != 1.0:
            samples = samples * np.float32(self.volume)
        if self.speed != 1.0:
            samples = stretch(samples, self.input_rate, self.speed)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return np.clip(samples, -1.0, 1.0).astype(np.float32)

    def finish(self) -> np.ndarray:
        """What the resampler still holds (its filter delay) at the end of the reply."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        return np.clip(tail, -1.0, 1.0).astype(np.float32)
