"""The default precision follows the device and the CPU features detected at run time."""

from __future__ import annotations

import pytest
import torch

from fish_speech.engine.fish.engine import model_dtype
from fish_speech.models import precision


@pytest.fixture
def flags(monkeypatch):
    """Pretend the CPU reports the given feature flags."""

    def set_flags(*names: str) -> None:
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(names))

    return set_flags


def test_auto_is_bf16_only_on_cpus_with_native_bf16(flags):
    flags("avx2", "avx512_f", "amx_bf16")
    assert precision.resolve_dtype("cpu") == torch.bfloat16
    flags("avx2", "avx512_bf16")
    assert precision.resolve_dtype("cpu") == torch.bfloat16
    flags("avx2", "fma3")  # an AVX2-only EPYC: bf16 would be emulated
    assert precision.resolve_dtype("cpu") == torch.float32
    assert precision.resolve_dtype("cuda") == torch.bfloat16


def test_named_precision_wins_and_unknown_is_refused(flags):
    flags("amx_bf16")
    assert precision.resolve_dtype("cpu", "float32") == torch.float32
    assert precision.resolve_dtype("cuda", "float16") == torch.float16
    with pytest.raises(ValueError, match="bfloat16"):
        precision.resolve_dtype("cpu", "int8")


def test_half_means_float16_on_gpu_only(flags):
    flags("avx2")
    assert model_dtype("cuda", "auto", half=True) == torch.float16
    assert model_dtype("cuda:1", "bfloat16", half=True) == torch.bfloat16
    assert model_dtype("cpu", "auto", half=True) == torch.float32


def test_this_cpu_is_described():
    described = precision.cpu_description()
    assert described["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(described["cpu_flags"]) <= precision.cpu_flags()
