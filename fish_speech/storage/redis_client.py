"""One Redis connection pool per process, and Redis errors as ``StorageUnavailable``.

A single Redis (or Valkey) node is assumed: the stores' Lua scripts touch keys they name
themselves, which Redis Cluster does not allow. Every key starts with ``fish_speech:``;
the database number in the URL keeps deployments that share a Redis apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fish_speech.storage import StorageUnavailable

PREFIX = "fish_speech:"
# Refused connections fail at once; an unreachable host must not hold a request for long.
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 10.0


def connect(url: str) -> Any:
    """A client for ``redis://[user:password@]host:port/db`` (``rediss://`` for TLS)."""
    import redis  # an optional extra: the server's config checks it is installed
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=READ_TIMEOUT_S,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        health_check_interval=15,
    )


def describe(client: Any) -> str:
    """``host:port/db`` of a client, never its password."""
    kwargs = client.connection_pool.connection_kwargs
    where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
    return f"{where}/{kwargs.get('db', 0)}"


@contextmanager
def unavailable_on_error(client: Any) -> Iterator[None]:
    """Turn a Redis failure into StorageUnavailable naming the server (not its password)."""
    import redis

    try:
        yield
    except redis.RedisError as exc:
        raise StorageUnavailable(f"Redis at {describe(client)} is unavailable: {exc}") from exc


def text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()
