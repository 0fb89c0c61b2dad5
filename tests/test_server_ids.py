"""Ids over real HTTP: the step_id rule, and traversal attempts on every id-taking field
against sentinel files outside the server's folders, which must be neither read nor touched."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import ormsgpack
import pytest

from conftest import make_wav_bytes

BAD_IDS = ["../../x", "a/b", "..", "a\\b", " lead", "trail ", "x" * 256, "bad\n", "a.b", "\0"]


def create(server, step_id, text: str = "Hi.") -> object:
    body = {"step_id": step_id, "text": text, "format": "wav"}
    return server.request("POST", "/generate_audio_enhanced_async", json=body)


@pytest.mark.parametrize(
    "step_id",
    [
        str(uuid.uuid4()),
        uuid.uuid4().hex,
        str(int(time.time())),
        str(time.time_ns()),
        time.strftime("%Y%m%d_%H%M%S"),
        time.strftime("%Y-%m-%d-%H-%M-%S"),
        "task_001",
        "Task 42",
    ],
)
def test_clients_usual_step_ids_are_accepted(server, step_id):
    response = create(server, step_id)
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 60
    while (status := server.request("GET", f"/get_task_status/{quote(step_id)}").json())[
        "status"
    ] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status["download_url"] == f"/download_result/{quote(step_id, safe='')}"
    assert server.request("GET", status["download_url"]).status_code == 200


@pytest.mark.parametrize("step_id", BAD_IDS + ["", 5, None])
def test_other_step_ids_are_400(server, step_id):
    response = create(server, step_id)
    assert response.status_code == 400, response.text
    assert "step_id" in response.json()["detail"]


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under ``root`` except the server's own: what and when."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] in ("references", "data") or path.suffix == ".log":
            continue
        stat = path.stat()
        content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        found[str(relative)] = (content, stat.st_mtime_ns)
    return found


def plant_sentinels(root: Path) -> list[Path]:
    """A voice-shaped folder and a file outside references/ and data/."""
    voice = root / "outside"
    voice.mkdir(exist_ok=True)
    (voice / "sample.wav").write_bytes(make_wav_bytes(0.5))
    (voice / "sample.lab").write_text("Secret words.")
    (root / "outside.txt").write_text("secret")
    return [voice / "sample.wav", voice / "sample.lab", root / "outside.txt"]


def arm_access_times(files: list[Path]) -> dict[Path, int]:
    """Put each access time before the modification time: with relatime (or strictatime)
    any later read of the file moves it."""
    for path in files:
        stat = path.stat()
        os.utime(path, ns=(stat.st_mtime_ns - 10**11, stat.st_mtime_ns))
    return {path: path.stat().st_atime_ns for path in files}


def traversal_ids(root: Path) -> list[str]:
    outside = str(root / "outside")
    return [
        "../outside",
        "../../outside",
        "..",
        outside,
        "references/../outside",
        "..\\outside",
        "outside/..",
        "./outside",
        "../outside.txt",
        outside + "\n",
    ]


def every_id_field(server, bad: str) -> list:
    """One request per id-taking field (and form) of the API."""
    wav = make_wav_bytes(0.5)
    # Dots encoded too: a client would otherwise collapse "/x/.." to "/" before sending.
    quoted = quote(bad, safe="").replace(".", "%2E")
    return [
        server.request("POST", "/v1/tts", json={"text": "Hi.", "reference_id": bad}),
        server.request(
            "POST",
            "/v1/tts",
            data=ormsgpack.packb({"text": "Hi.", "reference_id": bad}),
            headers={"content-type": "application/msgpack"},
        ),
        server.request(
            "POST",
            "/v1/references/add",
            files={"audio": ("v.wav", wav, "audio/wav")},
            data={"id": bad, "text": "Hello."},
        ),
        server.request("DELETE", "/v1/references/delete", json={"reference_id": bad}),
        server.request(
            "POST",
            "/v1/references/update",
            json={"old_reference_id": bad, "new_reference_id": "renamed"},
        ),
        server.request(
            "POST",
            "/v1/references/update",
            json={"old_reference_id": "nobody", "new_reference_id": bad},
        ),
        create(server, bad),
        server.request(
            "POST",
            "/generate_audio_enhanced_async",
            json={"step_id": "fine", "text": "Hi.", "reference_id": bad},
        ),
        server.request("GET", f"/get_task_status/{quoted}"),
        server.request("GET", "/get_task_status", params={"step_id": bad}),
        server.request("GET", f"/download_result/{quoted}"),
        server.request("GET", "/download_result", params={"step_id": bad}),
        server.request("POST", f"/stop_async_task/{quoted}"),
    ]


def test_traversal_on_every_id_field_neither_reads_nor_touches_outside_files(server):
    root = server.workdir
    sentinels = plant_sentinels(root)
    before = snapshot(root)
    access_times = arm_access_times(sentinels)
    for bad in traversal_ids(root):
        for response in every_id_field(server, bad):
            assert 400 <= response.status_code < 500, (bad, response.request.url, response.text)
            assert isinstance(response.json()["detail"], str)
    assert {path: path.stat().st_atime_ns for path in sentinels} == access_times, "read"
    assert snapshot(root) == before, "something outside references/ and data/ changed"
