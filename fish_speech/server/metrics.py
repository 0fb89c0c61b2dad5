"""Prometheus metrics at ``GET /metrics`` (text exposition format, via prometheus-client).

Every server process keeps its own registry (no multiprocess mode): with ``--workers N`` a
scrape is answered by whichever process takes the connection, so run one worker per
scrape target when the numbers must add up. ``fish_speech_tasks`` counts the shared task
store (the same in every process and instance: the queue length to autoscale on); the
other figures are this process's own (its queue, its batch, the tasks it runs).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fish_speech.engine.report import SynthesisReport
from fish_speech.engine.service import TTSService
from fish_speech.storage import StorageUnavailable
from fish_speech.tasks.base import TaskStore
from fish_speech.tasks.runner import TaskRunner

log = logging.getLogger(__name__)
UNMATCHED = "(unmatched)"  # one label for every unknown path, so scanners add no series

# Seconds: from 5 ms (embedded engine, CJK) to minutes (long Fish requests on a CPU).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_RTF_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 4, 8, 16)
_FPS_BUCKETS = (1, 2, 5, 10, 21.5, 50, 100, 200, 500, 1000)  # 21.5 frames = 1 s of audio


class _LiveValues(Collector):
    """Values read when scraped: the inference queue, the reference cache, task states."""

    def __init__(self, service: TTSService, tasks: TaskStore, runner: TaskRunner) -> None:
        self.service = service
        self.tasks = tasks
        self.runner = runner

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "fish_speech_queue_depth",
            "Requests accepted and waiting for a place in the engine",
            value=self.service.queue_depth,
        )
        yield GaugeMetricFamily(
            "fish_speech_running_batch",
            "Requests the engine is computing now (its current batch size)",
            value=self.service.running_batch,
        )
        yield CounterMetricFamily(
            "fish_speech_reference_cache_hits",
            "Reference voices served from the memory cache (use_memory_cache on)",
            value=self.service.cache_hits,
        )
        yield CounterMetricFamily(
            "fish_speech_reference_cache_misses",
            "Reference voices prepared because the memory cache did not hold them",
            value=self.service.cache_misses,
        )
        yield GaugeMetricFamily(
            "fish_speech_tasks_running_here",
            "Async tasks this process is running now",
            value=self.runner.running,
        )
        finished = CounterMetricFamily(
            "fish_speech_tasks_finished_here",
            "Async tasks this process ran to an end, by outcome (superseded: cancelled or "
            "taken over by another instance while its result was being stored)",
            labels=["outcome"],
        )
        for outcome in ("completed", "failed", "cancelled", "superseded"):
            finished.add_metric([outcome], self.runner.finished[outcome])
        yield finished
        try:
            counts = self.tasks.count_by_status()
        except StorageUnavailable as exc:
            log.warning("Task counts left out of /metrics: %s", exc)
            counts = None
        yield GaugeMetricFamily(
            "fish_speech_storage_up",
            "1 if the task store (local database or Redis) answered this scrape",
            value=0 if counts is None else 1,
        )
        if counts is not None:
            tasks = GaugeMetricFamily(
                "fish_speech_tasks", "Async tasks in the task store by state", labels=["state"]
            )
            for state, count in counts.items():
                tasks.add_metric([state], count)
            yield tasks


class ServerMetrics:
    def __init__(self) -> None:
        # A registry per app (not the global one), so several apps in one process never clash.
        self.registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        r = self.registry
        self.requests = Counter(
            "fish_speech_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.syntheses = Counter(
            "fish_speech_syntheses",
            "Syntheses finished, by engine and outcome (ok, empty, cancelled, error)",
            ["engine", "outcome"],
            registry=r,
        )
        self.first_audio = Histogram(
            "fish_speech_time_to_first_audio_seconds",
            "From queuing a synthesis to its first audio segment",
            ["engine"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.synthesis_time = Histogram(
            "fish_speech_synthesis_seconds",
            "From queuing a synthesis to its last audio segment",
            ["engine"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rtf = Histogram(
            "fish_speech_real_time_factor",
            "Synthesis time divided by the audio's duration (below 1: faster than real time)",
            ["engine"],
            buckets=_RTF_BUCKETS,
            registry=r,
        )
        self.fps = Histogram(
            "fish_speech_frames_per_second",
            "Model frames generated per second of synthesis time (engines with frames)",
            ["engine"],
            buckets=_FPS_BUCKETS,
            registry=r,
        )
        self.audio_seconds = Counter(
            "fish_speech_audio_seconds", "Seconds of audio synthesised", ["engine"], registry=r
        )
        self.characters = Counter(
            "fish_speech_characters", "Characters of text synthesised", ["engine"], registry=r
        )

    def attach(self, service: TTSService, tasks: TaskStore, runner: TaskRunner) -> None:
        """Start reporting on ``service`` and the tasks (called once the engine is loaded)."""
        self.registry.register(_LiveValues(service, tasks, runner))
        service.listeners.append(self.record)

    def record(self, report: SynthesisReport) -> None:
        engine = report.engine
        self.syntheses.labels(engine, report.outcome).inc()
        self.characters.labels(engine).inc(report.characters)
        self.audio_seconds.labels(engine).inc(report.audio_seconds)
        if report.outcome != "ok":
            return  # timings of cut-short syntheses would skew the distributions
        if report.first_audio_seconds is not None:
            self.first_audio.labels(engine).observe(report.first_audio_seconds)
        self.synthesis_time.labels(engine).observe(report.synthesis_seconds)
        if report.rtf is not None:
            self.rtf.labels(engine).observe(report.rtf)
        if report.frames and report.synthesis_seconds > 0:
            self.fps.labels(engine).observe(report.frames / report.synthesis_seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RouteTemplates:
    """Maps a request path to its route template (``/get_task_status/{step_id}``).

    Built from the app's top-level routes (the page, docs, static mounts) and the OpenAPI
    paths (every API route, also those in included routers), so requests refused before
    routing (401) get the label of the route they were meant for.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._table: list[tuple[re.Pattern[str], str]] | None = None

    def _build(self) -> list[tuple[re.Pattern[str], str]]:
        table = []
        for route in self.app.routes:
            regex, path = getattr(route, "path_regex", None), getattr(route, "path", None)
            if regex is not None and path:
                table.append((regex, path))
        try:
            templates = list(self.app.openapi()["paths"])
        except Exception:  # a broken document must not break every request
            log.exception("OpenAPI document failed: API routes are counted as unmatched")
            templates = []
        table += [(compile_path(template)[0], template) for template in templates]
        return table

    def label(self, path: str) -> str:
        if self._table is None:  # lazily: every route is registered by the first request
            self._table = self._build()
        for regex, template in self._table:
            if regex.match(path):
                return template
        return UNMATCHED


class RequestCounter:
    """Pure ASGI middleware, outermost, so every answer is counted (401s included)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, routes: RouteTemplates) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        label = self.routes.label(scope["path"])
        status = 500  # what the client sees if the app fails before starting a response

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.requests.labels(label, scope["method"], str(status)).inc()


router = APIRouter(tags=["observability (extension)"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (extension)",
    description="Prometheus text format. Needs the API key like every API route.",
    response_class=PlainTextResponse,
)
async def metrics(request: Request) -> Response:
    server_metrics: ServerMetrics = request.app.state.metrics
    # Task counts read the task store: off the event loop.
    body = await run_in_threadpool(server_metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
