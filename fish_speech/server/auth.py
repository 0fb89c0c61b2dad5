"""Bearer-token authentication for every API route (WebSockets included) when --api-key is set.

Only pages a browser must open before it can send the key (the web page, the docs pages
and their static files, all the same in every install) are public; ``/openapi.json``,
``/metrics`` and every API route need the key. CORS preflights never reach it: the CORS
middleware outside it answers them.
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

DENIED = "Missing or invalid API key: send Authorization: Bearer <key>"


class BearerAuth:
    """Pure ASGI middleware: runs before routing, so no route can be reached without it."""

    def __init__(
        self,
        app: ASGIApp,
        api_key: str,
        public_paths: frozenset[str] = frozenset(),
        public_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self._expected = api_key.encode()
        self._public_paths = public_paths
        self._public_prefixes = public_prefixes

    def _public(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            return False
        path = scope["path"]
        return path in self._public_paths or path.startswith(self._public_prefixes)

    def _authorized(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.strip().partition(b" ")
        # compare_digest keeps the comparison time independent of where tokens differ.
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] not in ("http", "websocket")
            or self._public(scope)
            or self._authorized(scope)
        ):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": DENIED}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"www-authenticate", b"Bearer"),
            (b"content-length", str(len(body)).encode()),
        ]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in scope.get("extensions", {}):
            # Refuse the handshake with a real 401 and the usual body.
            await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": DENIED})
