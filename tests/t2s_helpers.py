"""Shared paths and loaders for the text2semantic tests (repo copy of the vectors only)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch

from fish_speech.models.text2semantic import Text2Semantic, load_text2semantic

VECTORS = Path(__file__).parent / "data" / "testvectors"
TINY = VECTORS / "tiny-s1"
S1 = VECTORS / "s1"

TEXT = "Hello world, this is a tiny test. 你好，世界！"
REF_TEXT = "The weather is nice today."
LOGIT_TOL = 1e-4


@functools.cache
def tiny() -> Text2Semantic:
    """The tiny checkpoint in float32 on CPU, loaded once per test session."""
    return load_text2semantic(TINY, device="cpu", dtype=torch.float32)


def reference_codes() -> np.ndarray:
    return np.load(S1 / "reference_codes.npy")


def run_json(name: str) -> dict:
    return json.loads((S1 / f"generate_{name}.json").read_text())


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())
