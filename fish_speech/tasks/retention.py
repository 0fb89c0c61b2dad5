"""Finished async tasks and their result files expire after ``--task-retention-hours``.

Swept once at start-up and then periodically by every server process (a sweep is atomic
in the store, so processes sharing it do not get in each other's way).
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.concurrency import run_in_threadpool

from fish_speech.tasks.base import TaskStore

log = logging.getLogger(__name__)

MAX_SWEEP_INTERVAL_S = 600.0
STRAY_FILE_AGE_S = 3600.0  # a file no task owns is only removed once surely not being written


def sweep(store: TaskStore, max_age_s: float) -> int:
    """Remove tasks finished more than ``max_age_s`` ago; returns how many."""
    now = time.time()
    removed = store.sweep(now - max_age_s, now - min(max_age_s, STRAY_FILE_AGE_S))
    if removed:
        log.info("Removed %d finished task(s) older than %g h", removed, max_age_s / 3600)
    return removed


def sweep_interval(max_age_s: float) -> float:
    # A quarter of the retention keeps results at most 25 % past their time, and short
    # retentions (tests, small disks) are honoured without a busy loop.
    return min(MAX_SWEEP_INTERVAL_S, max(1.0, max_age_s / 4))


async def sweep_forever(store: TaskStore, max_age_s: float) -> None:
    while True:
        await asyncio.sleep(sweep_interval(max_age_s))
        try:
            await run_in_threadpool(sweep, store, max_age_s)
        except Exception as exc:  # a full or broken disk must not stop the server
            log.error("Could not remove expired tasks: %s", exc)
