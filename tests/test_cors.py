"""CORS: a page on another origin runs the seed document's JavaScript with a key and gets
playable audio (headless Chromium); preflights are answered before the key is checked."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator

import pytest

from conftest import launch_server

# The seed document's fetch example, verbatim but for the address (the auth_server's key
# is the seed's placeholder, YOUR_API_KEY).
SEED_JS = """
async function generateSpeech(text, referenceId) {
  const response = await fetch('http://127.0.0.1:8080/v1/tts?format=json', {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      'Authorization': 'Bearer YOUR_API_KEY'
    },
    body: JSON.stringify({
      text: text,
      format: 'wav',
      reference_id: referenceId
    })
  });

  if (response.ok) {
    const audioBlob = await response.blob();
    const audioUrl = URL.createObjectURL(audioBlob);
    const audio = new Audio(audioUrl);
    audio.play();
  }
}
"""

# Records the element the seed creates and resolves once the browser has read the audio
# (headless Chromium may refuse play() without a gesture; reading it is what counts).
CAPTURE_AUDIO = """
window.audioLoaded = new Promise((resolve) => {
  const RealAudio = window.Audio;
  window.Audio = function (src) {
    const element = new RealAudio(src);
    element.addEventListener('loadedmetadata', () => resolve({duration: element.duration}));
    element.addEventListener('error', () => resolve({error: String(element.error.code)}));
    return element;
  };
});
"""


# Calls the seed's function; a failed fetch or a refused response ends the wait too.
RUN_SEED = """
(async () => {
  try {
    await generateSpeech('Hello from a browser on another origin.', null);
  } catch (error) {
    return {error: String(error)};
  }
  const late = new Promise((resolve) => setTimeout(() => resolve({error: 'no audio'}), 30000));
  return await Promise.race([window.audioLoaded, late]);
})()
"""


@pytest.fixture(scope="module")
def page_origin(tmp_path_factory) -> Iterator[str]:
    """A static page served from another port: another origin than the API."""
    root = tmp_path_factory.mktemp("page")
    (root / "index.html").write_text("<!doctype html><title>client</title>", encoding="utf-8")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_seed_javascript_gets_playable_audio_cross_origin(browser, auth_server, page_origin):
    port = auth_server.base_url.rsplit(":", 1)[1]
    script = SEED_JS.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    page = browser.new_page()
    try:
        page.goto(page_origin + "/index.html")
        page.add_script_tag(content=CAPTURE_AUDIO)
        page.add_script_tag(content=script)  # as a page would include it
        result = page.evaluate(RUN_SEED)
        assert "error" not in result, result
        assert result["duration"] > 1.0
    finally:
        page.close()


def test_preflight_is_answered_before_auth(auth_server):
    origin = "http://app.example"
    response = auth_server.session.options(
        auth_server.url("/v1/tts"),
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 200  # no key sent, yet not 401
    assert response.headers["access-control-allow-origin"] == "*"
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    # A real request from that origin may read the audio headers.
    reply = auth_server.request(
        "POST", "/v1/tts", json={"text": "Hi.", "format": "mp3"}, headers={"Origin": origin}
    )
    exposed = reply.headers["access-control-expose-headers"].lower()
    assert "content-disposition" in exposed and "x-voice-match" in exposed
    # Errors carry CORS headers too, so a page can read why it was refused.
    denied = auth_server.session.post(auth_server.url("/v1/tts"), headers={"Origin": origin})
    assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == "*"


def test_cors_can_be_limited_and_turned_off(tmp_path):
    limited = launch_server(tmp_path / "limited", "--cors-origins", "http://a.example")
    off = launch_server(tmp_path / "off", "--cors-origins", "")
    try:
        preflight = {"Access-Control-Request-Method": "POST"}
        ok = limited.session.options(
            limited.url("/v1/tts"), headers={"Origin": "http://a.example", **preflight}
        )
        assert ok.headers["access-control-allow-origin"] == "http://a.example"
        other = limited.session.options(
            limited.url("/v1/tts"), headers={"Origin": "http://b.example", **preflight}
        )
        assert "access-control-allow-origin" not in other.headers
        none = off.session.options(
            off.url("/v1/tts"), headers={"Origin": "http://a.example", **preflight}
        )
        assert "access-control-allow-origin" not in none.headers
    finally:
        limited.stop()
        off.stop()
