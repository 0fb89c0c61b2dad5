"""glibc malloc settings for running the models on the CPU.

The codec's activations are tens of MB each. By default glibc serves blocks that large
with fresh ``mmap`` pages and unmaps them on free, so every layer of every decode pays the
page faults of zeroing new memory again, and a non-main thread (the inference thread) gets
its own arena whose heaps cannot hold such blocks at all. Serving every thread from the
main heap and keeping freed memory for reuse made a float32 codec decode on the inference
thread 10-20% faster on a 2-core AVX2 EPYC (bench/codec.py against --malloc default), at
the price of a higher resident size: memory freed after a peak stays in the process
(about +400 MB after a 5 s decode).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_SETTINGS = (
    (_M_MMAP_MAX, 0),  # large blocks from the heap, which is reused, not from fresh mmaps
    (_M_TRIM_THRESHOLD, 1 << 30),  # hand back free heap top only past 1 GiB
    (_M_ARENA_MAX, 1),  # every thread in the main heap, which can grow past 64 MB blocks
)

# Set by a user who tunes malloc themselves: then their settings stand.
_USER_SETTINGS = (
    "GLIBC_TUNABLES",
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_MAX_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
)


def keep_freed_memory() -> bool:
    """Apply the settings above if this process runs on glibc and the user set none of
    their own; True when applied. Call before the inference thread starts (a thread keeps
    the arena it first allocated from)."""
    if not sys.platform.startswith("linux"):
        return False
    chosen = [name for name in _USER_SETTINGS if name in os.environ]
    if chosen:
        log.info("Keeping the malloc settings from %s", ", ".join(chosen))
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied = all(mallopt(param, value) == 1 for param, value in _SETTINGS)
    if applied:
        log.info("CPU memory: freed model buffers are kept for reuse (glibc malloc)")
    return applied
