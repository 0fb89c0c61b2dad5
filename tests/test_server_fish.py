"""The Fish engine and /v1/vqgan through a real server started on the tiny checkpoints."""

from __future__ import annotations

import base64
import json

import numpy as np
import ormsgpack
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import (
    TESTVECTORS,
    TINY_FISH_ARGS,
    assert_speech,
    decode_wav,
    launch_server,
    make_wav_bytes,
)
from fish_speech.models.precision import cpu_has_native_bf16

HOP = 2048


@pytest.fixture(scope="module")
def fish_server(tmp_path_factory):
    proc = launch_server(
        tmp_path_factory.mktemp("fish"),
        *TINY_FISH_ARGS,
    )
    yield proc
    proc.stop()


def msgpack_post(server, path: str, body: dict):
    return server.request(
        "POST",
        path,
        params={"format": "msgpack"},
        data=ormsgpack.packb(body),
        headers={"content-type": "application/msgpack"},
    )


def test_health_reports_fish_engine(fish_server):
    body = fish_server.request("GET", "/v1/health").json()
    assert body["engine"] == "fish"
    caps = body["capabilities"]
    assert caps["voice_match"] == "in-context"
    # The default precision follows the CPU: bf16 only where it has native bf16.
    native_bf16 = cpu_has_native_bf16()
    assert caps["precision"] == ("bfloat16" if native_bf16 else "float32")
    assert caps["codec_decode_precision"] == caps["precision"]
    assert caps["quantization"] is None
    assert native_bf16 == bool({"avx512_bf16", "amx_bf16"} & set(caps["cpu_flags"]))


def test_int8_float32_server_speaks_and_says_so(tmp_path_factory):
    proc = launch_server(
        tmp_path_factory.mktemp("fish-int8"),
        *TINY_FISH_ARGS,
        "--quantize",
        "int8",
        "--precision",
        "float32",
    )
    try:
        caps = proc.request("GET", "/v1/health").json()["capabilities"]
        assert (caps["precision"], caps["quantization"]) == ("float32", "int8")
        assert caps["codec_decode_precision"] == "float32"
        body = {"text": "Hello world.", "max_new_tokens": 8, "seed": 2}
        response = proc.request("POST", "/v1/tts", json=body)
        assert response.status_code == 200, response.text
        samples, rate = decode_wav(response.content)
        assert_speech(samples, rate, min_seconds=HOP / 44100)
    finally:
        proc.stop()


def test_tts_decodes_generated_codes(fish_server):
    body = {"text": "Hello world, 你好！", "max_new_tokens": 12, "seed": 7}
    first = fish_server.request("POST", "/v1/tts", json=body)
    assert first.status_code == 200, first.text
    samples, rate = decode_wav(first.content)
    assert len(samples) % HOP == 0 and 0 < len(samples) <= 11 * HOP
    assert_speech(samples, rate, min_seconds=HOP / 44100)
    again = fish_server.request("POST", "/v1/tts", json=body)
    assert again.content == first.content, "the same seed must give the same audio"


def test_frames_are_counted_in_the_log_and_metrics(fish_server):
    text = "Frames are counted here."
    response = fish_server.request("POST", "/v1/tts", json={"text": text, "max_new_tokens": 8})
    assert response.status_code == 200
    frames = len(decode_wav(response.content)[0]) // HOP  # one frame per hop of audio
    line = next(
        json.loads(entry.split("synthesis ", 1)[1])
        for entry in fish_server.log().splitlines()
        if f'"characters": {len(text)},' in entry
    )
    assert (line["engine"], line["frames"], line["outcome"]) == ("fish", frames, "ok")
    metrics = fish_server.request("GET", "/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    fps = {s.name: s.value for s in families["fish_speech_frames_per_second"].samples}
    assert fps["fish_speech_frames_per_second_count"] >= 1
    assert fps["fish_speech_frames_per_second_sum"] > 0


def test_documented_extremes_are_accepted(fish_server):
    body = {"text": "Hi.", "max_new_tokens": 4, "seed": 1, "repetition_penalty": 2.0, "top_p": 1.0}
    assert fish_server.request("POST", "/v1/tts", json=body).status_code == 200
    body.update(repetition_penalty=0.9, top_p=0.1, temperature=0.1)
    assert fish_server.request("POST", "/v1/tts", json=body).status_code == 200


def test_tts_with_reference_is_in_context(fish_server):
    audio = make_wav_bytes(0.5, rate=44100)
    body = {
        "text": "Hi.",
        "max_new_tokens": 6,
        "seed": 1,
        "references": [{"audio": base64.b64encode(audio).decode(), "text": "A tone."}],
    }
    response = fish_server.request("POST", "/v1/tts", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["x-voice-match"] == "in-context"


def test_streaming_sends_one_segment_per_chunk(fish_server):
    text = ("This sentence is long enough to make its own chunk of text here. " * 4).strip()
    body = {"text": text, "max_new_tokens": 5, "seed": 3, "streaming": True, "chunk_length": 100}
    response = fish_server.request("POST", "/v1/tts", json=body, stream=True)
    chunks = [c for c in response.iter_content(chunk_size=None) if c]
    assert len(chunks) >= 2
    assert b"".join(chunks)[:4] == b"RIFF"


def test_vqgan_encode_matches_the_original(fish_server):
    wav = (TESTVECTORS / "codec" / "test_waveform.wav").read_bytes()
    expected = np.load(TESTVECTORS / "codec" / "test_waveform_codes.npy")
    response = msgpack_post(fish_server, "/v1/vqgan/encode", {"audios": [wav, wav]})
    assert response.status_code == 200, response.text
    tokens = ormsgpack.unpackb(response.content)["tokens"]
    assert len(tokens) == 2
    np.testing.assert_array_equal(np.array(tokens[0]), expected)


def test_vqgan_decode_round_trip_msgpack_and_json(fish_server):
    codes = np.load(TESTVECTORS / "codec" / "given_codes.npy")
    expected = np.load(TESTVECTORS / "codec" / "given_codes_decoded.npy")
    response = msgpack_post(fish_server, "/v1/vqgan/decode", {"tokens": [codes.tolist()]})
    assert response.status_code == 200, response.text
    pcm = np.frombuffer(ormsgpack.unpackb(response.content)["audios"][0], "<f2")
    assert pcm.shape == (codes.shape[1] * HOP,)
    np.testing.assert_allclose(pcm.astype(np.float32), expected.reshape(-1), atol=2e-3)

    as_json = fish_server.request(
        "POST", "/v1/vqgan/decode", json={"tokens": [codes.tolist()]}, params={"format": "json"}
    )
    assert as_json.headers["content-type"] == "application/json"
    decoded = base64.b64decode(as_json.json()["audios"][0])
    assert decoded == pcm.tobytes()


@pytest.mark.parametrize(
    "tokens, fragment",
    [
        ([], "empty"),
        ([[[1, 2], [3]] * 2], "lengths"),
        ([[[1, 2]] * 3], "codebook rows"),
        ([[[1, 2]] * 4 + [[1, 2]]], "codebook rows"),
        ([[[5000, 1]] + [[1, 2]] * 3], "row 0"),
        ([[[1, 1]] + [[1, -2]] * 3], "row 1"),
        ([[[], [], [], []]], "no frames"),
    ],
)
def test_vqgan_decode_rejects_bad_grids(fish_server, tokens, fragment):
    response = msgpack_post(fish_server, "/v1/vqgan/decode", {"tokens": tokens})
    assert response.status_code == 400, response.text
    assert fragment in response.json()["detail"]


def test_vqgan_encode_rejects_bad_audio(fish_server):
    response = msgpack_post(fish_server, "/v1/vqgan/encode", {"audios": [b"not audio" * 40]})
    assert response.status_code == 400
    assert "audios[0]" in response.json()["detail"]
    empty = msgpack_post(fish_server, "/v1/vqgan/encode", {"audios": []})
    assert empty.status_code == 400


def test_a_seed_beyond_64_bits_is_a_400(fish_server):
    response = fish_server.request(
        "POST", "/v1/tts", json={"text": "Hi.", "max_new_tokens": 4, "seed": 2**70}
    )
    assert response.status_code == 400, response.text
    assert "detail" in response.json()


def test_vqgan_encode_is_held_to_the_reference_limits(fish_server):
    clip = make_wav_bytes(0.2, rate=8000)
    too_many = msgpack_post(fish_server, "/v1/vqgan/encode", {"audios": [clip] * 9})
    assert too_many.status_code == 400
    assert too_many.json()["detail"] == "audios: 9 given, the limit is 8"
    too_long = msgpack_post(
        fish_server, "/v1/vqgan/encode", {"audios": [make_wav_bytes(61, rate=8000)]}
    )
    assert too_long.status_code == 400
    assert "audios[0]: audio is longer than the limit of 60 s" in too_long.json()["detail"]
