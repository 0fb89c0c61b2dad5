"""The web page at / in headless Chromium, against a real server that needs an API key.

The page runs under its Content-Security-Policy (no eval), so waits use selectors or
functions, never expression strings.

One server and one browser page for the module; each test starts from a fresh load of the
page. Screenshots go to pytest's temporary folder (printed with -s), never the repository.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import soundfile as sf

from conftest import API_KEY, ServerProcess, assert_speech, launch_server, make_wav_bytes

LONG = " ".join(["This background task keeps the engine busy for a little while."] * 80)


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = launch_server(tmp_path_factory.mktemp("web_server"), api_key=API_KEY)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("screenshots")
    print(f"\nweb page screenshots: {folder}")
    return folder


KEY_STORAGE = "fish-speech.api-key"  # where the page keeps the key (web/api.js)


def new_tab(context):
    tab = context.new_page()
    tab.errors = []
    tab.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    tab.on("dialog", lambda dialog: dialog.accept())  # "Delete the voice ...?"
    return tab


@pytest.fixture(scope="module")
def context(browser):
    """A browser profile in which the key was entered before (as a returning user has)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    ctx.add_init_script(f"localStorage.setItem({KEY_STORAGE!r}, {API_KEY!r})")
    yield ctx
    ctx.close()


@pytest.fixture
def page(context):
    tab = new_tab(context)
    yield tab
    tab.close()
    assert not tab.errors, tab.errors


def open_page(page, server: ServerProcess) -> None:
    page.goto(server.url("/"))
    page.wait_for_selector("body[data-ready=true]")


def server_voices(server: ServerProcess) -> list[str]:
    return server.request("GET", "/v1/references/list").json()["reference_ids"]


def test_the_key_is_asked_for_once_and_kept(browser, web_server, shots):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = new_tab(context)
    try:
        check_key_flow(page, web_server, shots)
        assert not page.errors, page.errors
    finally:
        context.close()


def check_key_flow(page, web_server, shots):
    page.goto(web_server.url("/"))
    dialog = page.locator("#key-dialog")
    dialog.wait_for(state="visible")
    page.screenshot(path=shots / "key-dialog.png")
    page.fill("#key-dialog-input", API_KEY)
    page.click("#key-save")
    page.wait_for_selector("#engine-badge:text-is('embedded')")
    assert page.locator("#engine-limitations li").count() >= 3
    assert "approximate" in page.inner_text("#engine-facts")
    # Sampling settings are ignored by this engine, and the page says so.
    assert page.locator("#sampling-note").is_visible() or "temperature" in page.inner_text(
        "#engine-limitations"
    )
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector("#engine-badge:text-is('embedded')")
    assert not dialog.is_visible()
    options = page.locator("#format option").all_inner_texts()
    assert {"wav", "mp3", "pcm"} <= set(options)


@pytest.mark.parametrize(
    "fmt, streaming, source",
    [("wav", True, "file"), ("mp3", True, "media-source"), ("pcm", False, "file")],
)
def test_speak_plays_and_downloads(page, web_server, shots, fmt, streaming, source):
    open_page(page, web_server)
    page.fill("#text", "The page speaks. Then it speaks a second sentence.")
    page.select_option("#format", fmt)
    page.set_checked("#streaming", streaming)
    page.click("#speak-button")
    page.wait_for_selector("#speak-status:has-text('done in')", timeout=60000)
    assert "First audio after" in page.inner_text("#speak-status")
    # The <audio> element holds a source the browser can play: metadata decoded, no error.
    page.wait_for_function(
        """() => { const a = document.getElementById('audio');
                   return a.readyState >= 2 && !a.error && (a.duration > 1 ||
                          (a.buffered.length > 0 && a.buffered.end(0) > 1)); }""",
        timeout=30000,
    )
    assert page.get_attribute("#audio", "data-source") == source
    if streaming and fmt != "mp3":
        # Played while it streamed, through Web Audio.
        assert float(page.get_attribute("#player", "data-streamed-seconds")) > 1
    page.screenshot(path=shots / f"speak-{fmt}.png")

    with page.expect_download() as download_info:
        page.click("#download")
    download = download_info.value
    assert download.suggested_filename == f"speech.{fmt}"
    data = open(download.path(), "rb").read()
    if fmt == "pcm":
        samples = (
            sf.read(io.BytesIO(data), samplerate=44100, channels=1, subtype="PCM_16", format="RAW")
        )[0].astype("float32")
        assert_speech(samples, 44100, min_seconds=1)
    else:
        assert_speech(*sf.read(io.BytesIO(data), dtype="float32"), min_seconds=1)


def test_voice_upload_rename_delete(page, web_server, shots, tmp_path):
    open_page(page, web_server)
    clip = tmp_path / "voice.wav"
    clip.write_bytes(make_wav_bytes(seconds=1.5))
    page.fill("#voice-id", "page voice")
    page.fill("#voice-text", "A reference clip.")
    page.set_input_files("#voice-file", str(clip))
    page.click("#voice-add")
    page.wait_for_selector("li[data-voice='page voice']")
    assert server_voices(web_server) == ["page voice"]
    assert page.locator("#voice option[value='page voice']").count() == 1
    page.screenshot(path=shots / "voice-added.png")

    page.click("li[data-voice='page voice'] >> text=Rename")
    page.fill("li[data-voice='page voice'] input.rename-input", "renamed voice")
    page.click("li[data-voice='page voice'] >> text=Save")
    page.wait_for_selector("li[data-voice='renamed voice']")
    assert server_voices(web_server) == ["renamed voice"]

    page.click("li[data-voice='renamed voice'] >> text=Delete")
    page.wait_for_selector("li[data-voice]", state="detached")
    assert server_voices(web_server) == []
    assert "Deleted" in page.inner_text("#voice-status")


def test_recorded_voice_is_stored_as_wav(page, web_server, shots):
    """MediaRecorder gives WebM/Opus, which libsndfile cannot read: the page sends WAV."""
    open_page(page, web_server)
    page.click("#record-button")
    page.wait_for_selector("#record-button:has-text('Stop')")
    page.wait_for_timeout(1200)
    page.click("#record-button")
    page.wait_for_selector("#recording:not([hidden])")
    page.fill("#voice-id", "recorded")
    page.fill("#voice-text", "Recorded in the browser.")
    page.click("#voice-add")
    page.wait_for_selector("li[data-voice='recorded']")
    page.screenshot(path=shots / "voice-recorded.png")
    folder = web_server.workdir / "references" / "recorded"
    stored = sorted(p for p in folder.iterdir() if p.suffix != ".lab")
    assert [p.suffix for p in stored] == [".wav"]
    samples, rate = sf.read(stored[0], dtype="float32")
    assert len(samples) / rate > 0.8
    # The recorded voice is usable for synthesis.
    reply = web_server.request(
        "POST", "/v1/tts", json={"text": "With the recorded voice.", "reference_id": "recorded"}
    )
    assert reply.status_code == 200 and reply.headers["x-voice-match"] == "approximate"
    web_server.request("DELETE", "/v1/references/delete", json={"reference_id": "recorded"})


def test_background_tasks_progress_download_cancel(page, web_server, shots):
    open_page(page, web_server)
    page.fill("#text", "A short background task.")
    page.select_option("#format", "wav")
    page.click("#task-button")
    done = page.locator("#task-rows tr[data-status=completed]")
    done.first.wait_for(timeout=60000)
    assert "100%" in done.first.inner_text()
    with page.expect_download() as download_info:
        done.first.locator("text=Download").click()
    assert download_info.value.suggested_filename.endswith(".wav")
    data = open(download_info.value.path(), "rb").read()
    assert_speech(*sf.read(io.BytesIO(data), dtype="float32"))

    page.fill("#text", LONG)
    page.click("#task-button")
    running = page.locator("#task-rows tr[data-status=processing]")
    running.first.wait_for(timeout=30000)
    # Progress moves while the task runs (the page polls GET /v1/tasks).
    page.wait_for_function(
        """() => { const bar = document.querySelector(
                       '#task-rows tr[data-status=processing] progress');
                   return bar && bar.value > 0 && bar.value < 1; }""",
        timeout=30000,
    )
    page.screenshot(path=shots / "task-running.png")
    running.first.locator("text=Cancel").click()
    page.locator("#task-rows tr[data-status=cancelled]").first.wait_for(timeout=30000)
    step_id = page.get_attribute("#task-rows tr[data-status=cancelled]", "data-task")
    status = web_server.request("GET", f"/get_task_status/{step_id}").json()
    assert status["status"] == "cancelled" and 0 < status["progress"] < 1
