"""/v1/tts output fields of the hosted Fish API: formats, rates, bitrates, prosody, latency.

Audio is decoded and checked (rate, duration, not silence). Exact-duration checks use the
Fish engine on the tiny checkpoints with a seed, which gives the same audio every time.
"""

from __future__ import annotations

import io

import numpy as np
import ormsgpack
import pytest
import soundfile as sf

from conftest import TINY_FISH_ARGS, launch_server
from fish_speech.audio.io import decode_audio

TEXT = "Hello there. This is a second sentence."


def post(server, body: dict, **kwargs):
    return server.request("POST", "/v1/tts", json={"text": TEXT, **body}, **kwargs)


def decoded(data: bytes, fmt: str, rate: int) -> tuple[np.ndarray, int]:
    if fmt == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768, rate
    clip = decode_audio(data)  # libsndfile; reads streamed FLAC of unknown length too
    return clip.samples, clip.sample_rate


def assert_audio(samples: np.ndarray, rate: int, expected_rate: int, min_seconds: float = 1.0):
    assert rate == expected_rate
    assert len(samples) / rate >= min_seconds, f"only {len(samples) / rate:.2f} s"
    assert float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > 0.01, "silent"


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize(
    "fmt, rate, media_type, magic",
    [
        ("opus", None, "audio/ogg", b"OggS"),
        ("opus", 16000, "audio/ogg", b"OggS"),
        ("flac", None, "audio/flac", b"fLaC"),
        ("flac", 22050, "audio/flac", b"fLaC"),
        ("wav", 8000, "audio/wav", b"RIFF"),
        ("pcm", 16000, "application/octet-stream", None),
        ("mp3", 24000, "audio/mpeg", None),
    ],
)
def test_formats_and_sample_rates(server, fmt, rate, media_type, magic, streaming):
    body = {"format": fmt, "streaming": streaming}
    if rate is not None:
        body["sample_rate"] = rate
    response = post(server, body, stream=streaming)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    assert response.headers["content-disposition"] == f"attachment; filename=audio.{fmt}"
    chunks = [c for c in response.iter_content(chunk_size=None) if c]
    if streaming:
        assert len(chunks) >= 2, "a streamed reply arrives in pieces"
    data = b"".join(chunks)
    if magic:
        assert data.startswith(magic)
    expected_rate = rate or (48000 if fmt == "opus" else 44100)
    assert_audio(*decoded(data, fmt, expected_rate), expected_rate)


def test_bitrates_change_the_size(server):
    sizes = {}
    for field, value in [("mp3_bitrate", 64), ("mp3_bitrate", 192)]:
        response = post(server, {"format": "mp3", field: value})
        samples, rate = sf.read(io.BytesIO(response.content))
        sizes[value] = len(response.content) * 8 / (len(samples) / rate) / 1000
    assert 55 < sizes[64] < 75 and 175 < sizes[192] < 210, sizes
    opus = {}
    for value in (24, 64000, -1000):  # kbps, bit/s and auto: the SDKs send all three
        response = post(server, {"format": "opus", "opus_bitrate": value})
        assert response.status_code == 200, response.text
        clip = decode_audio(response.content)
        opus[value] = len(response.content) * 8 / (len(clip.samples) / clip.sample_rate) / 1000
    assert 20 < opus[24] < 36 and 55 < opus[64000] < 80, opus


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def test_volume_and_loudness(server):
    # pcm at a fixed rate so samples compare directly; the embedded voice varies a little
    # between calls, so compare levels, not samples.
    quiet = post(server, {"format": "pcm", "prosody": {"volume": -12}})
    plain = post(server, {"format": "pcm"})
    level = [rms(decoded(r.content, "pcm", 44100)[0]) for r in (quiet, plain)]
    assert 0.2 < level[0] / level[1] < 0.3  # -12 dB is a factor 0.25
    import pyloudnorm

    normalised = post(server, {"format": "wav", "prosody": {"normalize_loudness": True}})
    samples, rate = sf.read(io.BytesIO(normalised.content))
    assert abs(pyloudnorm.Meter(rate).integrated_loudness(samples) + 20) < 1.5


def test_explicit_nulls_mean_defaults(server):
    body = {"prosody": None, "sample_rate": None, "reference_id": None, "top_p": None}
    response = server.request(
        "POST",
        "/v1/tts",
        data=ormsgpack.packb({"text": "Nulls are fine.", **body}),
        headers={"content-type": "application/msgpack"},
    )
    assert response.status_code == 200, response.text
    assert_audio(*sf.read(io.BytesIO(response.content)), 44100, min_seconds=0.3)


def test_embedded_latency_modes(server):
    text = "First part, second part, third part. Another sentence here."
    first = {}
    for latency in ("normal", "balanced", "low"):
        body = {"text": text, "format": "pcm", "latency": latency, "streaming": True}
        response = post(server, body, stream=True)
        assert response.status_code == 200, response.text
        first[latency] = len(next(c for c in response.iter_content(chunk_size=None) if c))
        response.close()
    # normal sends the whole first sentence first; balanced and low only its first clause
    # (even if a slow reader got two clauses in one read, that is still less).
    assert first["balanced"] < 0.75 * first["normal"], first
    assert first["low"] < 0.75 * first["normal"], first


def test_hosted_sdk_requests_stream_without_the_field(server):
    """The hosted API's SDKs send a model header and no streaming field: they get a stream
    (a wav with an open-ended header); the seed's clients, without the header, do not."""
    hosted = post(server, {"format": "wav"}, headers={"model": "s1"}, stream=True)
    data = b"".join(hosted.iter_content(chunk_size=None))
    assert data[40:44] == b"\xdb\xff\xff\xff"  # open-ended data size
    plain = post(server, {"format": "wav"})
    assert plain.content[40:44] != b"\xdb\xff\xff\xff"


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"format": "opus", "sample_rate": 44100}, "use one of 8000, 12000"),
        ({"format": "mp3", "sample_rate": 44000}, "sample_rate"),
        ({"format": "wav", "sample_rate": 96000}, "between 8000 and 48000"),
        ({"format": "pcm", "sample_rate": 4000}, "between 8000 and 48000"),
        ({"sample_rate": "fast"}, "sample_rate"),
        ({"mp3_bitrate": 100}, "mp3_bitrate"),
        ({"opus_bitrate": 40}, "opus_bitrate"),
        ({"prosody": {"speed": 2.5}}, "prosody.speed"),
        ({"prosody": {"speed": 0.4}}, "prosody.speed"),
        ({"prosody": {"volume": 30}}, "prosody.volume"),
        ({"prosody": {"normalize_loudness": "loud"}}, "normalize_loudness"),
        ({"prosody": 2}, "prosody"),
        ({"latency": "fastest"}, "latency"),
        ({"format": "aac"}, "format"),
    ],
)
def test_bad_field_values_are_400(server, body, fragment):
    response = post(server, body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["detail"]


def test_unknown_model_header_is_400(server):
    response = post(server, {}, headers={"model": "gpt-9"})
    assert response.status_code == 400
    assert "unknown model 'gpt-9'" in response.json()["detail"]


@pytest.fixture(scope="module")
def fish_server(tmp_path_factory):
    proc = launch_server(
        tmp_path_factory.mktemp("fish-output"),
        *TINY_FISH_ARGS,
    )
    yield proc
    proc.stop()


def test_speed_two_halves_the_duration(fish_server):
    body = {"text": "Hello world.", "max_new_tokens": 24, "seed": 5, "format": "pcm"}
    durations = []
    for prosody in (None, {"speed": 2.0}, {"speed": 0.5}):
        response = fish_server.request("POST", "/v1/tts", json={**body, "prosody": prosody})
        assert response.status_code == 200, response.text
        durations.append(len(response.content) / 2 / 44100)
    normal, fast, slow = durations
    assert normal > 0.2
    assert abs(fast / normal - 0.5) < 0.05  # within 10 % of half
    assert abs(slow / normal - 2.0) < 0.2


def test_async_task_in_opus(server):
    import time

    created = server.request(
        "POST",
        "/generate_audio_enhanced_async",
        json={"step_id": "opus_task", "text": "An async task in Opus.", "format": "opus"},
    )
    assert created.status_code == 200, created.text
    deadline = time.monotonic() + 120
    while (state := server.request("GET", "/get_task_status/opus_task").json())["status"] in (
        "pending",
        "processing",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert state["status"] == "completed", state
    result = server.request("GET", state["download_url"])
    assert result.headers["content-type"] == "audio/ogg"
    assert_audio(*decoded(result.content, "opus", 48000), 48000)
