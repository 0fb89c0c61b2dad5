"""Where shared server state lives: on this machine (SQLite and files, the default) or in
Redis for many instances (``--redis-url``); ``factory.open_storage`` picks one."""

from __future__ import annotations


class StorageUnavailable(Exception):
    """The task database, the voice library or Redis cannot be reached or written now.

    Nothing was stored by the failed call; the server answers 503 with Retry-After."""
