"""Reading a ``.pth`` weights file, shared by the text-model and codec loaders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def read_weights_file(path: Path, error: type[Exception], what: str) -> Any:
    """``torch.load`` memory-mapped and tensors-only; failures raise ``error`` naming the file."""
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise error(f"cannot read {what} {path}: {exc}") from exc
