"""/v1/references/* over real HTTP: lifecycle, negotiation, and path safety."""

from __future__ import annotations

import ormsgpack
import pytest

from conftest import add_reference, assert_speech, decode_wav, make_wav_bytes

TRAVERSAL_IDS = ["../x", "a/b", "..", "/etc", "a\\b", " lead", "x" * 256, "", "bad\n"]


def list_ids(server) -> list[str]:
    response = server.request("GET", "/v1/references/list", params={"format": "json"})
    assert response.status_code == 200
    return response.json()["reference_ids"]


def test_lifecycle(server):
    response = add_reference(server, "life voice")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "success": True,
        "message": "Reference voice 'life voice' added successfully",
        "reference_id": "life voice",
    }
    assert "life voice" in list_ids(server)
    assert (server.workdir / "references" / "life voice" / "sample.lab").read_text() == (
        "Hello there."
    )

    assert add_reference(server, "life voice").status_code == 409

    tts = server.request("POST", "/v1/tts", json={"text": "Hi.", "reference_id": "life voice"})
    assert tts.status_code == 200, tts.text
    assert tts.headers["x-voice-match"] == "approximate"
    assert_speech(*decode_wav(tts.content))

    renamed = server.request(
        "POST",
        "/v1/references/update",
        json={"old_reference_id": "life voice", "new_reference_id": "life-2"},
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["new_reference_id"] == "life-2"
    ids = list_ids(server)
    assert "life-2" in ids and "life voice" not in ids

    deleted = server.request("DELETE", "/v1/references/delete", json={"reference_id": "life-2"})
    assert deleted.status_code == 200
    assert deleted.json()["message"] == "Reference voice 'life-2' deleted successfully"
    assert "life-2" not in list_ids(server)
    again = server.request("DELETE", "/v1/references/delete", json={"reference_id": "life-2"})
    assert again.status_code == 404


@pytest.mark.parametrize("fmt, ext", [("FLAC", "flac"), ("MP3", "mp3"), ("OGG", "ogg")])
def test_upload_keeps_its_format(server, fmt, ext):
    response = add_reference(server, f"{ext}_voice", audio=make_wav_bytes(fmt=fmt))
    assert response.status_code == 200, response.text
    assert (server.workdir / "references" / f"{ext}_voice" / f"sample.{ext}").is_file()
    tts = server.request("POST", "/v1/tts", json={"text": "Hi.", "reference_id": f"{ext}_voice"})
    assert_speech(*decode_wav(tts.content))


def test_update_conflicts(server):
    assert add_reference(server, "upd_a").status_code == 200
    assert add_reference(server, "upd_b").status_code == 200
    exists = server.request(
        "POST",
        "/v1/references/update",
        json={"old_reference_id": "upd_a", "new_reference_id": "upd_b"},
    )
    assert exists.status_code == 409
    missing = server.request(
        "POST", "/v1/references/update", json={"old_reference_id": "nope", "new_reference_id": "n2"}
    )
    assert missing.status_code == 404
    same = server.request(
        "POST",
        "/v1/references/update",
        json={"old_reference_id": "upd_a", "new_reference_id": "upd_a"},
    )
    assert same.status_code == 400


def stored_entries(server) -> list[str]:
    root = server.workdir / "references"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_bad_uploads_are_rejected_and_leave_nothing(server):
    before = stored_entries(server)
    assert add_reference(server, "junk", audio=b"this is not audio at all" * 20).status_code == 400
    assert add_reference(server, "empty", audio=b"").status_code == 400
    assert add_reference(server, "notext", text="   ").status_code == 400
    missing_field = server.request(
        "POST", "/v1/references/add", data={"id": "nofile", "text": "t"}, files={"x": ("a", b"1")}
    )
    assert missing_field.status_code == 400
    assert stored_entries(server) == before


@pytest.mark.parametrize("bad_id", TRAVERSAL_IDS)
def test_unsafe_ids_are_rejected_on_every_route(server, bad_id):
    outside = server.workdir / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "keep.txt").write_text("keep")

    assert add_reference(server, bad_id).status_code == 400
    delete = server.request("DELETE", "/v1/references/delete", json={"reference_id": bad_id})
    assert delete.status_code == 400
    for body in (
        {"old_reference_id": bad_id, "new_reference_id": "fine"},
        {"old_reference_id": "fine", "new_reference_id": bad_id},
    ):
        assert server.request("POST", "/v1/references/update", json=body).status_code == 400
    tts = server.request("POST", "/v1/tts", json={"text": "hi", "reference_id": bad_id})
    assert tts.status_code == 400
    assert (outside / "keep.txt").read_text() == "keep"


def test_hand_made_folders_are_listed_and_usable(server):
    folder = server.workdir / "references" / "handmade" / "nested"
    folder.mkdir(parents=True)
    (folder / "take1.ogg").write_bytes(make_wav_bytes(fmt="OGG"))
    (folder / "take1.lab").write_text("A hand made voice.")
    no_lab = server.workdir / "references" / "no_transcript"
    no_lab.mkdir()
    (no_lab / "a.wav").write_bytes(make_wav_bytes())

    ids = list_ids(server)
    assert "handmade" in ids and "no_transcript" not in ids
    tts = server.request("POST", "/v1/tts", json={"text": "Hi.", "reference_id": "handmade"})
    assert tts.status_code == 200, tts.text


def test_negotiation(server):
    default = server.request("GET", "/v1/references/list")
    assert default.headers["content-type"] == "application/json"
    packed = server.request("GET", "/v1/references/list", params={"format": "msgpack"})
    assert packed.headers["content-type"] == "application/msgpack"
    assert ormsgpack.unpackb(packed.content)["success"] is True
    by_accept = server.request(
        "GET", "/v1/references/list", headers={"accept": "application/msgpack"}
    )
    assert by_accept.headers["content-type"] == "application/msgpack"
    json_wins = server.request("GET", "/v1/references/list", params={"format": "application/json"})
    assert json_wins.headers["content-type"] == "application/json"
    # A msgpack body for the JSON-bodied routes works too.
    update = server.request(
        "POST",
        "/v1/references/update",
        data=ormsgpack.packb({"old_reference_id": "nope2", "new_reference_id": "n3"}),
        headers={"content-type": "application/msgpack"},
    )
    assert update.status_code == 404


def test_reference_id_takes_precedence_over_inline_references(server):
    assert add_reference(server, "precedence").status_code == 200
    body = {
        "text": "Hi.",
        "reference_id": "precedence",
        # Undecodable on purpose: it must not even be looked at.
        "references": [{"audio": "bm90IGF1ZGlv", "text": "ignored"}],
    }
    response = server.request("POST", "/v1/tts", json=body)
    assert response.status_code == 200, response.text
    del body["reference_id"]
    assert server.request("POST", "/v1/tts", json=body).status_code == 400
