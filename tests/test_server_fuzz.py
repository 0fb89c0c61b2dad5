"""Fuzzing every route over real HTTP: no input may cause a 5xx, and every 4xx is
``{"detail": "..."}``.

Bodies are built by hypothesis strategies (derandomized, so CI sees the same inputs every
run): well-formed requests with fields swapped for wrong types, nulls, NaN, huge numbers,
deep nesting and non-UTF-8 text; each numeric field out of range; garbage, truncated and
over-limit bodies; unknown content types; broken multipart; zero-byte, non-audio, too long
and over-limit uploads. Bounded to roughly a minute on two cores.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import ormsgpack
import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import TINY_FISH_ARGS, launch_server, make_wav_bytes

FUZZ = settings(
    derandomize=True,  # the same examples on every run: fair in CI
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def cases(values: list) -> st.SearchStrategy:
    """sampled_from, without the values in the strategy's repr (they can be large)."""
    return st.integers(0, len(values) - 1).map(values.__getitem__)


WAV = make_wav_bytes(0.3, rate=8000)
UPLOADS = (
    cases(
        [
            b"",  # zero bytes
            b"not audio at all" * 20,
            WAV,
            WAV[:60],  # a header and hardly any samples
            WAV[:30],  # a truncated header
            make_wav_bytes(2.5, rate=8000),  # over --max-reference-seconds 2
            b"RIFF\xff\xff\xff\xffWAVEfmt " + b"\xff" * 40,  # a lying header
            b"fLaC" + b"\0" * 60,
            b"ID3\x04" + b"\xff" * 80,
        ]
    )
    | st.binary(max_size=64)
)

HUGE = st.sampled_from([2**63, 2**64, 2**70, -(2**63) - 1, 10**30])
NUMBER = (
    st.integers(min_value=-1000, max_value=5000)
    | HUGE
    | st.floats(allow_nan=True, allow_infinity=True)
)
SCALAR = (
    st.none()
    | st.booleans()
    | NUMBER
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.sampled_from(["", "\ud800", "../x", "\0"])
)
ANYTHING = st.recursive(
    SCALAR,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def requests_like(draw, valid: dict, required: tuple[str, ...] = (), broken: dict | None = None):
    """A valid request, or one with a field broken, dropped or added.

    ``valid`` maps each field to a strategy of good values, ``broken`` to bad ones (out of
    range); any field may also get anything at all.
    """
    body = {name: draw(valid[name]) for name in required}
    for name in valid:
        if name not in required and draw(st.booleans()):
            body[name] = draw(valid[name])
    how = draw(st.sampled_from(["valid", "valid", "broken", "broken", "dropped", "extra"]))
    if how == "broken":
        name = draw(st.sampled_from(sorted(valid)))
        bad = (broken or {}).get(name)
        body[name] = draw(ANYTHING if bad is None else bad | ANYTHING)
    elif how == "dropped" and body:
        body.pop(draw(st.sampled_from(sorted(body))))
    elif how == "extra":
        body[draw(st.text(max_size=8))] = draw(ANYTHING)
    return body


OUT_OF_RANGE_FLOAT = st.floats(allow_nan=True, allow_infinity=True) | NUMBER
# Short texts: a valid request is synthesised, and that must stay cheap.
TEXT = st.text(max_size=40) | cases(["Hello there.", "你好。", "🙂", "   ", "x" * 301])
STEP_IDS = st.uuids().map(str) | st.from_regex(r"[A-Za-z0-9_-]{1,16}", fullmatch=True)
IDS = (
    cases(["voice", "task_1", "../etc", "a/b", " x", "x" * 256, "", "bad\n", "a.b"])
    | st.text(max_size=12)
    | STEP_IDS
)
REFERENCE = requests_like({"audio": cases([WAV]) | UPLOADS, "text": TEXT}, ("audio", "text"))
GENERATION = {
    "text": TEXT,
    "chunk_length": st.integers(100, 300),
    "references": st.lists(REFERENCE, max_size=3),
    "reference_id": st.none() | st.just("voice") | IDS,
    "seed": st.none() | st.integers(-(2**63), 2**64 - 1),
    "use_memory_cache": st.sampled_from(["on", "off"]),
    "normalize": st.booleans(),
    "top_p": st.floats(0.1, 1.0),
    "repetition_penalty": st.floats(0.9, 2.0),
    "temperature": st.floats(0.1, 1.0),
    "max_new_tokens": st.integers(0, 2**63),
    "format": st.sampled_from(["wav", "pcm", "mp3"]),
}
GENERATION_BROKEN = {
    "chunk_length": st.integers(-(2**70), 99) | st.integers(301, 2**70),
    "top_p": OUT_OF_RANGE_FLOAT,
    "repetition_penalty": OUT_OF_RANGE_FLOAT,
    "temperature": OUT_OF_RANGE_FLOAT,
    "max_new_tokens": st.integers(-(2**70), -1) | HUGE,
    "seed": HUGE,
    "format": st.sampled_from(["ogg", "WAV", "", "flac"]),
    "use_memory_cache": st.sampled_from(["maybe", "ON"]) | st.booleans(),
    "text": cases(["", "   ", "x" * 301, "\ud800"]),
}
TTS = requests_like({**GENERATION, "streaming": st.booleans()}, ("text",), GENERATION_BROKEN)
TASK = requests_like({**GENERATION, "step_id": STEP_IDS}, ("text", "step_id"), GENERATION_BROKEN)
ADD = requests_like({"id": IDS, "audio": UPLOADS, "text": TEXT}, ("id", "audio", "text"))
DELETE = requests_like({"reference_id": IDS}, ("reference_id",))
UPDATE = requests_like(
    {"old_reference_id": IDS, "new_reference_id": IDS}, ("old_reference_id", "new_reference_id")
)
GRID = st.lists(
    st.lists(st.integers(0, 900), min_size=1, max_size=4).map(lambda row: [row] * 4),
    max_size=2,
).map(lambda grids: [[list(r) for r in g] for g in grids])
ENCODE = requests_like({"audios": st.lists(UPLOADS, min_size=1, max_size=3)}, ("audios",))
DECODE = requests_like(
    {"tokens": GRID},
    ("tokens",),
    {"tokens": st.lists(st.lists(st.lists(st.integers(-5, 5000), max_size=5), max_size=6))},
)


def as_json(value) -> bytes:
    """JSON as a client would send it: bytes as Base64, NaN and Infinity as Python writes
    them; what JSON cannot carry at all (lone surrogates) as raw escapes."""

    def plain(item):
        if isinstance(item, bytes):
            return base64.b64encode(item).decode()
        if isinstance(item, dict):
            return {k: plain(v) for k, v in item.items()}
        if isinstance(item, list):
            return [plain(v) for v in item]
        return item

    return json.dumps(plain(value)).encode()


def as_msgpack(value) -> bytes:
    try:
        return ormsgpack.packb(value)
    except (TypeError, ValueError):  # beyond what msgpack can say (huge ints, surrogates)
        return as_json(value)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


CONTENT_TYPES = [
    "application/json",
    "application/msgpack",
    "application/x-msgpack",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "text/plain",
    "application/json; charset=utf-16",
    "",
    "application/octet-stream",
]


@st.composite
def bodies(draw, fields) -> tuple[bytes, str]:
    """A body and its Content-Type: mostly well-formed, often broken in some way."""
    value = draw(fields) if draw(st.integers(0, 4)) else draw(ANYTHING)
    form = draw(
        st.sampled_from(
            ["json", "json", "msgpack", "msgpack", "truncated", "garbage", "nested", "mislabelled"]
        )
    )
    if form == "json":
        return as_json(value), "application/json"
    if form == "msgpack":
        return as_msgpack(value), "application/msgpack"
    if form == "truncated":
        data = draw(st.sampled_from([as_json, as_msgpack]))(value)
        cut = draw(st.integers(0, max(0, len(data) - 1)))
        return data[:cut], draw(st.sampled_from(CONTENT_TYPES[:3]))
    if form == "nested":
        depth = draw(st.sampled_from([100, 10_000, 200_000]))
        wrapper = draw(st.sampled_from([b'{"text": "hi", "x": %s}', b"%s"]))
        data = wrapper % nested(depth)
        if draw(st.booleans()):
            data = b"\x91" * depth + b"\xc0"  # the msgpack spelling
            return data, "application/msgpack"
        return data, "application/json"
    if form == "garbage":
        data = draw(st.binary(max_size=200) | st.sampled_from([b"\xff\xfe\x00", b"--xyz--\r\n"]))
        return data, draw(st.sampled_from(CONTENT_TYPES))
    return as_json(value), draw(st.sampled_from(CONTENT_TYPES[3:]))


def check(response: requests.Response) -> None:
    event(f"HTTP {response.status_code}")  # see the spread: pytest --hypothesis-show-statistics
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("detail"), str), body


REPLY = st.sampled_from([{}, {"format": "msgpack"}, {"format": "json"}])


def send(server, method: str, path: str, body: tuple[bytes, str], params: dict) -> None:
    data, content_type = body
    headers = {"content-type": content_type} if content_type else {}
    check(server.request(method, path, data=data, headers=headers, params=params, timeout=60))


@pytest.fixture(scope="module")
def fuzzed(limited_server):
    voice = {"id": "voice", "text": "A saved voice."}  # for reference_id "voice"
    files = {"audio": ("voice.wav", WAV, "audio/wav")}
    assert limited_server.request(
        "POST", "/v1/references/add", data=voice, files=files
    ).status_code in (200, 409)
    yield limited_server
    limited_server.request("POST", "/stop_generation")  # drop queued fuzz tasks


@settings(FUZZ, max_examples=80)
@given(body=bodies(TTS), params=REPLY)
def test_fuzz_tts(fuzzed, body, params):
    send(fuzzed, "POST", "/v1/tts", body, params)


@settings(FUZZ, max_examples=60)
@given(body=bodies(TASK), params=REPLY)
def test_fuzz_async_task(fuzzed, body, params):
    send(fuzzed, "POST", "/generate_audio_enhanced_async", body, params)


@settings(FUZZ, max_examples=60)
@given(body=bodies(ADD), params=REPLY)
def test_fuzz_reference_add(fuzzed, body, params):
    send(fuzzed, "POST", "/v1/references/add", body, params)


@settings(FUZZ, max_examples=60)
@given(body=bodies(DELETE), params=REPLY)
def test_fuzz_reference_delete(fuzzed, body, params):
    send(fuzzed, "DELETE", "/v1/references/delete", body, params)


@settings(FUZZ, max_examples=60)
@given(body=bodies(UPDATE), params=REPLY)
def test_fuzz_reference_update(fuzzed, body, params):
    send(fuzzed, "POST", "/v1/references/update", body, params)


@settings(FUZZ, max_examples=50)
@given(
    form=st.dictionaries(st.sampled_from(["id", "text", "audio", "junk"]), IDS | TEXT | ANYTHING),
    files=st.dictionaries(st.sampled_from(["audio", "id", "x"]), UPLOADS, min_size=1, max_size=2),
)
def test_fuzz_multipart_uploads(fuzzed, form, files):
    data = {k: v if isinstance(v, str) else as_json(v).decode() for k, v in form.items()}
    response = fuzzed.request(
        "POST",
        "/v1/references/add",
        data=data,
        files={k: ("upload.bin", v, "application/octet-stream") for k, v in files.items()},
        timeout=60,
    )
    check(response)


ID_ROUTES = [
    ("GET", "/get_task_status/{}"),
    ("GET", "/download_result/{}"),
    ("POST", "/stop_async_task/{}"),
]
QUERY_ROUTES = [
    ("GET", "/get_task_status"),
    ("GET", "/download_result"),
    ("GET", "/v1/references/list"),
    ("GET", "/v1/health"),
    ("POST", "/v1/health"),
    ("GET", "/v1/ready"),
    ("POST", "/stop_generation"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
]


@settings(FUZZ, max_examples=60)
@given(
    route=st.sampled_from(ID_ROUTES),
    step_id=IDS,
    query=st.dictionaries(st.sampled_from(["step_id", "format"]), IDS, max_size=2),
)
def test_fuzz_ids_in_paths_and_queries(fuzzed, route, step_id, query):
    method, template = route
    check(fuzzed.request(method, template.format(quote(step_id, safe="")), params=query))


@settings(FUZZ, max_examples=60)
@given(
    route=st.sampled_from(QUERY_ROUTES),
    query=st.dictionaries(st.sampled_from(["step_id", "format", "x"]), IDS, max_size=2),
    body=bodies(ANYTHING),
    accept=st.sampled_from(["", "application/msgpack", "application/json", "*/*", "text/html"]),
)
def test_fuzz_other_routes(fuzzed, route, query, body, accept):
    method, path = route
    data, content_type = body
    headers = {"accept": accept} if accept else {}
    if content_type:
        headers["content-type"] = content_type
    check(fuzzed.request(method, path, params=query, data=data, headers=headers, timeout=60))


@settings(FUZZ, max_examples=20)
@given(
    path=st.sampled_from(
        ["/v1/tts", "/generate_audio_enhanced_async", "/v1/references/add", "/v1/references/update"]
    ),
    megabytes=st.sampled_from([1.01, 2, 8]),
)
def test_fuzz_over_limit_bodies(fuzzed, path, megabytes):
    body = b"{" + b" " * int(megabytes * 2**20) + b"}"
    response = fuzzed.request("POST", path, data=body, headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    check(response)


@pytest.fixture(scope="module")
def codec_server(tmp_path_factory):
    """The tiny Fish checkpoints: a real codec behind /v1/vqgan, with the small limits."""
    proc = launch_server(
        tmp_path_factory.mktemp("fuzz_codec"),
        *TINY_FISH_ARGS,
        "--max-body-mb",
        "1",
        "--max-references",
        "2",
        "--max-reference-seconds",
        "2",
    )
    yield proc
    proc.stop()


@settings(FUZZ, max_examples=80)
@given(body=bodies(ENCODE), params=REPLY)
def test_fuzz_vqgan_encode(codec_server, body, params):
    send(codec_server, "POST", "/v1/vqgan/encode", body, params)


@settings(FUZZ, max_examples=80)
@given(body=bodies(DECODE), params=REPLY)
def test_fuzz_vqgan_decode(codec_server, body, params):
    send(codec_server, "POST", "/v1/vqgan/decode", body, params)
