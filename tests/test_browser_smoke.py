"""The headless browser the UI and CORS tests use can reach a real server."""

from __future__ import annotations

import json


def test_browser_reads_health_from_server(browser, server):
    page = browser.new_page()
    try:
        response = page.goto(server.url("/v1/health"))
        assert response is not None and response.status == 200
        assert json.loads(page.inner_text("body"))["status"] == "ok"
    finally:
        page.close()
