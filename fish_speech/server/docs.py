"""API docs that work offline and with ``--api-key``: Swagger UI at /docs, ReDoc at /redoc.

The Swagger UI and ReDoc bundles come from the ``fastapi-offline`` package and are served
by this server, never from a CDN. The two HTML pages and their bundles are public (they
are the same files in every install and hold no data); ``/openapi.json`` and every API
route still need the key. The pages' script (``web/docs.js``) fetches the document with the
key kept in the browser (shared with the web page at ``/``) and asks for it when refused.

The OpenAPI document is refined here, after FastAPI builds it: body models that routes
declare by hand (``http.body_schema``) move to ``components/schemas`` (pydantic puts their
nested models under a local ``$defs`` that nothing resolves), JSON becomes the first body
type with a working example, validation errors are documented as the 400s they are, and
Bearer auth is declared when a key is set.
"""

from __future__ import annotations

import base64
import copy
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from fish_speech.audio.encode import encode_audio

ASSETS_URL = "/docs/assets"
PUBLIC_PATHS = frozenset({"/docs", "/redoc"})
PUBLIC_PREFIXES = (ASSETS_URL + "/",)

WEB_DIR = Path(__file__).with_name("web")
# The browser itself keeps the docs from loading anything from elsewhere (ReDoc's footer
# would fetch a logo from its vendor's CDN); both bundles set inline styles, ReDoc runs
# its search in a blob: worker.
DOCS_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; worker-src 'self' blob:; frame-ancestors 'self'"
}
SECURITY_SCHEME = "BearerAuth"
_COMPONENT_REF = "#/components/schemas/"
_LOCAL_DEFS = "#/$defs/"
_ERROR_SCHEMA = "ErrorDetail"
_BODY_TYPES = ("application/json", "application/msgpack")


def _example_wav_base64() -> str:
    """A 0.1 s tone as a Base64 WAV: small enough to sit in the document, real audio."""
    t = np.arange(1600) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return base64.b64encode(encode_audio(tone, 16000, "wav")).decode("ascii")


# JSON bodies for "Try it out": each runs as is on a fresh embedded-engine server (the
# vqgan ones need a codec; the reference ones need the voice they name).
EXAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/tts", "post"): {
        "text": "Hello from the API docs. 你好！",
        "format": "wav",
        "streaming": False,
        "chunk_length": 200,
        "top_p": 0.8,
        "temperature": 0.8,
        "repetition_penalty": 1.1,
        "max_new_tokens": 1024,
        "normalize": True,
        "use_memory_cache": "off",
    },
    ("/generate_audio_enhanced_async", "post"): {
        "step_id": "docs-example",
        "text": "A longer text that is worth running in the background.",
        "format": "mp3",
    },
    ("/v1/audio/speech", "post"): {
        "model": "tts-1",
        "input": "Hello from the API docs.",
        "voice": "alloy",
        "response_format": "mp3",
    },
    ("/v1/vqgan/encode", "post"): {"audios": [_example_wav_base64()]},
    ("/v1/vqgan/decode", "post"): {"tokens": [[[0, 1, 2, 3]] * 10]},
    ("/v1/references/delete", "delete"): {"reference_id": "my_voice"},
    ("/v1/references/update", "post"): {
        "old_reference_id": "my_voice",
        "new_reference_id": "my_voice_renamed",
    },
}


def _walk(node: Any):
    """Every dict in a JSON tree."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _add_component(schemas: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    if name in schemas and schemas[name] != schema:
        raise ValueError(f"two different schemas are both named {name!r} in the OpenAPI document")
    schemas[name] = schema


def _hoist_body_schema(body: dict[str, Any], schemas: dict[str, Any]) -> None:
    """A hand-declared model body becomes a ``$ref`` into components (with its ``$defs``,
    whose local ``#/$defs/...`` references resolve nowhere in an OpenAPI document)."""
    for media in body.get("content", {}).values():
        schema = media.get("schema", {})
        for node in _walk(schema):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(_LOCAL_DEFS):
                node["$ref"] = _COMPONENT_REF + ref.removeprefix(_LOCAL_DEFS)
        for name, nested in schema.pop("$defs", {}).items():
            _add_component(schemas, name, nested)
        title = schema.get("title")
        if title and "properties" in schema:  # a pydantic model, not an inline form
            _add_component(schemas, title, schema)
            media["schema"] = {"$ref": _COMPONENT_REF + title}


def _json_first(body: dict[str, Any], example: dict[str, Any] | None) -> None:
    content = body.get("content", {})
    ordered = {t: content[t] for t in _BODY_TYPES if t in content}
    ordered.update((t, media) for t, media in content.items() if t not in ordered)
    if example is not None and "application/json" in ordered:
        ordered["application/json"]["example"] = example
    body["content"] = ordered


def _drop_default_json(response: dict[str, Any]) -> None:
    """Audio routes list their media types; FastAPI adds an empty JSON one in front."""
    content = response.get("content", {})
    if len(content) > 1 and content.get("application/json") == {"schema": {}}:
        del content["application/json"]


def _error_response(description: str) -> dict[str, Any]:
    schema = {"$ref": _COMPONENT_REF + _ERROR_SCHEMA}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _unique_operation_ids(item: dict[str, Any]) -> None:
    """One function serving two methods (GET and POST /v1/health) gets one id for both."""
    ids = [operation.get("operationId") for operation in item.values()]
    for method, operation in item.items():
        operation_id = operation.get("operationId")
        if operation_id and ids.count(operation_id) > 1:
            base = re.sub(r"_(get|post|put|patch|delete|head|options)$", "", operation_id)
            operation["operationId"] = f"{base}_{method}"


def refine_openapi(spec: dict[str, Any], api_key_required: bool) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas[_ERROR_SCHEMA] = {
        "type": "object",
        "required": ["detail"],
        "properties": {"detail": {"type": "string"}},
        "title": _ERROR_SCHEMA,
    }
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if "requestBody" in operation:
                _hoist_body_schema(operation["requestBody"], schemas)
                _json_first(operation["requestBody"], EXAMPLES.get((path, method)))
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)  # this server answers invalid input with 400
            _drop_default_json(responses.get("200", {}))
            if "requestBody" in operation or operation.get("parameters"):
                responses.setdefault("400", _error_response("Invalid request"))
            if api_key_required:
                responses.setdefault("401", _error_response("Missing or invalid API key"))
        _unique_operation_ids(item)
    # Drop FastAPI's 422 models once nothing refers to them (the first refers to the second).
    for name in ("HTTPValidationError", "ValidationError"):
        used = {node["$ref"] for node in _walk(spec) if isinstance(node.get("$ref"), str)}
        if _COMPONENT_REF + name not in used:
            schemas.pop(name, None)
    if api_key_required:
        spec["components"]["securitySchemes"] = {
            SECURITY_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": "The server's --api-key, sent as Authorization: Bearer <key>",
            }
        }
        spec["security"] = [{SECURITY_SCHEME: []}]
    return spec


def install_docs(app: FastAPI, api_key_required: bool) -> None:
    """Serve /docs, /redoc and their assets, and the refined /openapi.json."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            built = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = refine_openapi(built, api_key_required)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    assets = files("fastapi_offline") / "static"
    app.mount(ASSETS_URL, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> FileResponse:
        return FileResponse(WEB_DIR / "swagger.html", headers=DOCS_HEADERS)

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> FileResponse:
        return FileResponse(WEB_DIR / "redoc.html", headers=DOCS_HEADERS)
