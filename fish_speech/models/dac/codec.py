"""NumPy-facing codec API: preprocessing, validation, batching and long inputs."""

from __future__ import annotations

import functools
import hashlib
import math
import threading
from collections.abc import Sequence

import numpy as np
import soxr
import torch

from .model import CodecModel
from .streaming import DecodeStream, StreamingDecoder


class Codec:
    """Encode audio to code grids and decode grids to audio with a loaded CodecModel.

    Calls keep no state between them and change no global torch settings, so one instance can
    serve a worker thread. Use `load_codec` to build one from a checkpoint.

    Decoding may run in a lower precision than the loaded model (``decode(codes, dtype)``):
    a copy of the decode path in that dtype is made once and kept. On CPUs with native bf16
    (AMX) a bf16 decode is several times faster; its audio differs from float32 by about 2 %
    of full scale (see README). Encoding always uses the loaded model, as codes flip at VQ
    near-ties.
    """

    def __init__(self, model: CodecModel, max_frames: int | None = None) -> None:
        self.model = model
        reference = next(model.parameters())
        self.device = reference.device
        self.dtype = reference.dtype
        self.sample_rate: int = model.cfg.sample_rate
        self.hop_length: int = model.hop_length  # audio samples per code frame
        self.codebook_sizes: list[int] = model.cfg.codebook_sizes
        self.num_codebooks: int = len(self.codebook_sizes)
        # Longest grid one pass handles: the model's RoPE tables bound it, and callers may
        # lower it to bound memory. Longer inputs are processed in overlapping chunks.
        limits = [n for n in (model.max_frames, max_frames) if n is not None]
        self.max_frames: int | None = min(limits) if limits else None
        if self.max_frames is not None and self.max_frames < 2:
            raise ValueError("max_frames must be at least 2")
        self._decode_models: dict[torch.dtype, CodecModel] = {self.dtype: model}
        self._streaming: dict[torch.dtype, StreamingDecoder] = {}
        self._decode_models_lock = threading.Lock()

    @functools.cached_property
    def fingerprint(self) -> str:
        """A short digest of the weights and config, so codes stored with one codec are
        never read back for another: every tensor's name, shape and first values."""
        digest = hashlib.sha256(repr(self.model.cfg).encode())
        for name, tensor in sorted(self.model.state_dict().items()):
            head = tensor.detach().flatten()[:256].float().cpu().numpy()
            digest.update(f"{name}{tuple(tensor.shape)}".encode() + head.tobytes())
        return digest.hexdigest()[:16]

    # -- encode ---------------------------------------------------------------------------

    def encode(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Codes, int64 (num_codebooks, ceil(L / hop_length)), for mono or (channels, L) audio.

        Audio is float in [-1, 1]; channels are averaged and the result resampled to
        `sample_rate` with soxr (HQ) when needed, then right-padded with zeros to whole frames.
        """
        return self.encode_batch([(audio, sample_rate)])[0]

    def encode_batch(self, items: Sequence[tuple[np.ndarray, int]]) -> list[np.ndarray]:
        """Encode several clips in one pass, giving the codes one-at-a-time calls give.

        (Batched and single passes can differ in float rounding; only a VQ near-tie could flip.)
        """
        waves = [self._prepare_audio(audio, rate) for audio, rate in items]
        frames = [math.ceil(len(w) / self.hop_length) for w in waves]
        results: list[np.ndarray | None] = [None] * len(waves)
        batch = [i for i, n in enumerate(frames) if self._fits(n)]
        with torch.inference_mode():
            if batch:
                # Zero padding at the end cannot reach earlier frames: every layer is causal.
                padded = np.zeros(
                    (len(batch), max(frames[i] for i in batch) * self.hop_length), np.float32
                )
                for row, i in enumerate(batch):
                    padded[row, : len(waves[i])] = waves[i]
                codes = self._encode_padded(padded)
                for row, i in enumerate(batch):
                    results[i] = codes[row, :, : frames[i]]
            for i, n in enumerate(frames):
                if results[i] is None:
                    results[i] = self._encode_long(waves[i], n)
        return results

    def _prepare_audio(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        wave = np.asarray(audio)
        if not np.issubdtype(wave.dtype, np.floating):
            raise ValueError(f"audio must be floating point in [-1, 1], got dtype {wave.dtype}")
        if wave.ndim == 2:
            if wave.shape[0] == 0:
                raise ValueError("audio has no channels")
            wave = wave.astype(np.float32, copy=False).mean(axis=0)
        elif wave.ndim != 1:
            raise ValueError(f"audio must be 1-D or (channels, samples), got shape {wave.shape}")
        if wave.size == 0:
            raise ValueError("audio is empty")
        if not np.isfinite(wave).all():
            raise ValueError("audio contains NaN or infinite samples")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
            raise ValueError(f"sample_rate must be an integer, got {sample_rate!r}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        wave = wave.astype(np.float32, copy=False)
        if sample_rate != self.sample_rate:
            wave = soxr.resample(wave, int(sample_rate), self.sample_rate, quality="HQ")
            if wave.size == 0:
                raise ValueError("audio is too short to resample")
        return wave

    def _encode_padded(self, padded: np.ndarray) -> np.ndarray:
        audio = torch.from_numpy(padded).to(device=self.device, dtype=self.dtype)
        return self.model.encode(audio[:, None]).cpu().numpy()

    def _encode_long(self, wave: np.ndarray, n_frames: int) -> np.ndarray:
        padded = np.zeros(n_frames * self.hop_length, dtype=np.float32)
        padded[: len(wave)] = wave
        hop = self.hop_length
        parts = [
            self._encode_padded(padded[None, first * hop : end * hop])[0, :, start - first :]
            for first, start, end in _chunk_plan(n_frames, self.max_frames)
        ]
        return np.concatenate(parts, axis=1)

    # -- decode ---------------------------------------------------------------------------

    def decode(self, codes: np.ndarray, dtype: torch.dtype | None = None) -> np.ndarray:
        """Float32 audio of frames * hop_length samples for an int grid (num_codebooks, frames).

        Negative values, a wrong row count or an empty grid raise ValueError. Values above a
        row's codebook size are clamped to its last entry, as the original decoder does
        (spec 6.2); the language model can emit residual codes beyond the codec's range.
        ``dtype`` (default: the loaded model's) is the precision the decoder computes in.
        """
        return self.decode_batch([codes], dtype)[0]

    def decode_model(self, dtype: torch.dtype | None = None) -> CodecModel:
        """The model that decodes in ``dtype``: the loaded one, or its cast decode path (made
        on first use; call this ahead to pay that cost at start-up)."""
        dtype = dtype or self.dtype
        with self._decode_models_lock:
            if dtype not in self._decode_models:
                self._decode_models[dtype] = self.model.decode_copy(dtype)
            return self._decode_models[dtype]

    def decode_batch(
        self, grids: Sequence[np.ndarray], dtype: torch.dtype | None = None
    ) -> list[np.ndarray]:
        """Decode several grids in one pass; each matches its single decode to float rounding."""
        checked = [self._check_codes(grid) for grid in grids]
        frames = [grid.shape[1] for grid in checked]
        hop = self.model.decode_hop_length
        results: list[np.ndarray | None] = [None] * len(checked)
        batch = [i for i, n in enumerate(frames) if self._fits(n)]
        model = self.decode_model(dtype)
        with torch.inference_mode():
            if batch:
                # Code 0 as right padding; causality keeps it out of the valid samples.
                longest = max(frames[i] for i in batch)
                padded = np.zeros((len(batch), self.num_codebooks, longest), np.int64)
                for row, i in enumerate(batch):
                    padded[row, :, : frames[i]] = checked[i]
                audio = self._decode_padded(model, padded)
                for row, i in enumerate(batch):
                    results[i] = audio[row, : frames[i] * hop]
            for i, grid in enumerate(checked):
                if results[i] is None:
                    results[i] = self._decode_long(model, grid)
        return results

    def _check_codes(self, codes: np.ndarray) -> np.ndarray:
        grid = np.asarray(codes)
        if grid.dtype.kind not in "iu":
            raise ValueError(f"codes must be integers, got dtype {grid.dtype}")
        if grid.ndim != 2 or grid.shape[0] != self.num_codebooks:
            raise ValueError(
                f"codes must have shape ({self.num_codebooks}, frames), got {grid.shape}"
            )
        if grid.shape[1] == 0:
            raise ValueError("codes have no frames")
        if grid.dtype.kind == "i" and (grid < 0).any():
            row, col = np.argwhere(grid < 0)[0]
            raise ValueError(
                f"codes must be non-negative; row {row}, frame {col} is {grid[row, col]}"
            )
        if grid.dtype == np.uint64:  # keep the cast to int64 below from wrapping around
            grid = np.minimum(grid, np.uint64(np.iinfo(np.int64).max))
        limits = np.asarray(self.codebook_sizes, dtype=np.int64)[:, None] - 1
        return np.minimum(grid.astype(np.int64), limits)

    # -- streams --------------------------------------------------------------------------

    @staticmethod
    def new_stream() -> DecodeStream:
        """State for decoding one code stream piece by piece (see decode_pieces)."""
        return DecodeStream()

    def decode_pieces(
        self,
        streams: Sequence[DecodeStream],
        pieces: Sequence[np.ndarray],
        dtype: torch.dtype | None = None,
    ) -> list[np.ndarray]:
        """Float32 audio of each stream's next piece of codes (num_codebooks, frames), in one
        batched pass, computed in ``dtype`` (a stream keeps one). The pieces of a stream join
        to what decode() gives for all its codes (within float rounding); streams have no
        length limit. Codes are checked and clamped as in decode()."""
        dtype = dtype or self.dtype
        model = self.decode_model(dtype)
        with self._decode_models_lock:
            if dtype not in self._streaming:
                self._streaming[dtype] = StreamingDecoder(model)
            decoder = self._streaming[dtype]
        grids = [torch.from_numpy(self._check_codes(piece)) for piece in pieces]
        audio = decoder.decode(list(streams), grids)
        return [samples.float().cpu().numpy() for samples in audio]

    def _decode_long(self, model: CodecModel, grid: np.ndarray) -> np.ndarray:
        hop = self.model.decode_hop_length
        parts = [
            self._decode_padded(model, grid[None, :, first:end])[0, (start - first) * hop :]
            for first, start, end in _chunk_plan(grid.shape[1], self.max_frames)
        ]
        return np.concatenate(parts)

    def _decode_padded(self, model: CodecModel, codes: np.ndarray) -> np.ndarray:
        grid = torch.from_numpy(np.ascontiguousarray(codes)).to(self.device)
        return model.decode(grid)[:, 0].float().cpu().numpy()

    def _fits(self, n_frames: int) -> bool:
        return self.max_frames is None or n_frames <= self.max_frames


def _chunk_plan(n_frames: int, max_frames: int) -> list[tuple[int, int, int]]:
    """Windows (first, start, end) of at most max_frames frames that cover 0 .. n_frames.

    Frames first .. start-1 are left context whose outputs are dropped; they give every kept
    frame a long causal history, so results beyond the one-pass limit stay close to what an
    unlimited model would produce (one pass cannot be run there, so exact parity is moot).
    """
    context = max_frames // 2
    plan = [(0, 0, min(n_frames, max_frames))]
    while plan[-1][2] < n_frames:
        start = plan[-1][2]
        first = start - context
        plan.append((first, start, min(n_frames, first + max_frames)))
    return plan
