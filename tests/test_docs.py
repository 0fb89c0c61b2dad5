"""The OpenAPI document and the offline docs pages (Swagger UI at /docs, ReDoc at /redoc)."""

from __future__ import annotations

import io

import pytest
import soundfile as sf
from openapi_spec_validator import validate

from conftest import API_KEY, assert_speech
from fish_speech.server import routes_openai
from fish_speech.utils import schema


def resolve(document: dict, ref: str):
    assert ref.startswith("#/"), f"not a local reference: {ref}"
    node = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} resolves nowhere"
        node = node[part]
    return node


def refs(node):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


@pytest.fixture(scope="module")
def spec(server) -> dict:
    return server.request("GET", "/openapi.json").json()


def test_openapi_document_is_valid_and_every_ref_resolves(spec, auth_server):
    keyed = auth_server.request("GET", "/openapi.json").json()
    for document in (spec, keyed):
        validate(document)
        found = list(refs(document))
        assert "#/components/schemas/ServeReferenceAudio" in found
        for ref in found:
            resolve(document, ref)
        assert "$defs" not in str(document)
        ids = [op["operationId"] for _, _, op in operations(document)]
        assert len(ids) == len(set(ids))
        for path, method, operation in operations(document):
            # Validation errors are 400 here, never FastAPI's default 422.
            assert "422" not in operation["responses"], (path, method)
    # Bearer auth is declared exactly when the server needs a key.
    assert keyed["components"]["securitySchemes"]["BearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The server's --api-key, sent as Authorization: Bearer <key>",
    }
    assert keyed["security"] == [{"BearerAuth": []}]
    assert "securitySchemes" not in spec["components"] and "security" not in spec


def test_json_examples_are_first_valid_and_work(spec, server):
    examples = {}
    for path, method, operation in operations(spec):
        content = operation.get("requestBody", {}).get("content", {})
        if "application/json" in content:
            assert next(iter(content)) == "application/json", path  # "Try it out" default
            media = content["application/json"]
            assert "example" in media, f"{method} {path} has no JSON example"
            name = media["schema"]["$ref"].rsplit("/", 1)[1]
            model = getattr(schema, name, None) or getattr(routes_openai, name)
            model.model_validate(media["example"])
            examples[path] = media["example"]

    tts = server.request("POST", "/v1/tts", json=examples["/v1/tts"])
    assert tts.status_code == 200, tts.text
    assert_speech(*sf.read(io.BytesIO(tts.content), dtype="float32"))
    speech = server.request("POST", "/v1/audio/speech", json=examples["/v1/audio/speech"])
    assert speech.status_code == 200, speech.text
    assert_speech(*sf.read(io.BytesIO(speech.content), dtype="float32"))
    task = server.request(
        "POST", "/generate_audio_enhanced_async", json=examples["/generate_audio_enhanced_async"]
    )
    assert task.status_code == 200, task.text
    # The codec routes parse the examples and only then find no codec loaded.
    for path in ("/v1/vqgan/encode", "/v1/vqgan/decode"):
        assert server.request("POST", path, json=examples[path]).status_code == 503


def watch_requests(page, base_url: str) -> list[str]:
    """URLs off the server that the page sent (refused here, so the test runs offline).

    A request the page's Content-Security-Policy blocked never left the browser, so it
    is not counted (ReDoc's footer asks for its vendor's logo; the policy refuses it).
    """
    outside: list[str] = []

    def route(request_route):
        url = request_route.request.url
        if url.startswith(base_url + "/") or url.startswith(("data:", "blob:")):
            request_route.continue_()
        else:
            outside.append(url)
            request_route.abort()

    page.route("**/*", route)
    page.on(
        "requestfailed",
        lambda request: (
            request.failure not in ("csp", "net::ERR_BLOCKED_BY_CSP")
            and not request.url.startswith(base_url)
            and outside.append(request.url)
        ),
    )
    return outside


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_load_everything_from_the_server(browser, server, path):
    page = browser.new_page()
    try:
        outside = watch_requests(page, server.base_url)
        loaded: list[str] = []
        page.on("requestfinished", lambda request: loaded.append(request.url))
        page.goto(server.url(path))
        if path == "/docs":
            page.wait_for_selector(".opblock-summary", timeout=30000)
            assert page.locator(".opblock").count() >= 15
        else:
            page.wait_for_selector("h1:has-text('Fish Speech API')", timeout=30000)
            assert page.locator("[data-section-id^='tag/']").count() >= 3
        page.wait_for_load_state("networkidle")
        assert outside == []
        assert any(url.endswith(".js") for url in loaded)
        assert all(url.startswith(server.base_url) for url in loaded)
    finally:
        page.close()


def test_swagger_with_key_authorizes_and_try_it_out_works(browser, auth_server, tmp_path):
    context = browser.new_context()
    page = context.new_page()
    try:
        outside = watch_requests(page, auth_server.base_url)
        page.goto(auth_server.url("/docs"))
        page.wait_for_selector("#key-form:not([hidden])")  # the document needs the key
        page.fill("#key-input", API_KEY)
        page.click("#key-form button")
        page.wait_for_selector(".opblock-summary", timeout=30000)
        assert page.locator(".btn.authorize.locked").count() == 1  # already authorized
        operation = page.locator("#operations-default-tts_v1_tts_post")
        operation.locator(".opblock-summary").click()
        operation.locator("button.try-out__btn").click()
        operation.locator("button.execute").click()
        status = operation.locator(".live-responses-table tr.response .response-col_status").first
        status.wait_for(timeout=60000)
        assert status.inner_text().strip().startswith("200")
        page.screenshot(path=tmp_path / "swagger-try-it-out.png", full_page=True)
        assert outside == []
        # The key is kept: the page opens directly next time, in ReDoc too.
        page.goto(auth_server.url("/redoc"))
        page.wait_for_selector("h1:has-text('Fish Speech API')", timeout=30000)
        assert page.locator("#key-form").is_hidden()
    finally:
        context.close()
