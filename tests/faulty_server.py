"""Test-only entry point: the real server, with faults the tests switch on from outside.

Run as ``python tests/faulty_server.py <server flags>``. Faults, by marker files in the
server's working directory (so a test can trigger them mid-run):

- ``CRASH``: the embedded engine's next segment raises torch's AcceleratorError, the error
  a faulted CUDA kernel leaves behind (every later CUDA call fails the same way).
- ``STUCK``: the engine's next segment never comes and it stops looking at cancellation,
  like a hung GPU kernel.
- ``SLOW``: each segment takes the seconds the file holds longer (cancellation is still
  honoured), like a large model on a small machine, so tasks are seen running.

and by environment: ``FAULTY_WARM_UP_S`` makes the engine's warm-up take that long (like
``--compile``), so readiness can be observed while it runs.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from fish_speech.engine.embedded.engine import EmbeddedEngine


def _synthesize_until_crash(original):
    def synthesize(self, request, cancel):
        for segment in original(self, request, cancel):
            if Path("CRASH").exists():
                import torch  # only now: the embedded engine runs without torch loaded

                raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
            while Path("STUCK").exists():
                time.sleep(0.1)
            if Path("SLOW").exists():
                deadline = time.monotonic() + float(Path("SLOW").read_text())
                while time.monotonic() < deadline:
                    cancel.raise_if_cancelled()
                    time.sleep(0.05)
            yield segment

    return synthesize


def _slow_warm_up(seconds: float):
    def warm_up(self) -> None:
        time.sleep(seconds)

    return warm_up


EmbeddedEngine.synthesize = _synthesize_until_crash(EmbeddedEngine.synthesize)
if warm_up_s := float(os.environ.get("FAULTY_WARM_UP_S", "0")):
    EmbeddedEngine.warm_up = _slow_warm_up(warm_up_s)

if __name__ == "__main__":
    from tools.api_server import main

    sys.exit(main())
