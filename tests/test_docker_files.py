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


SCALE_OUT = REPO / "docker" / "scale-out"


def test_scale_out_compose_puts_every_instance_on_the_one_redis_behind_nginx():
    compose = yaml.safe_load((SCALE_OUT / "docker-compose.yml").read_text())
    services = compose["services"]
    instances = [name for name in services if name.startswith("fish-speech")]
    assert len(instances) >= 2
    redis_command = services["redis"]["command"]
    assert "--appendonly" in redis_command  # a Redis restart keeps the queue
    upstream = re.search(
        r"upstream fish_speech \{(.*?)\}", (SCALE_OUT / "nginx.conf").read_text(), re.S
    )
    listed = set(re.findall(r"server ([\w-]+):8080", upstream.group(1)))
    assert listed == set(instances)
    for name in instances:
        command = services[name]["command"]
        url = command[command.index("--redis-url") + 1]
        assert url.startswith("redis://redis:")  # the compose service, not localhost
        assert (SCALE_OUT / services[name]["build"] / "Dockerfile").exists()
    assert "redis" in re.search(r'pip install "\.\[([^\]]+)\]"', dockerfile()).group(1)


def test_kubernetes_example_points_the_replicas_at_its_redis_and_real_routes():
    from fish_speech.server.config import build_parser

    documents = list(
        yaml.safe_load_all((REPO / "docker" / "kubernetes" / "fish-speech.yaml").read_text())
    )
    by_kind = {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}
    container = by_kind[("Deployment", "fish-speech")]["spec"]["template"]["spec"]["containers"][0]
    options = build_parser().parse_args(container["args"])  # every flag is a real one
    assert options.redis_url.startswith("redis://fish-speech-redis:")
    assert ("Service", "fish-speech-redis") in by_kind
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v1/health"
    trigger = by_kind[("ScaledObject", "fish-speech")]["spec"]["triggers"][0]
    assert 'fish_speech_tasks{state="pending"}' in trigger["metadata"]["query"]
