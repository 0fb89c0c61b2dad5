"""Readiness, graceful shutdown, and what happens when the engine fails.

Shutdown (SIGTERM or SIGINT, in every worker process of ``--workers N``) is bounded by
``--shutdown-timeout`` T:

1. At once: requests that would start work (any method but GET, HEAD, OPTIONS) get 503
   with ``Retry-After``, ``/v1/ready`` turns 503, and the task runner hands its running
   task back to the queue (it resumes on the next start).
2. Requests already running may finish until T/2. Then their synthesis is cancelled:
   streams end cleanly with the audio made so far, other requests get 503.
3. uvicorn closes the connections and the process exits. At T a watchdog exits anyway
   (status 1), so a stuck engine cannot hold the process; nothing accepted is lost, as
   tasks still marked running are re-queued by the next start.

A second signal skips the wait of step 2; a third is uvicorn's forced exit.

A failed engine (:attr:`TTSService.failure`) is reported by ``/v1/health`` and
``/v1/ready`` and starts the same shutdown, ending with exit status 70, so that a
supervisor (systemd, Docker, or uvicorn's own with ``--workers``) starts a fresh process.
Restarting the engine inside the process is not attempted: a crashed CUDA context cannot
be recovered in-process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from fish_speech.engine.base import CancelToken
from fish_speech.engine.service import TTSService

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5  # a restarted server (or another instance behind the balancer) soon answers
ENGINE_FAILED_EXIT = 70  # EX_SOFTWARE; not 3, which uvicorn's supervisor reads as "cannot start"
FORCED_EXIT = 1
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_POLL_S = 0.05


def exit_now(code: int) -> None:
    """Leave at once (after flushing the logs): the way out when shutdown cannot finish."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def retry_later(detail: str) -> JSONResponse:
    return JSONResponse(
        {"detail": detail}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
    )


class Lifecycle:
    def __init__(self, shutdown_timeout: float) -> None:
        self.shutdown_timeout = shutdown_timeout
        self.warmed_up = False
        self.draining = False
        self.reason = ""
        self.exit_code: int | None = None  # set when the process must end with this status
        self.in_flight = 0  # HTTP requests being answered (counted by DrainGate)
        self._cancelling = False
        self._tokens: weakref.WeakSet[CancelToken] = weakref.WeakSet()
        self._on_drain: list[Callable[[], Awaitable[None]]] = []
        self._uvicorn_exit: Any = None
        self._signals = 0
        self._signal = signal.SIGTERM  # passed on to uvicorn, which re-raises it at the end
        self._hurry = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task | None = None  # held: the loop keeps only weak refs

    def not_ready(self, service: TTSService) -> str | None:
        """Why a load balancer should send no traffic here now; None when ready."""
        if (failure := service.failure) is not None:
            return f"The engine failed: {failure}"
        if self.draining:
            return self.reason
        if not self.warmed_up:
            return "The engine is warming up"
        return None

    def token(self) -> CancelToken:
        """A cancel token for one HTTP synthesis; shutdown cancels it at T/2."""
        token = CancelToken()
        if self._cancelling:
            token.cancel()
        self._tokens.add(token)
        return token

    def on_drain(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` when shutdown starts (e.g. the task runner's stop)."""
        self._on_drain.append(callback)

    def install_signal_handlers(self) -> None:
        """Put our handling in front of uvicorn's (call from the lifespan, on the main thread).

        uvicorn restores its predecessors' handlers when it exits, so nothing is left behind.
        """
        self._loop = asyncio.get_running_loop()
        if threading.current_thread() is not threading.main_thread():
            return
        self._uvicorn_exit = signal.getsignal(signal.SIGTERM)
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            signal.signal(sig, lambda s, f, previous=previous: self._on_signal(previous, s, f))

    def _on_signal(self, previous: Any, sig: int, frame: FrameType | None) -> None:
        # Runs on the main thread between two bytecodes of the event loop: only schedule.
        self._signals += 1
        assert self._loop is not None
        if self._signals == 1:
            self._signal = sig
            name = signal.Signals(sig).name
            self._loop.call_soon_threadsafe(
                self.begin_shutdown, f"The server is shutting down ({name})"
            )
        elif self._signals == 2:
            log.warning("Second signal: cancelling running requests now")
            self._loop.call_soon_threadsafe(self._hurry.set)
        elif callable(previous):
            previous(sig, frame)

    def begin_shutdown(self, reason: str, exit_code: int | None = None) -> None:
        """Start draining (idempotent); must be called on the event loop."""
        if self.draining:
            return
        self.draining, self.reason, self.exit_code = True, reason, exit_code
        log.warning("%s: draining, exit within %g s", reason, self.shutdown_timeout)
        watchdog = threading.Timer(self.shutdown_timeout, self._force_exit)
        watchdog.daemon = True
        watchdog.start()
        self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        stopping = [asyncio.ensure_future(callback()) for callback in self._on_drain]
        await self._until_idle(started + self.shutdown_timeout / 2, stop_early=self._hurry)
        self._cancelling = True
        for token in list(self._tokens):
            token.cancel()
        finish_by = started + self.shutdown_timeout * 0.8
        await self._until_idle(finish_by)
        if stopping:
            await asyncio.wait(stopping, timeout=max(0.0, finish_by - loop.time()))
        log.info("Drained: closing connections")
        if callable(self._uvicorn_exit):
            self._uvicorn_exit(self._signal, None)
        else:  # not run by uvicorn on the main thread: nobody else will stop us
            self._force_exit()

    async def _until_idle(self, deadline: float, stop_early: asyncio.Event | None = None) -> None:
        loop = asyncio.get_running_loop()
        while self.in_flight and loop.time() < deadline:
            if stop_early is not None and stop_early.is_set():
                return
            await asyncio.sleep(_POLL_S)

    def _force_exit(self) -> None:
        log.error(
            "Shutdown did not finish within --shutdown-timeout (%g s): exiting now",
            self.shutdown_timeout,
        )
        exit_now(self.exit_code if self.exit_code is not None else FORCED_EXIT)

    async def watch_engine(self, service: TTSService, interval: float = 0.2) -> None:
        """Exit (status 70, after draining) once the engine reports a failure."""
        while service.failure is None:
            await asyncio.sleep(interval)
        log.critical(
            "Engine failure (%s): exiting with status %d so that a supervisor restarts the server",
            service.failure,
            ENGINE_FAILED_EXIT,
        )
        self.begin_shutdown(f"The engine failed: {service.failure}", ENGINE_FAILED_EXIT)

    async def warm_up(self, service: TTSService) -> None:
        try:
            await service.warm_up()
        except Exception as exc:  # an engine that cannot warm up cannot serve either
            log.critical("Engine warm-up failed: %s", exc)
            self.begin_shutdown(f"The engine failed to warm up: {exc}", ENGINE_FAILED_EXIT)
            return
        self.warmed_up = True
        log.info("Engine warmed up: ready")


class DrainGate:
    """ASGI middleware: counts requests in flight; while shutting down, refuses new work."""

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lifecycle = self.lifecycle
        if lifecycle.draining and scope["method"] not in READ_ONLY_METHODS:
            await retry_later(f"{lifecycle.reason}: retry in a moment")(scope, receive, send)
            return
        lifecycle.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            lifecycle.in_flight -= 1
