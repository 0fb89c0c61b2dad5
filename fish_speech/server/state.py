"""What the routes share: settings, the TTS service, the codec and the reference store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request

from fish_speech.engine.service import TTSService
from fish_speech.references.base import ReferenceStore
from fish_speech.server.config import ServerConfig
from fish_speech.server.lifecycle import Lifecycle
from fish_speech.storage.factory import Storage
from fish_speech.tasks.base import TaskStore
from fish_speech.tasks.runner import TaskRunner


@dataclass
class AppState:
    config: ServerConfig
    service: TTSService
    codec: Any | None
    storage: Storage
    runner: TaskRunner
    lifecycle: Lifecycle

    @property
    def store(self) -> ReferenceStore:
        return self.storage.references

    @property
    def tasks(self) -> TaskStore:
        return self.storage.tasks

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
