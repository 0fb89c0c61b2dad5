"""What one synthesis did, measured where every caller's audio passes (TTSService).

Each synthesis ends with one structured log line (``synthesis {json}``) and a
:class:`SynthesisReport` handed to listeners (the server's metrics). Long requests also log
their progress every few seconds, so a minute-long request is not silent in the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import asdict, dataclass

from fish_speech.engine.base import AudioSegment, Cancelled

log = logging.getLogger("fish_speech.synthesis")

PROGRESS_LOG_S = 5.0  # a request still running after this long logs its progress this often


@dataclass(frozen=True)
class SynthesisReport:
    id: str
    engine: str
    characters: int
    audio_seconds: float
    # None when no audio came out (failed, cancelled before the first segment, or nothing
    # speakable in the text).
    first_audio_seconds: float | None
    synthesis_seconds: float
    rtf: float | None  # synthesis time / audio time: below 1 is faster than real time
    frames: int  # model frames generated (0 for engines without frames)
    outcome: str  # "ok", "empty", "cancelled" or "error"
    error: str | None = None

    def log_line(self) -> str:
        return "synthesis " + json.dumps(asdict(self), ensure_ascii=False)


Listener = Callable[[SynthesisReport], None]


async def observe(
    segments: AsyncIterator[AudioSegment],
    request_id: str,
    engine: str,
    characters: int,
    listeners: list[Listener],
) -> AsyncIterator[AudioSegment]:
    """Pass ``segments`` through unchanged, measuring them; report once at the end."""
    started = last_log = time.perf_counter()
    first_audio: float | None = None
    samples = frames = 0
    sample_rate = 1
    outcome, error = "ok", None
    try:
        async with aclosing(segments):
            async for segment in segments:
                now = time.perf_counter()
                if first_audio is None:
                    first_audio = now - started
                samples += len(segment.samples)
                sample_rate = segment.sample_rate
                frames += segment.frames
                if segment.progress is not None and now - last_log >= PROGRESS_LOG_S:
                    last_log = now
                    log.info(
                        "synthesis progress %s",
                        json.dumps(
                            {
                                "id": request_id,
                                "progress": round(segment.progress, 3),
                                "audio_seconds": round(samples / sample_rate, 2),
                                "elapsed_seconds": round(now - started, 2),
                            }
                        ),
                    )
                yield segment
        if samples == 0:
            outcome = "empty"
    except (Cancelled, GeneratorExit, asyncio.CancelledError):
        # GeneratorExit or CancelledError: the consumer stopped listening (client gone).
        outcome = "cancelled"
        raise
    except Exception as exc:
        outcome, error = "error", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        elapsed = time.perf_counter() - started
        audio_seconds = samples / sample_rate
        report = SynthesisReport(
            id=request_id,
            engine=engine,
            characters=characters,
            audio_seconds=round(audio_seconds, 3),
            first_audio_seconds=None if first_audio is None else round(first_audio, 4),
            synthesis_seconds=round(elapsed, 4),
            rtf=round(elapsed / audio_seconds, 4) if audio_seconds > 0 else None,
            frames=frames,
            outcome=outcome,
            error=error,
        )
        log.info(report.log_line())
        for listener in listeners:
            try:
                listener(report)
            except Exception:  # a broken listener must not break the audio stream
                log.exception("synthesis listener failed")
