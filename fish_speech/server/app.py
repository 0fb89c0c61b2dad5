"""The ASGI application: routes, error shapes, auth and the engine's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from fish_speech.engine.base import Cancelled, EngineBusy, EngineFailure
from fish_speech.engine.loader import LoadedModels, load_models
from fish_speech.engine.service import TTSService
from fish_speech.references.base import (
    InvalidReferenceId,
    ReferenceExists,
    ReferenceNotFound,
    ReferenceStoreError,
)
from fish_speech.references.resolve import request_voice
from fish_speech.server import (
    docs,
    metrics,
    routes_health,
    routes_live,
    routes_openai,
    routes_references,
    routes_tasks,
    routes_tts,
    routes_vqgan,
    web,
)
from fish_speech.server.auth import BearerAuth
from fish_speech.server.config import LOG_FORMAT, ServerConfig
from fish_speech.server.http import negotiated
from fish_speech.server.lifecycle import DrainGate, Lifecycle, exit_now, retry_later
from fish_speech.server.limits import BodyLimit
from fish_speech.server.metrics import RequestCounter, RouteTemplates, ServerMetrics
from fish_speech.server.routes_tts import voice_limits
from fish_speech.server.state import AppState, get_state
from fish_speech.storage import StorageUnavailable
from fish_speech.storage.factory import StorageSettings, open_storage
from fish_speech.tasks.base import TaskConflict, TaskStore
from fish_speech.tasks.retention import sweep, sweep_forever
from fish_speech.tasks.runner import TaskRunner
from fish_speech.utils.schema import HealthResponse

log = logging.getLogger("fish_speech.server")

# Response headers a page on another origin may read.
EXPOSED_HEADERS = ["Content-Disposition", "X-Voice-Match", "WWW-Authenticate"]


NO_ROUTE = (
    "Not Found: {method} {path} is no route of this server. Text to speech is POST /v1/tts "
    "(OpenAI clients: POST /v1/audio/speech, base URL .../v1); every route is listed at /docs"
)


# Refused requests by what was refused (domain errors carry no HTTP status).
_REFUSAL_STATUS: dict[type[Exception], int] = {
    InvalidReferenceId: 400,
    ReferenceNotFound: 404,
    ReferenceExists: 409,
    TaskConflict: 409,
}


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":  # no such route
            detail = NO_ROUTE.format(method=request.method, path=request.url.path)
        return _error(exc.status_code, detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, f"Invalid request: {exc.errors()}")

    @app.exception_handler(ReferenceStoreError)
    @app.exception_handler(TaskConflict)
    async def refused(_: Request, exc: ReferenceStoreError | TaskConflict) -> JSONResponse:
        return _error(_REFUSAL_STATUS.get(type(exc), 400), str(exc))

    @app.exception_handler(StorageUnavailable)
    async def storage_down(_: Request, exc: StorageUnavailable) -> JSONResponse:
        # Nothing was stored: the client may retry here or at another instance.
        log.error("Storage unavailable: %s", exc)
        return retry_later(f"Storage unavailable: {exc}")

    @app.exception_handler(ValueError)
    async def bad_input(_: Request, exc: ValueError) -> JSONResponse:
        # Engines, the codec and the audio decoder raise ValueError for input they refuse.
        return _error(400, str(exc))

    @app.exception_handler(EngineBusy)
    async def busy(_: Request, exc: EngineBusy) -> JSONResponse:
        retry_after = str(max(1, round(exc.retry_after_s)))
        return _error(429, str(exc), {"Retry-After": retry_after})

    @app.exception_handler(Cancelled)
    async def cancelled(_: Request, exc: Cancelled) -> JSONResponse:
        return retry_later("The request was cancelled: the server is shutting down")

    @app.exception_handler(EngineFailure)
    async def engine_failed(_: Request, exc: EngineFailure) -> JSONResponse:
        return retry_later(f"The engine failed: {exc} (the server restarts)")

    @app.exception_handler(OSError)
    async def storage_error(_: Request, exc: Exception) -> JSONResponse:
        # The server's disk, not the request: a full or read-only data folder.
        log.error("Storage error: %s", exc)
        return _error(503, f"Storage error on the server: {exc}")

    @app.exception_handler(ClientDisconnect)
    async def client_gone(_: Request, exc: ClientDisconnect) -> JSONResponse:
        return _error(400, "The client disconnected before the request was complete")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("Unhandled error")
        return _error(500, f"Internal server error: {type(exc).__name__}: {exc}")


def _sweep_at_start(tasks: TaskStore, retention_s: float) -> None:
    try:
        sweep(tasks, retention_s)
    except Exception as exc:  # a broken disk shows up in the logs, not as a refusal to start
        log.error("Could not remove expired tasks: %s", exc)


def storage_settings(config: ServerConfig) -> StorageSettings:
    return StorageSettings(
        references_dir=Path(config.references_dir),
        data_dir=Path(config.data_dir),
        max_reference_seconds=config.max_reference_seconds,
        retention_s=config.task_retention_hours * 3600,
        redis_url=config.redis_url,
        results_dir=Path(config.results_dir) if config.results_dir else None,
        visibility_timeout_s=config.task_visibility_timeout,
    )


def load_configured_models(config: ServerConfig) -> LoadedModels:
    return load_models(
        config.llama_path(),
        config.decoder_path(),
        config.decoder_config_name,
        config.device,
        config.half,
        config.compile,
        config.max_batch_size,
        config.max_seq_len,
        config.max_queue,
        precision=config.precision,
        quantize=config.quantize,
    )


def create_app(config: ServerConfig, preloaded: LoadedModels | None = None) -> FastAPI:
    """``preloaded``: models loaded before the server starts (so a load error is reported
    before anything listens); worker processes load their own in the lifespan."""
    lifecycle = Lifecycle(config.shutdown_timeout)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        models = preloaded or load_configured_models(config)
        service = TTSService(models.engine, max_queue=config.max_queue)
        settings = storage_settings(config)
        retention_s = settings.retention_s
        storage = open_storage(settings)
        tasks = storage.tasks
        runner = TaskRunner(
            tasks,
            service,
            partial(request_voice, storage.references, limits=voice_limits(config)),
        )
        server_metrics.attach(service, tasks, runner)
        app.state.fish = AppState(config, service, models.codec, storage, runner, lifecycle)
        background = [
            asyncio.create_task(runner.run_forever()),
            asyncio.create_task(lifecycle.warm_up(service)),
            asyncio.create_task(lifecycle.watch_engine(service)),
        ]
        if retention_s > 0:
            await run_in_threadpool(_sweep_at_start, tasks, retention_s)
            background.append(asyncio.create_task(sweep_forever(tasks, retention_s)))
        lifecycle.on_drain(runner.stop)
        lifecycle.install_signal_handlers()
        log.info("Startup done: engine %s", models.engine.name)
        try:
            yield
        finally:
            # Also when uvicorn stops us without our drain (a signal that came before its
            # handlers were ours): running tasks go back to the queue for the other workers.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runner.stop(), config.shutdown_timeout / 2)
            for task in background:
                task.cancel()  # an unfinished task stays recorded and resumes on restart
            service.close()
            storage.close()
            if lifecycle.exit_code is not None:
                exit_now(lifecycle.exit_code)

    app = FastAPI(
        title="Fish Speech API",
        version="1.5.0",
        description="Fish Speech compatible text-to-speech server. "
        "The web page is at `/`; routes marked *extension* are not in the Fish Speech API.",
        lifespan=lifespan,
        docs_url=None,  # docs.install_docs serves offline Swagger UI and ReDoc instead
        redoc_url=None,
    )
    server_metrics = ServerMetrics()
    app.state.metrics = server_metrics
    _install_error_handlers(app)
    docs.install_docs(app, api_key_required=bool(config.api_key))
    web.install_web(app)

    @app.api_route("/v1/health", methods=["GET", "POST"], response_model=HealthResponse)
    async def health(request: Request) -> Response:
        service = get_state(request).service
        engine = service.engine
        if (failure := service.failure) is not None:  # liveness fails: restart this process
            body = {"status": "failed", "detail": f"The engine failed: {failure}"}
            return JSONResponse({**body, "engine": engine.name}, status_code=503)
        return negotiated(
            request,
            HealthResponse(
                status="ok",
                engine=engine.name,
                capabilities=engine.capabilities(),
                load=service.stats(),
            ),
        )

    app.include_router(routes_tts.router)
    app.include_router(routes_vqgan.router)
    app.include_router(routes_references.router)
    app.include_router(routes_tasks.router)
    app.include_router(metrics.router)
    app.include_router(routes_health.router)
    app.include_router(routes_openai.router)
    app.include_router(routes_live.router)
    # Outermost last: CORS (preflights answered before the key is checked), the request
    # counter, auth, then the shutdown gate, then the body limit.
    app.add_middleware(BodyLimit, max_bytes=int(config.max_body_mb * 2**20))
    app.add_middleware(DrainGate, lifecycle=lifecycle)
    if config.api_key:
        app.add_middleware(
            BearerAuth,
            api_key=config.api_key,
            public_paths=docs.PUBLIC_PATHS | web.PUBLIC_PATHS,
            public_prefixes=docs.PUBLIC_PREFIXES + web.PUBLIC_PREFIXES,
        )
    app.add_middleware(RequestCounter, metrics=server_metrics, routes=RouteTemplates(app))
    if origins := config.cors_origin_list():
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["*"],
            allow_headers=["*"],  # echoes the asked ones, Authorization and Content-Type too
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
    return app


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes (``--workers N``): settings come from the env."""
    # Workers are fresh (spawned) interpreters: give them the parent's log lines too.
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return create_app(ServerConfig.from_env())
