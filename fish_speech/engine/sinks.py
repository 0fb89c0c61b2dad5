"""Handing a request's items from an engine thread to whoever consumes them."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Iterator
from typing import Generic, TypeVar

from fish_speech.utils.cancel import CancelToken

T = TypeVar("T")

_DONE = object()


class Outbox(Generic[T]):
    """Items put from any thread, iterated by one coroutine on the event loop that made it.

    If the event loop is gone (shutdown) nobody is listening, so the request is cancelled.
    """

    def __init__(self, cancel: CancelToken) -> None:
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[object] = asyncio.Queue()
        self._cancel = cancel

    def put(self, item: T) -> None:
        self._post(item)

    def close(self, error: BaseException | None = None) -> None:
        self._post(_DONE if error is None else error)

    def _post(self, item: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # the loop is closed
            self._cancel.cancel()

    async def __aiter__(self) -> AsyncIterator[T]:
        while (item := await self._items.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]


class BlockingSink(Generic[T]):
    """Items put from one thread, iterated (blocking) by another."""

    def __init__(self) -> None:
        self._items: queue.Queue[object] = queue.Queue()

    def put(self, item: T) -> None:
        self._items.put(item)

    def close(self, error: BaseException | None = None) -> None:
        self._items.put(_DONE if error is None else error)

    def __iter__(self) -> Iterator[T]:
        while (item := self._items.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
