"""Which float dtype a model runs in, decided from the device and, on CPU, from the
instruction set detected at run time (never assumed: the same wheel runs on AMX Xeons and on
AVX2-only machines).

torch is imported inside the functions so the server can parse its options without it.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
# Weight formats fish_speech.models.quantize can apply after loading.
QUANTIZATIONS = ("int8",)
# Either one gives the CPU bf16 dot products in hardware (oneDNN and PyTorch's kernels use
# them); without them bf16 is emulated by float32 arithmetic plus conversions, which is slower.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """Instruction-set features of this CPU: PyTorch's own cpuinfo report where the installed
    version has one, else the ``flags`` line of /proc/cpuinfo (Linux), else nothing."""
    import torch

    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        return frozenset(name for name, value in capabilities().items() if value is True)
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_name() -> str:
    """The CPU's model name, to print beside every figure measured on it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_has_native_bf16() -> bool:
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def cpu_description() -> dict[str, object]:
    """The features that decide the CPU defaults, for health reports and benchmark JSON."""
    import torch

    flags = cpu_flags()
    shown = ("avx2", "avx512_f", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": sorted(flag for flag in shown if flag in flags),
    }


def resolve_dtype(device: str | torch.device, precision: str = "auto") -> torch.dtype:
    """The dtype for ``precision`` on ``device``. ``auto``: bfloat16 on CUDA (the original's
    precision); on CPU bfloat16 where the CPU has native bf16 (measured faster there for
    S1-mini, see README), else float32."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return getattr(torch, precision)
    if torch.device(device).type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return torch.bfloat16
