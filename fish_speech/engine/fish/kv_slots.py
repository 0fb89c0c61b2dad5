"""The KV cache's slots: which sequence holds which, and how many fit in memory.

Slots are kept dense: the running sequences always hold slots 0..n-1, so a batched decode
step reads their caches as one view instead of gathering (copying) them. Freeing a slot in
the middle moves the sequence in the last slot into it, copying only its filled prefix,
once per retirement rather than once per step.
"""

from __future__ import annotations

import logging
import math
import os

import torch

from fish_speech.engine.fish.sequence import Sequence
from fish_speech.models.text2semantic import DualARConfig, DualARTransformer

log = logging.getLogger(__name__)

# Default --max-batch-size caps: beyond these a CPU is compute bound and a GPU step's
# latency grows faster than its throughput.
CPU_MAX_SLOTS = 8
GPU_MAX_SLOTS = 64
# Share of the free memory (after the weights are loaded) the KV pool may take by default.
MEMORY_SHARE = 0.5


class SlotPool:
    def __init__(self, model: DualARTransformer, size: int) -> None:
        if size > model.cache_slots:
            raise ValueError(f"{size} slots, but the model's KV cache holds {model.cache_slots}")
        self.model = model
        self.size = size
        self.holders: list[Sequence] = []  # holders[i] holds slot i

    @property
    def free(self) -> int:
        return self.size - len(self.holders)

    def allocate(self, seq: Sequence) -> None:
        assert self.free > 0, "no free slot"
        seq.slot = len(self.holders)
        self.holders.append(seq)

    def release(self, seq: Sequence) -> None:
        slot = seq.slot
        assert slot is not None and self.holders[slot] is seq
        last = self.holders.pop()
        if last is not seq:
            self.model.copy_slot(len(self.holders), slot, last.filled)
            self.holders[slot] = last
            last.slot = slot
        seq.slot = None

    def clear(self) -> list[Sequence]:
        """Take every slot back at once (no moves); returns the former holders."""
        holders, self.holders = self.holders, []
        for seq in holders:
            seq.slot = None
        return holders


def kv_bytes_per_slot(config: DualARConfig, max_seq_len: int, dtype: torch.dtype) -> int:
    """Bytes one slot's slow KV cache takes: K and V, every layer, every KV head, every
    position (the fast cache, C positions, is negligible)."""
    positions = math.ceil(max_seq_len / 8) * 8
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * config.n_layer * config.n_local_heads * config.head_dim * positions * element


def free_memory(device: torch.device) -> int:
    """Bytes free for the KV pool now: the GPU's free memory, or the host's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def default_slots(per_slot: int, device: torch.device) -> int:
    """With the weights and one slot loaded: that slot plus as many as half the free memory
    holds, capped per device kind."""
    cap = GPU_MAX_SLOTS if device.type == "cuda" else CPU_MAX_SLOTS
    fits = 1 + int(free_memory(device) * MEMORY_SHARE // per_slot)
    slots = min(cap, fits)
    log.info(
        "KV pool: %d slot(s) of %.2f GB (%s; set --max-batch-size to choose)",
        slots,
        per_slot / 1e9,
        "memory bound" if fits < cap else "device cap",
    )
    return slots
