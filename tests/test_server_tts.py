"""/v1/tts over real HTTP against the embedded engine: formats, streaming, errors."""

from __future__ import annotations

import base64
import io
import threading
import time

import numpy as np
import ormsgpack
import pytest
import soundfile as sf

from conftest import assert_speech, decode_wav, make_wav_bytes
from fish_speech.utils.schema import ServeReferenceAudio, ServeTTSRequest

LONG_TEXT = " ".join(
    [
        "The quick brown fox jumps over the lazy dog.",
        "A second sentence arrives a little later.",
        "Streaming sends every sentence as soon as it is ready.",
        "This is the fourth sentence of the test.",
    ]
)


def post_tts(server, body: dict, **kwargs):
    return server.request("POST", "/v1/tts", json=body, **kwargs)


def post_tts_msgpack(server, request: ServeTTSRequest, **kwargs):
    return server.request(
        "POST",
        "/v1/tts",
        params={"format": "msgpack"},
        data=ormsgpack.packb(request, option=ormsgpack.OPT_SERIALIZE_PYDANTIC),
        headers={"content-type": "application/msgpack"},
        **kwargs,
    )


def test_english_wav_json(server):
    response = post_tts(server, {"text": "Hello world, this is a test of the server."})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["content-disposition"] == "attachment; filename=audio.wav"
    samples, rate = decode_wav(response.content)
    assert_speech(samples, rate, min_seconds=1.0)


def test_chinese_msgpack(server):
    response = post_tts_msgpack(server, ServeTTSRequest(text="你好，这是测试文本。"))
    assert response.status_code == 200, response.text
    samples, rate = decode_wav(response.content)
    assert_speech(samples, rate, min_seconds=0.8)


def test_pcm_is_raw_int16(server):
    response = post_tts(server, {"text": "Raw samples please.", "format": "pcm"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == "attachment; filename=audio.pcm"
    assert not response.content.startswith(b"RIFF")
    assert len(response.content) % 2 == 0
    samples = np.frombuffer(response.content, "<i2").astype(np.float32) / 32768
    assert_speech(samples, 44100)


def test_mp3(server):
    response = post_tts(server, {"text": "Compressed audio please.", "format": "mp3"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/mpeg"
    samples, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    assert_speech(samples, rate)


def streamed_chunks(response) -> list[bytes]:
    return [chunk for chunk in response.iter_content(chunk_size=None) if chunk]


def test_streaming_wav_arrives_in_several_chunks_with_header(server):
    response = post_tts(server, {"text": LONG_TEXT, "streaming": True}, stream=True)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    chunks = streamed_chunks(response)
    assert len(chunks) >= 2, "streaming must deliver audio incrementally"
    body = b"".join(chunks)
    assert body[:4] == b"RIFF" and body[8:16] == b"WAVEfmt "
    samples, rate = decode_wav(body)  # libsndfile accepts the open-ended header
    assert_speech(samples, rate, min_seconds=3.0)


def test_streaming_first_audio_before_the_end(server):
    started = time.perf_counter()
    response = post_tts(server, {"text": LONG_TEXT * 2, "streaming": True}, stream=True)
    arrivals = [time.perf_counter() - started for _ in response.iter_content(chunk_size=None)]
    assert len(arrivals) >= 2
    assert arrivals[0] < arrivals[-1]


def test_streaming_pcm_and_mp3(server):
    pcm = post_tts(server, {"text": LONG_TEXT, "streaming": True, "format": "pcm"}, stream=True)
    chunks = streamed_chunks(pcm)
    assert len(chunks) >= 2 and not chunks[0].startswith(b"RIFF")
    samples = np.frombuffer(b"".join(chunks), "<i2").astype(np.float32) / 32768
    assert_speech(samples, 44100, min_seconds=3.0)

    mp3 = post_tts(server, {"text": LONG_TEXT, "streaming": True, "format": "mp3"}, stream=True)
    assert mp3.headers["content-type"] == "audio/mpeg"
    samples, rate = sf.read(io.BytesIO(b"".join(streamed_chunks(mp3))), dtype="float32")
    assert_speech(samples, rate, min_seconds=3.0)


def test_inline_references_json_and_msgpack(server):
    audio = make_wav_bytes(1.5)
    body = {
        "text": "Speak like the reference.",
        "references": [{"audio": base64.b64encode(audio).decode(), "text": "A tone."}],
    }
    response = post_tts(server, body)
    assert response.status_code == 200, response.text
    assert response.headers["x-voice-match"] == "approximate"
    assert_speech(*decode_wav(response.content))

    request = ServeTTSRequest(
        text="Speak like the reference.",
        references=[ServeReferenceAudio(audio=audio, text="A tone.")],
        use_memory_cache="on",
    )
    for _ in range(2):  # the second request is served from the reference cache
        response = post_tts_msgpack(server, request)
        assert response.status_code == 200, response.text
        assert_speech(*decode_wav(response.content))


def test_plain_request_has_no_voice_match_header(server):
    response = post_tts(server, {"text": "No reference here."})
    assert "x-voice-match" not in response.headers


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"text": "hi", "top_p": 5}, "top_p"),
        ({"text": "hi", "temperature": 0.0}, "temperature"),
        ({"text": "hi", "repetition_penalty": 3}, "repetition_penalty"),
        ({"text": "hi", "chunk_length": 50}, "chunk_length"),
        ({"text": "hi", "max_new_tokens": -1}, "max_new_tokens"),
        ({"text": "hi", "format": "ogg"}, "format"),
        ({"text": "hi", "use_memory_cache": True}, "use_memory_cache"),
        ({"format": "wav"}, "text"),
        ({"text": "   "}, "empty"),
        ({"text": "x" * 2001}, "too long"),
        ({"text": "hi", "reference_id": "../etc"}, "reference"),
        ({"text": "hi", "reference_id": "a/b"}, "reference"),
        ({"text": "hi", "references": [{"audio": "not base64!", "text": "t"}]}, "audio"),
        ({"text": "hi", "references": [{"audio": "AAAA", "text": "t"}]}, "references[0]"),
    ],
)
def test_invalid_requests_are_400(server, body, fragment):
    response = post_tts(server, body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["detail"]


def test_unknown_reference_id_is_404(server):
    response = post_tts(server, {"text": "hi", "reference_id": "nobody_here"})
    assert response.status_code == 404
    assert "nobody_here" in response.json()["detail"]


def test_malformed_bodies(server):
    bad_json = server.request(
        "POST", "/v1/tts", data=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400 and "JSON" in bad_json.json()["detail"]
    bad_msgpack = server.request(
        "POST", "/v1/tts", data=b"\xc1\xc1", headers={"content-type": "application/msgpack"}
    )
    assert bad_msgpack.status_code == 400 and "msgpack" in bad_msgpack.json()["detail"]
    not_a_map = server.request("POST", "/v1/tts", json=[1, 2])
    assert not_a_map.status_code == 400
    wrong_type = server.request(
        "POST", "/v1/tts", data=b"text=hi", headers={"content-type": "text/plain"}
    )
    assert wrong_type.status_code == 415 and "detail" in wrong_type.json()


def test_emoji_only_text_is_a_clear_400(server):
    response = post_tts(server, {"text": "🙂🙂🙂"})
    assert response.status_code == 400
    assert "No speech" in response.json()["detail"]


def test_health_answers_while_synthesis_runs(server):
    long_text = " ".join([LONG_TEXT] * 10)  # under the 2000-character limit
    result: dict = {}

    def synthesise() -> None:
        result["response"] = post_tts(server, {"text": long_text})
        result["finished"] = time.perf_counter()

    worker = threading.Thread(target=synthesise)
    worker.start()
    time.sleep(0.5)
    health_times = []
    while worker.is_alive() and len(health_times) < 5:
        started = time.perf_counter()
        health = server.request("GET", "/v1/health", timeout=5)
        assert health.status_code == 200
        health_times.append((started, time.perf_counter()))
        time.sleep(0.1)
    worker.join()
    assert result["response"].status_code == 200
    assert health_times, "synthesis finished before health could be checked"
    # Health was answered (start and end) before the long request finished.
    assert health_times[0][1] < result["finished"]
