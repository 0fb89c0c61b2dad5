"""Bounded request bodies (``--max-body-mb``) on every route.

A declared ``Content-Length`` over the limit is refused before any of the body is read; a
body without one (chunked) is counted as it streams in and refused as soon as it passes the
limit, so an oversized upload is never buffered. Both answer 413 ``{"detail": ...}``.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` mid-body; the app's handlers (or this middleware) answer 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"Request body is larger than the limit of {max_bytes / 2**20:g} MB")


def _too_large(max_bytes: int) -> JSONResponse:
    return JSONResponse({"detail": BodyTooLarge(max_bytes).detail}, status_code=413)


class BodyLimit:
    """Pure ASGI middleware, so it sees the body before any route or parser does."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.strip().isdigit():
            if int(declared) > self.max_bytes:
                await _too_large(self.max_bytes)(scope, receive, send)
                return

        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge:
            # Normally a route's error handler has answered already; this catches a body
            # read outside them (e.g. by a dependency).
            if started:
                raise
            await _too_large(self.max_bytes)(scope, receive, send)
