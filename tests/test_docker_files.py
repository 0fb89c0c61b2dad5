"""The Docker files agree with each other (no Docker daemon runs here to build them)."""

from __future__ import annotations

import os
import re
import subprocess

import yaml

from conftest import REPO


def dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def test_compose_mounts_the_three_folders_where_the_server_looks():
    workdir = re.findall(r"^WORKDIR (\S+)", dockerfile(), re.MULTILINE)[-1]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        targets = {volume.split(":")[1] for volume in service["volumes"]}
        assert targets == {f"{workdir}/{d}" for d in ("references", "data", "checkpoints")}, name
    cuda = compose["services"]["fish-speech-cuda"]
    assert "cu" in cuda["build"]["args"]["TORCH_INDEX"]
    assert cuda["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_dockerfile_copies_what_exists_and_downloads_no_weights():
    for line in re.findall(r"^COPY (.+)$", dockerfile(), re.MULTILINE):
        *sources, _ = line.split()
        for source in sources:
            assert (REPO / source).exists(), source
    assert not re.search(r"huggingface|hf_hub|\.pth|snapshot_download", dockerfile(), re.I)


def test_entrypoint_is_valid_sh():
    entrypoint = REPO / "docker" / "entrypoint.sh"
    assert os.access(entrypoint, os.X_OK)
    subprocess.run(["sh", "-n", str(entrypoint)], check=True)
