"""What the routes share: settings, the TTS service, the codec and the reference store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request

from fish_speech.engine.service import TTSService
from fish_speech.references.store import ReferenceStore
from fish_speech.server.config import ServerConfig
from fish_speech.server.lifecycle import Lifecycle
from fish_speech.tasks.runner import TaskRunner
from fish_speech.tasks.store import TaskStore


@dataclass
class AppState:
    config: ServerConfig
    service: TTSService
    codec: Any | None
    store: ReferenceStore
    tasks: TaskStore
    runner: TaskRunner
    lifecycle: Lifecycle

    def require_codec(self) -> Any:
        if self.codec is None:
            raise HTTPException(
                503,
                "No codec is loaded: start the server with --decoder-checkpoint-path "
                "(e.g. checkpoints/openaudio-s1-mini/codec.pth) to use /v1/vqgan",
            )
        return self.codec


def get_state(request: Request) -> AppState:
    return request.app.state.fish
