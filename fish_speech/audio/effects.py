"""Engine-independent post-processing between the engine's segments and the encoder.

Order: loudness normalisation, volume, time stretch, resampling to the output rate, clip.
Every step works segment by segment, so a stream and a whole file get the same samples.
Segments may be short (the Fish engine streams pieces of half a second and up, cut
mid-word), so nothing starts afresh at a join:

- Loudness (``pyloudnorm``, ITU-R BS.1770 with gating) is measured over the segment and up
  to 3 s of audio before it, and the gain moves from the previous segment's over the first
  few milliseconds, so a join never steps. Peaks are held below full scale, not limited.
- Time stretch (``python-stretch``, the MIT Signalsmith Stretch library: pitch-preserving
  phase-vocoder). Its binding stretches one buffer per call, so each segment is stretched
  with 0.2 s of the audio before it, its last 0.1 s is held back until the next segment
  gives it what follows, and the outputs overlap by 10 ms with a crossfade. Cost on one
  core: about 4 ms per second of audio at 2x, 17 ms at 0.5x (bench/audio_output.py).
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
_LOUDNESS_HISTORY_S = 3.0  # audio before a segment that its loudness is measured with


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


class StreamingStretch:
    """:func:`stretch` over a stream of segments, without a fresh start at each join."""

    CONTEXT_S = 0.2  # audio before the new samples, stretched along for a warm start
    LOOKAHEAD_S = 0.1  # the newest samples wait for what follows them
    FADE_S = 0.01  # consecutive outputs overlap this long, crossfaded

    def __init__(self, rate: int, speed: float) -> None:
        self.rate, self.speed = rate, speed
        self._context = int(self.CONTEXT_S * rate)
        self._lookahead = int(self.LOOKAHEAD_S * rate)
        self._fade = int(self.FADE_S * rate / speed)
        self._seen = np.zeros(0, np.float32)  # input already stretched and sent (its end)
        self._pending = np.zeros(0, np.float32)  # input not stretched and sent yet
        self._held = np.zeros(0, np.float32)  # last output, kept back for the crossfade

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        self._pending = np.concatenate([self._pending, samples])
        ready = len(self._pending) if last else len(self._pending) - self._lookahead
        if ready <= 0:
            return np.zeros(0, np.float32)
        out = stretch(np.concatenate([self._seen, self._pending]), self.rate, self.speed)
        begin = round(len(self._seen) / self.speed)
        end = len(out) if last else round((len(self._seen) + ready) / self.speed)
        # The part of ``out`` the held samples were made for, minus the kept-back tail.
        overlap = min(len(self._held), begin)
        fresh = out[begin - overlap : end]
        if overlap:
            weight = np.linspace(0.0, 1.0, overlap, endpoint=False, dtype=np.float32)
            fresh[:overlap] = self._held[-overlap:] * (1 - weight) + fresh[:overlap] * weight
        sent = np.concatenate([self._seen, self._pending[:ready]])
        self._seen = sent[-self._context :]
        self._pending = self._pending[ready:]
        if last:
            self._held = np.zeros(0, np.float32)
            return fresh
        keep = min(self._fade, len(fresh))
        self._held = fresh[len(fresh) - keep :].copy()
        return fresh[: len(fresh) - keep]


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
        self._recent = np.zeros(0, np.float32)  # audio before this segment, for loudness
        self._stretch = StreamingStretch(input_rate, speed) if speed != 1.0 else None
        self._resampler = (
            soxr.ResampleStream(input_rate, output_rate, 1, dtype="float32")
            if input_rate != output_rate
            else None
        )

    def _normalize(self, samples: np.ndarray) -> np.ndarray:
        measured = np.concatenate([self._recent, samples])
        self._recent = measured[-int(_LOUDNESS_HISTORY_S * self.input_rate) :]
        target = _segment_loudness_gain(measured, self.input_rate)
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
        if self._stretch is not None:
            samples = self._stretch.process(samples)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return np.clip(samples, -1.0, 1.0).astype(np.float32)

    def finish(self) -> np.ndarray:
        """What the stretch and the resampler still hold at the end of the reply."""
        tail = np.zeros(0, dtype=np.float32)
        if self._stretch is not None:
            tail = self._stretch.process(tail, last=True)
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(tail, last=True)
        return np.clip(tail, -1.0, 1.0).astype(np.float32)
