"""Bounded input over real HTTP: body size (declared and streamed), references, nesting.

The ``limited_server`` runs with --max-body-mb 1, --max-references 2 and
--max-reference-seconds 2.
"""

from __future__ import annotations

import base64
import io
import json
import socket

import numpy as np
import ormsgpack
import pytest
import soundfile as sf

from conftest import add_reference, make_wav_bytes

MB = 2**20


def raw_connection(server) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.settimeout(10)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("path", ["/v1/tts", "/v1/references/add", "/v1/health"])
def test_a_declared_oversized_body_is_refused_before_it_is_sent(limited_server, path):
    with raw_connection(limited_server) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {100 * MB}\r\n\r\n".encode()
        )  # ...and not one byte of the body
        status, headers, body = read_response(sock)
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert "limit of 1 MB" in json.loads(body)["detail"]


def test_a_streamed_body_is_refused_as_soon_as_it_passes_the_limit(limited_server):
    chunk = b"x" * 65536
    sent = 0
    with raw_connection(limited_server) as sock:
        sock.sendall(
            b"POST /v1/tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        sock.settimeout(0.05)
        answer = b""
        while not answer and sent < 20 * MB:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                continue
        sock.settimeout(10)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # Answered while the body was still coming, a little past the limit, not at its end.
    assert sent < 3 * MB


@pytest.mark.parametrize("kind", ["json", "msgpack", "multipart"])
def test_an_oversized_body_gets_413_through_an_ordinary_client(limited_server, kind):
    big = b"\0" * (2 * MB)
    if kind == "multipart":
        response = limited_server.request(
            "POST",
            "/v1/references/add",
            files={"audio": ("v.wav", big, "audio/wav")},
            data={"id": "big", "text": "Too big."},
        )
    elif kind == "msgpack":
        response = limited_server.request(
            "POST",
            "/v1/tts",
            data=ormsgpack.packb({"text": "hi", "references": [{"audio": big, "text": "t"}]}),
            headers={"content-type": "application/msgpack"},
        )
    else:
        response = limited_server.request("POST", "/v1/tts", json={"text": "x" * (2 * MB)})
    assert response.status_code == 413, response.text
    assert "limit" in response.json()["detail"]
    # The connection stays usable and the server unharmed.
    assert limited_server.request("GET", "/v1/health").json()["status"] == "ok"


def test_a_body_under_the_limit_is_read(limited_server):
    audio = base64.b64encode(make_wav_bytes(1.0, rate=44100)).decode()  # ~120 kB of JSON
    body = {"text": "Under the limit.", "references": [{"audio": audio, "text": "A tone."}]}
    response = limited_server.request("POST", "/v1/tts", json=body)
    assert response.status_code == 200, response.text


def inline(seconds: float, count: int = 1) -> list[dict]:
    audio = base64.b64encode(make_wav_bytes(seconds, rate=8000)).decode()
    return [{"audio": audio, "text": "A tone."}] * count


@pytest.mark.parametrize(
    "path, extra",
    [("/v1/tts", {}), ("/generate_audio_enhanced_async", {"step_id": "limited"})],
)
def test_reference_limits_are_400s_that_name_them(limited_server, path, extra):
    too_many = limited_server.request(
        "POST", path, json={"text": "Hi.", "references": inline(0.5, 3), **extra}
    )
    assert too_many.status_code == 400, too_many.text
    assert too_many.json()["detail"] == "references: 3 given, the limit is 2 per request"

    too_long = limited_server.request(
        "POST", path, json={"text": "Hi.", "references": inline(2.5), **extra}
    )
    assert too_long.status_code == 400, too_long.text
    assert "references[0]: audio is longer than the limit of 2 s" in too_long.json()["detail"]


def test_a_saved_voice_is_held_to_the_length_limit(limited_server):
    response = add_reference(limited_server, "too long", make_wav_bytes(2.5, rate=8000))
    assert response.status_code == 400, response.text
    assert "longer than the limit of 2 s" in response.json()["detail"]


def test_a_decompression_bomb_is_refused_without_decoding_it_all(limited_server):
    # Ten minutes of FLAC silence is a few kilobytes; it must not be expanded in memory.
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(600 * 8000, np.float32), 8000, format="FLAC")
    assert len(buffer.getvalue()) < MB
    audio = base64.b64encode(buffer.getvalue()).decode()
    body = {"text": "Hi.", "references": [{"audio": audio, "text": "t"}]}
    response = limited_server.request("POST", "/v1/tts", json=body)
    assert response.status_code == 400
    assert "longer than the limit" in response.json()["detail"]


def nested(depth: int) -> bytes:
    return b'{"text": "hi", "x": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    "content_type, body, fragment",
    [
        ("application/json", nested(100_000), "nested too deeply"),
        ("application/json", b'{"text": "\\ud800"}', "lone surrogate"),
        ("application/json", b'{"text": "hi", "top_p": NaN}', "top_p"),
        ("application/json", b'{"text": "hi", "temperature": Infinity}', "temperature"),
        ("application/json", b'{"text": "hi", "chunk_length": 1e999}', "chunk_length"),
        ("application/json", '{"text": "é"}'.encode("latin-1"), "JSON"),
        ("application/msgpack", b"\x91" * 100_000 + b"\xc0", "msgpack"),
        ("application/msgpack", b"\xdd\xff\xff\xff\xff", "msgpack"),  # claims 4G items
        ("application/msgpack", b"\x81\xa4text\xa2\xff\xfe", "msgpack"),  # not UTF-8
        ("application/msgpack", b"\x81\x01\x02", "msgpack"),  # a non-string key
    ],
)
def test_hostile_bodies_are_clean_400s(limited_server, content_type, body, fragment):
    response = limited_server.request(
        "POST", "/v1/tts", data=body, headers={"content-type": content_type}
    )
    assert response.status_code == 400, response.text
    assert fragment in response.json()["detail"]


def test_integers_beyond_64_bits_are_refused_for_tasks(limited_server):
    body = {"step_id": "huge", "text": "Hi.", "seed": 2**70}
    response = limited_server.request("POST", "/generate_audio_enhanced_async", json=body)
    assert response.status_code == 400, response.text
    assert "detail" in response.json()
