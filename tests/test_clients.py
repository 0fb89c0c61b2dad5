"""Clients this project did not write, against a real server with a key: the ``openai``
package, and the Fish Audio SDK's legacy ``fish_audio_sdk`` and new ``fishaudio`` modules
(HTTP and the live WebSocket)."""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import API_KEY, add_reference, assert_speech, decode_wav, make_wav_bytes
from fish_speech.audio.io import decode_audio

openai = pytest.importorskip("openai")
fish_audio_sdk = pytest.importorskip("fish_audio_sdk")
fishaudio = pytest.importorskip("fishaudio")


def saved_voice(server, voice_id: str) -> str:
    if voice_id not in server.request("GET", "/v1/references/list").json()["reference_ids"]:
        added = add_reference(server, voice_id, make_wav_bytes(1.0), "A saved voice.")
        assert added.status_code == 200, added.text
    return voice_id


# --- OpenAI ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openai_client(auth_server):
    return openai.OpenAI(api_key=API_KEY, base_url=auth_server.url("/v1"), max_retries=0)


def test_openai_speech_create_default_voice(openai_client):
    audio = openai_client.audio.speech.create(
        model="tts-1", voice="alloy", input="Hello from the OpenAI client.", response_format="wav"
    )
    assert_speech(*decode_wav(audio.content), min_seconds=1.0)


def test_openai_speech_streaming_saved_voice_and_speed(openai_client, auth_server):
    voice = saved_voice(auth_server, "openai_voice")
    with openai_client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice=voice,
        input="First sentence here. Second sentence there.",
        response_format="mp3",
        speed=1.5,
    ) as response:
        assert response.headers["x-voice-match"] == "approximate"
        chunks = list(response.iter_bytes())
    assert len(chunks) >= 2
    samples, rate = sf.read(io.BytesIO(b"".join(chunks)), dtype="float32")
    assert_speech(samples, rate, min_seconds=1.0)


def test_openai_pcm_is_24khz_and_opus_plays(openai_client):
    pcm = openai_client.audio.speech.create(
        model="tts-1", voice="nova", input="Raw samples.", response_format="pcm"
    )
    samples = np.frombuffer(pcm.content, "<i2").astype(np.float32) / 32768
    assert 0.4 < len(samples) / 24000 < 5  # read at 24 kHz, as OpenAI clients do
    opus = openai_client.audio.speech.create(
        model="tts-1", voice="nova", input="Opus audio.", response_format="opus"
    )
    clip = decode_audio(opus.content)
    assert clip.sample_rate == 48000 and len(clip.samples) > 0.4 * 48000


def test_openai_aac(openai_client):
    av = pytest.importorskip("av", reason="aac needs the optional PyAV package (the aac extra)")
    with openai_client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="Advanced audio coding. Twice.", response_format="aac"
    ) as response:
        assert response.headers["content-type"] == "audio/aac"
        chunks = list(response.iter_bytes())
    with av.open(io.BytesIO(b"".join(chunks))) as container:
        stream = container.streams.audio[0]
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
    assert stream.codec_context.name == "aac" and stream.rate == 44100
    assert_speech(samples, stream.rate, min_seconds=1.0)


def test_openai_sse_stream_format(auth_server):
    response = auth_server.request(
        "POST",
        "/v1/audio/speech",
        json={"model": "tts-1", "voice": "alloy", "input": "Events.", "stream_format": "sse"},
        stream=True,
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    import base64
    import json

    events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith(b"data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    samples, rate = sf.read(io.BytesIO(audio), dtype="float32")
    assert_speech(samples, rate)


def test_openai_errors(openai_client, auth_server):
    with pytest.raises(openai.NotFoundError):
        openai_client.audio.speech.create(model="tts-1", voice="nobody_saved", input="x")
    for body, fragment in [
        ({"voice": "alloy", "input": "x", "model": "dall-e"}, "unknown model"),
        ({"voice": "alloy", "input": "x", "model": "tts-1", "speed": 5}, "speed"),
        ({"voice": "alloy", "input": "x", "model": "tts-1", "response_format": "ogg"}, "format"),
        ({"voice": "alloy", "input": "x", "model": "tts-1", "instructions": "Be sad"}, "instr"),
        ({"voice": "alloy", "model": "tts-1"}, "input"),
    ]:
        response = auth_server.request("POST", "/v1/audio/speech", json=body)
        assert response.status_code == 400, response.text
        assert fragment in response.json()["detail"]
    denied = auth_server.session.post(auth_server.url("/v1/audio/speech"), json={})
    assert denied.status_code == 401 and "detail" in denied.json()


def test_openai_models_and_voices(openai_client, auth_server):
    assert "tts-1" in [model.id for model in openai_client.models.list()]
    voice = saved_voice(auth_server, "listed_voice")
    listing = auth_server.request("GET", "/v1/audio/voices").json()
    ids = [v["id"] for v in listing["voices"]]
    assert voice in ids and "alloy" in ids and listing["data"] == listing["voices"]


# --- Fish Audio SDK, legacy module -------------------------------------------------------


def test_legacy_sdk_tts_streams_with_prosody(auth_server):
    from fish_audio_sdk import Prosody, Session, TTSRequest

    session = Session(API_KEY, base_url=auth_server.base_url)
    request = TTSRequest(
        text="Legacy client. It streams as audio is made. A third sentence ends it.",
        format="wav",
        sample_rate=16000,
        prosody=Prosody(speed=1.25, volume=-3),
    )
    started, arrivals, chunks = time.perf_counter(), [], []
    for chunk in session.tts(request, backend="s1"):
        arrivals.append(time.perf_counter() - started)
        chunks.append(chunk)
    assert len(chunks) >= 2 and arrivals[0] < arrivals[-1], "tts() must be progressive"
    samples, rate = sf.read(io.BytesIO(b"".join(chunks)), dtype="float32")
    assert rate == 16000 and len(samples) / rate > 1.5


def test_legacy_sdk_websocket(auth_server):
    from fish_audio_sdk import TTSRequest, WebSocketSession

    def tokens():  # as a language model would send them
        yield from ["Hel", "lo ", "there", ". ", "This ", "is ", "live", " text."]

    with WebSocketSession(API_KEY, base_url=auth_server.base_url) as session:
        audio = b"".join(session.tts(TTSRequest(text="", format="mp3"), tokens()))
    samples, rate = sf.read(io.BytesIO(audio), dtype="float32")
    assert_speech(samples, rate, min_seconds=1.0)


def test_legacy_sdk_reports_errors(auth_server):
    from fish_audio_sdk import Session, TTSRequest
    from fish_audio_sdk.exceptions import HttpCodeErr

    with pytest.raises(HttpCodeErr) as error:
        list(Session("wrong key", base_url=auth_server.base_url).tts(TTSRequest(text="x")))
    assert error.value.status == 401


# --- Fish Audio SDK, new module ----------------------------------------------------------


@pytest.fixture(scope="module")
def fish_client(auth_server):
    return fishaudio.FishAudio(api_key=API_KEY, base_url=auth_server.base_url)


def test_new_sdk_convert_opus_with_saved_voice(fish_client, auth_server):
    from fishaudio.types import TTSConfig

    voice = saved_voice(auth_server, "sdk_voice")
    audio = fish_client.tts.convert(
        text="The new client speaks.",
        reference_id=voice,
        format="opus",
        config=TTSConfig(opus_bitrate=48, sample_rate=24000),
    )
    clip = decode_audio(audio)
    assert clip.container == "OGG" and clip.sample_rate == 24000
    assert len(clip.samples) / clip.sample_rate > 0.5


def test_new_sdk_stream_and_speed(fish_client):
    slow = fish_client.tts.stream(text="Speed check sentence.", format="pcm", speed=0.5)
    fast = fish_client.tts.stream(text="Speed check sentence.", format="pcm", speed=2.0)
    slow_s, fast_s = (len(s.collect()) / 2 / 44100 for s in (slow, fast))
    assert slow_s > 2.5 * fast_s  # 4x apart, give or take the voice's own variation


def test_new_sdk_websocket_with_flush(fish_client):
    from fishaudio.types import FlushEvent

    def events():
        yield "Hello from the "
        yield "new websocket client"
        yield FlushEvent()  # speak what is buffered now, without a sentence end
        yield ". And then some more."

    audio = b"".join(fish_client.tts.stream_websocket(events(), format="wav", latency="balanced"))
    assert audio[:4] == b"RIFF"
    assert_speech(*decode_wav(audio), min_seconds=1.0)


def test_new_sdk_async_websocket_reports_errors(auth_server):
    from fishaudio.exceptions import WebSocketError

    client = fishaudio.AsyncFishAudio(api_key=API_KEY, base_url=auth_server.base_url)

    async def texts():
        yield "Hi."

    async def run() -> None:
        async for _ in client.tts.stream_websocket(texts(), reference_id="nobody_saved"):
            pass

    with pytest.raises(BaseExceptionGroup) as error:  # httpx-ws wraps it in a task group
        asyncio.run(run())
    assert error.group_contains(WebSocketError)


def test_websocket_needs_the_key(auth_server):
    from httpx_ws import WebSocketUpgradeError

    client = fishaudio.FishAudio(api_key="wrong", base_url=auth_server.base_url)
    with pytest.raises(WebSocketUpgradeError) as error:
        list(client.tts.stream_websocket(iter(["Hi."])))
    assert error.value.response.status_code == 401


def live_session(server, events: list[dict], headers: dict | None = None) -> list[dict]:
    """The raw protocol: msgpack events in, every server event out."""
    import ormsgpack
    from websockets.sync.client import connect

    url = server.base_url.replace("http", "ws", 1) + "/v1/tts/live"
    with connect(url, additional_headers={**server.auth, **(headers or {})}) as ws:
        for event in events:
            ws.send(ormsgpack.packb(event))
        received = []
        while not received or received[-1]["event"] != "finish":
            received.append(ormsgpack.unpackb(ws.recv(timeout=60)))
    return received


def test_live_protocol_errors_say_why(auth_server):
    for events, fragment in [
        ([{"event": "text", "text": "hi"}], 'first event must be "start"'),
        ([{"event": "start", "request": {"reference_id": "nobody_saved"}}], "nobody_saved"),
        ([{"event": "start", "request": {"format": "opus", "sample_rate": 44100}}], "opus"),
        ([{"event": "start", "request": {}}, {"event": "dance"}], "unknown event 'dance'"),
    ]:
        finish = live_session(auth_server, events)[-1]
        assert finish["reason"] == "error" and fragment in finish["message"], finish
    bad_model = live_session(auth_server, [{"event": "start", "request": {}}], {"model": "x"})
    assert "unknown model" in bad_model[-1]["message"]


def test_live_audio_messages_fit_the_sdk_limit(auth_server):
    text = "A long sentence that makes a good amount of audio for the message size check."
    events = [{"event": "start", "request": {"format": "wav"}}, {"event": "text", "text": text}]
    received = live_session(auth_server, [*events, {"event": "stop"}])
    assert received[-1] == {"event": "finish", "reason": "stop"}
    audio = [e["audio"] for e in received if e["event"] == "audio"]
    assert len(audio) > 2 and max(len(a) for a in audio) <= 32 * 1024
    assert_speech(*decode_wav(b"".join(audio)), min_seconds=2.0)
