"""Cancellation shared by the engine and the models: a flag one side sets, the other polls.

It lives below both so that ``models/`` (which stops a generation when asked) does not import
``engine/`` (which owns requests and their tokens).
"""

from __future__ import annotations

import threading


class Cancelled(Exception):
    """Raised inside an engine or a generation loop when the caller cancelled the request."""


class CancelToken:
    """A flag the caller sets and the engine polls between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()
