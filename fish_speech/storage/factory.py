"""Opens the server's shared state: the task store and the voice library, both local
(SQLite and folders on this machine) or both in one Redis (``--redis-url``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fish_speech.references.base import ReferenceStore
from fish_speech.references.local import LocalReferenceStore
from fish_speech.storage import StorageUnavailable
from fish_speech.tasks.base import TaskStore
from fish_speech.tasks.local import LocalTaskStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StorageSettings:
    references_dir: Path
    data_dir: Path
    max_reference_seconds: float | None
    retention_s: float  # 0 = keep finished tasks forever
    redis_url: str | None = None
    results_dir: Path | None = None  # Redis mode: result files here instead of in Redis
    visibility_timeout_s: float = 60.0


@dataclass(frozen=True)
class Storage:
    tasks: TaskStore
    references: ReferenceStore

    def close(self) -> None:
        self.tasks.close()


def open_storage(settings: StorageSettings) -> Storage:
    if settings.redis_url is None:
        return Storage(
            LocalTaskStore(settings.data_dir),
            LocalReferenceStore(settings.references_dir, settings.max_reference_seconds),
        )
    from fish_speech.references.redis_store import RedisReferenceStore
    from fish_speech.storage.redis_client import connect, describe, unavailable_on_error
    from fish_speech.tasks.redis_store import RedisTaskStore

    client = connect(settings.redis_url)
    try:
        with unavailable_on_error(client):
            client.ping()
        log.info("Shared state in Redis at %s", describe(client))
    except StorageUnavailable as exc:  # start anyway: it may come up after us
        log.error("%s: requests that need it get 503 until it answers", exc)
    return Storage(
        RedisTaskStore(
            client, settings.visibility_timeout_s, settings.retention_s, settings.results_dir
        ),
        RedisReferenceStore(client, settings.max_reference_seconds),
    )
