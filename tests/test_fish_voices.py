"""Saved voices are encoded once: their codes are kept beside them, read back after a
restart, and made again when the audio or the transcript changes."""

from __future__ import annotations

from conftest import TINY_FISH_ARGS, add_reference, launch_server, make_wav_bytes

SPEAK = {"text": "Hi.", "reference_id": "tone", "max_new_tokens": 4, "seed": 1}


def start(workdir):
    return launch_server(
        workdir,
        *TINY_FISH_ARGS,
    )


def prompts(server) -> tuple[int, int]:
    load = server.request("GET", "/v1/health").json()["load"]
    return load["reference_prompts_prepared"], load["reference_prompts_loaded"]


def speak(server) -> bytes:
    response = server.request("POST", "/v1/tts", json=SPEAK)
    assert response.status_code == 200, response.text
    return response.content


def test_saved_voice_codes_survive_a_restart_and_follow_edits(tmp_path):
    server = start(tmp_path)
    try:
        added = add_reference(server, "tone", make_wav_bytes(0.5, rate=44100), "A tone.")
        assert added.status_code == 200, added.text
        first = speak(server)
        assert prompts(server) == (1, 0)
        assert speak(server) == first and prompts(server) == (1, 1)
    finally:
        server.stop()
    voice = tmp_path / "references" / "tone"
    assert (voice / ".sample.prompt").is_file()
    server = start(tmp_path)
    try:
        assert speak(server) == first and prompts(server) == (0, 1), "re-encoded after restart"
        assert server.request("GET", "/v1/references/list").json()["reference_ids"] == ["tone"]
        (voice / "sample.lab").write_text("Another transcript.", encoding="utf-8")
        speak(server)
        assert prompts(server) == (1, 1), "a changed transcript must not reuse the old codes"
        speak(server)
        assert prompts(server) == (1, 2)
    finally:
        server.stop()
