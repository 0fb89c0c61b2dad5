"""The ASGI application: routes, error shapes, auth and the engine's lifetime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fish_speech.engine.base import Cancelled
from fish_speech.engine.loader import load_models
from fish_speech.engine.service import TTSService
from fish_speech.references.resolve import request_voice
from fish_speech.references.store import ReferenceStore, ReferenceStoreError
from fish_speech.server import routes_references, routes_tasks, routes_tts, routes_vqgan
from fish_speech.server.auth import BearerAuth
from fish_speech.server.config import ServerConfig
from fish_speech.server.http import negotiated
from fish_speech.server.state import AppState, get_state
from fish_speech.tasks.runner import TaskRunner
from fish_speech.tasks.store import TaskConflict, TaskStore
from fish_speech.utils.schema import HealthResponse

log = logging.getLogger("fish_speech.server")


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, f"Invalid request: {exc.errors()}")

    @app.exception_handler(ReferenceStoreError)
    @app.exception_handler(TaskConflict)
    async def state_conflict(_: Request, exc: ReferenceStoreError | TaskConflict) -> JSONResponse:
        return _error(exc.status_code, str(exc))

    @app.exception_handler(ValueError)
    async def bad_input(_: Request, exc: ValueError) -> JSONResponse:
        # Engines, the codec and the audio decoder raise ValueError for input they refuse.
        return _error(400, str(exc))

    @app.exception_handler(Cancelled)
    async def cancelled(_: Request, exc: Cancelled) -> JSONResponse:
        return _error(503, "The request was cancelled (server shutting down)")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("Unhandled error")
        return _error(500, f"Internal server error: {type(exc).__name__}: {exc}")


def create_app(config: ServerConfig) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        models = load_models(
            config.llama_path(),
            config.decoder_path(),
            config.decoder_config_name,
            config.device,
            config.half,
            config.compile,
            precision=config.precision,
            quantize=config.quantize,
        )
        service = TTSService(models.engine)
        references = ReferenceStore(Path(config.references_dir))
        tasks = TaskStore(Path(config.data_dir))
        runner = TaskRunner(
            tasks,
            service,
            partial(request_voice, references),
        )
        app.state.fish = AppState(config, service, models.codec, references, tasks, runner)
        runner_task = asyncio.create_task(runner.run_forever())
        log.info("Startup done: engine %s", models.engine.name)
        try:
            yield
        finally:
            runner_task.cancel()  # an unfinished task stays recorded and resumes on restart
            service.close()

    app = FastAPI(
        title="Fish Speech API",
        version="1.5.0",
        description="Fish Speech compatible text-to-speech server.",
        lifespan=lifespan,
    )
    _install_error_handlers(app)

    @app.api_route("/v1/health", methods=["GET", "POST"], response_model=HealthResponse)
    async def health(request: Request) -> Response:
        engine = get_state(request).service.engine
        return negotiated(
            request,
            HealthResponse(status="ok", engine=engine.name, capabilities=engine.capabilities()),
        )

    app.include_router(routes_tts.router)
    app.include_router(routes_vqgan.router)
    app.include_router(routes_references.router)
    app.include_router(routes_tasks.router)
    if config.api_key:
        app.add_middleware(BearerAuth, api_key=config.api_key)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes (``--workers N``): settings come from the env."""
    return create_app(ServerConfig.from_env())
