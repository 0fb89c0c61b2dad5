"""The web page at ``/``: plain HTML, CSS and JavaScript shipped in ``server/web/``.

No CDN and no build step. The page and its files are public, so that a browser can open
it and the user can enter the API key; the key is kept in the browser and sent as
``Authorization: Bearer`` on every API call, which stays protected.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from fish_speech.server.docs import WEB_DIR

WEB_URL = "/web"
PUBLIC_PATHS = frozenset({"/"})
PUBLIC_PREFIXES = (WEB_URL + "/",)
# Everything the page uses comes from this server; audio it made plays from blob: URLs.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; media-src 'self' blob:; "
    "img-src 'self' data:; frame-ancestors 'self'"
}


def install_web(app: FastAPI) -> None:
    app.mount(WEB_URL, StaticFiles(directory=str(WEB_DIR)), name="web")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", headers=PAGE_HEADERS)
