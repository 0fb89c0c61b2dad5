"""The CPU malloc settings take effect on glibc and give way to the user's own."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

try:
    ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018 - glibc >= 2.33 reports its heaps
except (OSError, AttributeError):
    pytest.skip("needs glibc's mallinfo2", allow_module_level=True)

# Allocates 64 MB on a fresh thread (like the inference thread) and prints whether
# keep_freed_memory applied and how many more bytes glibc then served from mmap.
_PROBE = """
import ctypes, threading
from fish_speech.engine.cpu_memory import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
libc.mallinfo2.restype = MallInfo2
applied = keep_freed_memory()
seen = {}

def allocate():
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(64 << 20)
    seen["mmapped"] = libc.mallinfo2().hblkhd - before
    libc.free(block)

thread = threading.Thread(target=allocate)
thread.start()
thread.join()
print(applied, seen["mmapped"])
"""


def _probe(**env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env={**clean, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    applied, mmapped = out.stdout.split()
    return applied == "True", int(mmapped)


def test_large_blocks_come_from_the_reused_heap():
    applied, mmapped = _probe()
    assert applied
    assert mmapped == 0


def test_the_users_malloc_settings_stand():
    applied, mmapped = _probe(MALLOC_ARENA_MAX="2")
    assert not applied
    assert mmapped >= 64 << 20  # glibc's default: a block this large is its own mmap
