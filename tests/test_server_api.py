"""Health, docs, error shapes, auth on every route, and the seed's client snippets."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import textwrap

import ormsgpack
import pytest

from conftest import API_KEY, assert_speech, decode_wav, make_wav_bytes, server_env

ROUTES = [
    ("GET", "/v1/health"),
    ("POST", "/v1/health"),
    ("GET", "/v1/ready"),
    ("POST", "/v1/tts"),
    ("POST", "/v1/vqgan/encode"),
    ("POST", "/v1/vqgan/decode"),
    ("POST", "/v1/references/add"),
    ("GET", "/v1/references/list"),
    ("DELETE", "/v1/references/delete"),
    ("POST", "/v1/references/update"),
    ("POST", "/generate_audio_enhanced_async"),
    ("GET", "/get_task_status/some_task"),
    ("GET", "/download_result/some_task"),
    ("POST", "/stop_generation"),
    ("POST", "/stop_async_task/some_task"),
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/v1/tasks"),
    ("POST", "/v1/audio/speech"),
    ("GET", "/v1/audio/voices"),
    ("GET", "/v1/models"),
]
# Pages a browser opens before it can send a key (the same files in every install).
PUBLIC = ["/", "/web/app.js", "/docs", "/redoc", "/docs/assets/swagger-ui-bundle.js"]


def test_health_reports_engine(server):
    for method in ("GET", "POST"):
        response = server.request(method, "/v1/health")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ok"
        assert body["engine"] == "embedded"
        assert body["capabilities"]["voice_match"] == "approximate"
    packed = server.request("GET", "/v1/health", headers={"accept": "application/msgpack"})
    assert ormsgpack.unpackb(packed.content)["status"] == "ok"


def test_docs_and_openapi(server):
    assert server.request("GET", "/docs").status_code == 200
    spec = server.request("GET", "/openapi.json").json()
    for path in (
        "/v1/tts",
        "/v1/vqgan/encode",
        "/v1/references/add",
        "/v1/health",
        "/generate_audio_enhanced_async",
    ):
        assert path in spec["paths"]
    assert "ServeTTSRequest" in str(spec["paths"]["/v1/tts"])


def test_unknown_path_and_wrong_method_are_json(server):
    missing = server.request("GET", "/v1/nothing")
    assert missing.status_code == 404 and "POST /v1/tts" in missing.json()["detail"]
    wrong = server.request("PUT", "/v1/tts")
    assert wrong.status_code == 405 and "detail" in wrong.json()


def test_vqgan_without_codec_is_503(server):
    for path in ("/v1/vqgan/encode", "/v1/vqgan/decode"):
        response = server.request("POST", path, json={"tokens": [], "audios": []})
        assert response.status_code == 503
        assert "--decoder-checkpoint-path" in response.json()["detail"]


@pytest.mark.parametrize("method, path", ROUTES)
def test_every_route_needs_the_key(auth_server, method, path):
    url = auth_server.url(path)
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": API_KEY}):
        response = auth_server.session.request(method, url, headers=headers, timeout=10)
        assert response.status_code == 401, (headers, response.text)
        assert "detail" in response.json()
        assert response.headers["www-authenticate"] == "Bearer"


def test_the_key_opens_the_routes(auth_server):
    assert auth_server.request("GET", "/v1/health").status_code == 200
    assert auth_server.request("GET", "/v1/references/list").status_code == 200
    assert auth_server.request("GET", "/openapi.json").status_code == 200


def test_page_and_docs_pages_are_public(auth_server):
    for path in PUBLIC:
        response = auth_server.session.get(auth_server.url(path), timeout=10)
        assert response.status_code == 200, path
    # Only reading them is public, and a public prefix leads nowhere else.
    assert auth_server.session.post(auth_server.url("/"), timeout=10).status_code == 401
    connection = http.client.HTTPConnection(auth_server.base_url.removeprefix("http://"))
    connection.request("GET", "/web/../openapi.json")  # sent as is, not normalised
    escaped = connection.getresponse()
    body = json.loads(escaped.read())
    assert escaped.status == 404 and set(body) == {"detail"}  # not the OpenAPI document
    connection.close()


SEED_SNIPPETS = """
import requests
import ormsgpack
from fish_speech.utils.schema import ServeTTSRequest, ServeReferenceAudio
from fish_speech.utils.file import audio_to_bytes, read_ref_text

# References: add (multipart), list, use, rename, delete
with open("ref_audio.wav", "rb") as audio_file:
    files = {"audio": audio_file}
    data = {
        "id": "my_voice",
        "text": "这是参考文本"
    }

    response = requests.post(
        "http://127.0.0.1:8080/v1/references/add",
        files=files,
        data=data,
        headers={"authorization": "Bearer YOUR_API_KEY"},
    )

    print(response.json())
assert response.json()["success"] is True

data = ServeTTSRequest(
    text="你好，这是测试文本",
    format="wav",
    reference_id="my_voice",  # 使用已保存的参考音频
    streaming=False,
)

response = requests.post(
    "http://127.0.0.1:8080/v1/tts",
    params={"format": "msgpack"},
    data=ormsgpack.packb(data, option=ormsgpack.OPT_SERIALIZE_PYDANTIC),
    headers={
        "authorization": "Bearer YOUR_API_KEY",
        "content-type": "application/msgpack",
    },
)

if response.status_code == 200:
    with open("output.wav", "wb") as f:
        f.write(response.content)
assert response.status_code == 200

data = {
    "text": "你好，这是测试文本",
    "format": "wav",
    "reference_id": "my_voice",
    "streaming": False,
}

response = requests.post(
    "http://127.0.0.1:8080/v1/tts?format=json",
    json=data,
    headers={"authorization": "Bearer YOUR_API_KEY"},
)

if response.status_code == 200:
    with open("output_json.wav", "wb") as f:
        f.write(response.content)
assert response.status_code == 200

data = ServeTTSRequest(
    text="你好，这是测试文本",
    format="wav",
    references=[
        ServeReferenceAudio(
            audio=audio_to_bytes("ref_audio.wav"),
            text=read_ref_text("ref_text.txt")
        )
    ],
)

response = requests.post(
    "http://127.0.0.1:8080/v1/tts",
    params={"format": "msgpack"},
    data=ormsgpack.packb(data, option=ormsgpack.OPT_SERIALIZE_PYDANTIC),
    headers={
        "authorization": "Bearer YOUR_API_KEY",
        "content-type": "application/msgpack",
    },
)
assert response.status_code == 200
open("output_inline.wav", "wb").write(response.content)

data = ServeTTSRequest(
    text="这是一段较长的文本，适合流式输出。第二句话在这里。",
    format="wav",
    streaming=True,
)

response = requests.post(
    "http://127.0.0.1:8080/v1/tts",
    params={"format": "msgpack"},
    data=ormsgpack.packb(data, option=ormsgpack.OPT_SERIALIZE_PYDANTIC),
    headers={
        "authorization": "Bearer YOUR_API_KEY",
        "content-type": "application/msgpack",
    },
    stream=True,
)
with open("output_stream.wav", "wb") as f:
    for chunk in response.iter_content(chunk_size=1024):
        if chunk:
            f.write(chunk)

response = requests.get(
    "http://127.0.0.1:8080/v1/references/list",
    headers={"Authorization": "Bearer YOUR_API_KEY"},
)
assert "my_voice" in response.json()["reference_ids"]

response = requests.post(
    "http://127.0.0.1:8080/v1/references/update",
    json={
        "old_reference_id": "my_voice",
        "new_reference_id": "new_name"
    },
    headers={"authorization": "Bearer YOUR_API_KEY"},
)

print(response.json())
assert response.json()["success"] is True

response = requests.delete(
    "http://127.0.0.1:8080/v1/references/delete",
    json={"reference_id": "new_name"},
    headers={"authorization": "Bearer YOUR_API_KEY"},
)

print(response.json())
assert response.json()["success"] is True
"""


def test_seed_client_snippets_run_unchanged(auth_server, tmp_path):
    (tmp_path / "ref_audio.wav").write_bytes(make_wav_bytes(1.5))
    (tmp_path / "ref_text.txt").write_text("这是参考文本", encoding="utf-8")
    port = auth_server.base_url.rsplit(":", 1)[1]
    script = textwrap.dedent(SEED_SNIPPETS).replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    (tmp_path / "snippets.py").write_text(script, encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "snippets.py"], cwd=tmp_path, env=server_env(), capture_output=True
    )
    assert run.returncode == 0, run.stderr.decode()
    for name in ("output.wav", "output_json.wav", "output_inline.wav"):
        assert_speech(*decode_wav((tmp_path / name).read_bytes()))
    streamed = (tmp_path / "output_stream.wav").read_bytes()
    assert streamed[:4] == b"RIFF"
    assert_speech(*decode_wav(streamed))
