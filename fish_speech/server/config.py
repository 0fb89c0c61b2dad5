"""Server settings: parsed from the command line, handed to worker processes as JSON."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from fish_speech.models.precision import PRECISIONS, QUANTIZATIONS

DEFAULT_LLAMA_PATH = "checkpoints/openaudio-s1-mini"
DEFAULT_DECODER_PATH = "checkpoints/openaudio-s1-mini/codec.pth"
CONFIG_ENV = "FISH_SPEECH_SERVER_CONFIG"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ConfigError(ValueError):
    """A setting that makes starting impossible; the message names what is wrong."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # None means "not given": use the default path if it exists, else the embedded engine.
    llama_checkpoint_path: str | None = None
    decoder_checkpoint_path: str | None = None
    decoder_config_name: str = "modded_dac_vq"
    device: str = "cuda"
    half: bool = False
    compile: bool = False
    precision: str = "auto"
    quantize: str | None = None
    max_text_length: int = 0
    workers: int = 1
    api_key: str | None = None
    references_dir: str = "references"
    data_dir: str = "data"
    # Hardening: bounded input, task retention, graceful shutdown (README "Operating it").
    max_body_mb: float = 50
    max_references: int = 8
    max_reference_seconds: float = 60
    task_retention_hours: float = 24
    shutdown_timeout: float = 10
    cors_origins: str = "*"  # comma-separated; "" turns CORS off

    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    # Fish engine batching: None = sized from free memory / the checkpoint's context.
    max_batch_size: int | None = None
    max_seq_len: int | None = None
    max_queue: int = 32
    # Scale-out: tasks and voices in Redis, shared by every instance (README "Scale-out").
    redis_url: str | None = None
    results_dir: str | None = None
    task_visibility_timeout: float = 60

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServerConfig:
        return cls(**json.loads(os.environ[CONFIG_ENV]))

    def resolve_checkpoint(self, given: str | None, default: str) -> Path | None:
        """The checkpoint to load: an explicit path must exist; the default may be absent."""
        if given is not None:
            if not Path(given).exists():
                raise ConfigError(f"checkpoint path does not exist: {given}")
            return Path(given)
        return Path(default) if Path(default).exists() else None

    def llama_path(self) -> Path | None:
        return self.resolve_checkpoint(self.llama_checkpoint_path, DEFAULT_LLAMA_PATH)

    def decoder_path(self) -> Path | None:
        return self.resolve_checkpoint(self.decoder_checkpoint_path, DEFAULT_DECODER_PATH)


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` or ``[ipv6]:port``."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
        if ":" in host:
            raise ConfigError(f"--listen {value!r}: write IPv6 addresses in brackets, [::1]:8080")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--listen {value!r}: expected host:port or [ipv6]:port")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.api_server",
        description="Fish Speech compatible TTS server (embedded CPU engine when no checkpoint).",
    )
    p.add_argument("--mode", choices=["tts"], default="tts")
    p.add_argument("--listen", default="127.0.0.1:8080", help="host:port or [ipv6]:port")
    p.add_argument(
        "--llama-checkpoint-path",
        default=None,
        help=f"text-to-semantic checkpoint folder (default: {DEFAULT_LLAMA_PATH} if present)",
    )
    p.add_argument(
        "--decoder-checkpoint-path",
        default=None,
        help=f"codec weights (default: {DEFAULT_DECODER_PATH} if present)",
    )
    p.add_argument("--decoder-config-name", default="modded_dac_vq")
    p.add_argument("--device", default="cuda", help="cuda, cpu, ... (falls back to cpu)")
    p.add_argument("--half", action="store_true", help="float16 instead of bfloat16 on GPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="model float dtype; auto: bfloat16 on GPU (float16 with --half) and on CPUs "
        "with native bf16 (AMX or AVX-512 bf16), else float32",
    )
    p.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        default=None,
        help="store the text model's linear weights as int8 (weight-only, per channel)",
    )
    p.add_argument(
        "--max-text-length", type=int, default=0, help="reject longer text (0 = no limit)"
    )
    p.add_argument("--workers", type=int, default=1, help="server processes")
    p.add_argument("--api-key", default=None, help="require Authorization: Bearer <key>")
    p.add_argument("--references-dir", default="references", help="saved reference voices")
    p.add_argument("--data-dir", default="data", help="server state (async task results)")
    p.add_argument("--max-body-mb", type=float, default=50, help="larger request bodies get 413")
    p.add_argument(
        "--max-references",
        type=int,
        default=8,
        help="inline references (or vqgan clips) per request",
    )
    p.add_argument(
        "--max-reference-seconds", type=float, default=60, help="longest reference audio"
    )
    p.add_argument(
        "--task-retention-hours",
        type=float,
        default=24,
        help="finished async tasks and their results are removed after this (0 = keep)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=10,
        help="seconds from SIGTERM/SIGINT to exit; running tasks are re-queued",
    )
    p.add_argument(
        "--cors-origins",
        default="*",
        help="origins browsers may call from, comma-separated ('*': any, '': CORS off)",
    )
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=None,
        help="Fish engine: requests decoded together (default: as many KV slots as half the "
        "free memory holds, at most 8 on CPU, 64 on GPU)",
    )
    p.add_argument(
        "--max-seq-len",
        type=int,
        default=None,
        help="Fish engine: positions per KV slot, prompt + generated frames (default: the "
        "checkpoint's, 8192 for S1-mini)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=32,
        help="requests that may wait for a slot; more get 429 (async tasks queue apart)",
    )
    p.add_argument(
        "--redis-url",
        default=None,
        help="redis://host:port/db: keep tasks and voices in Redis, shared by every instance "
        "(default: SQLite and folders on this machine)",
    )
    p.add_argument(
        "--results-dir",
        default=None,
        help="with --redis-url: write task results to this folder, mounted by every instance, "
        "instead of into Redis",
    )
    p.add_argument(
        "--task-visibility-timeout",
        type=float,
        default=60,
        help="with --redis-url: seconds after which the task of an instance that stopped "
        "answering is run by another",
    )
    return p


def _check_limits(args: argparse.Namespace) -> None:
    for flag, value in [
        ("--max-body-mb", args.max_body_mb),
        ("--max-references", args.max_references),
        ("--max-reference-seconds", args.max_reference_seconds),
        ("--shutdown-timeout", args.shutdown_timeout),
        ("--task-visibility-timeout", args.task_visibility_timeout),
    ]:
        if not 0 < value < math.inf:  # also refuses NaN
            raise ConfigError(f"{flag} must be a positive number")
    if not 0 <= args.task_retention_hours < math.inf:
        raise ConfigError("--task-retention-hours must be 0 (keep forever) or positive")


def config_from_args(argv: list[str] | None = None) -> ServerConfig:
    args = build_parser().parse_args(argv)
    host, port = parse_listen(args.listen)
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if args.max_text_length < 0:
        raise ConfigError("--max-text-length must be 0 (no limit) or positive")
    _check_limits(args)
    if args.max_batch_size is not None and args.max_batch_size < 1:
        raise ConfigError("--max-batch-size must be at least 1")
    if args.max_seq_len is not None and args.max_seq_len < 16:
        raise ConfigError("--max-seq-len must be at least 16")
    if args.max_queue < 0:
        raise ConfigError("--max-queue must be 0 or positive")
    if args.redis_url is not None and not args.redis_url.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise ConfigError("--redis-url must be a redis://, rediss:// or unix:// URL")
    if args.redis_url is not None and importlib.util.find_spec("redis") is None:
        raise ConfigError(
            "--redis-url needs the redis package: pip install 'fish-speech-server[redis]'"
        )
    if args.results_dir is not None and args.redis_url is None:
        raise ConfigError("--results-dir needs --redis-url (local results go to --data-dir)")
    return ServerConfig(
        host=host,
        port=port,
        llama_checkpoint_path=args.llama_checkpoint_path,
        decoder_checkpoint_path=args.decoder_checkpoint_path,
        decoder_config_name=args.decoder_config_name,
        device=args.device,
        half=args.half,
        compile=args.compile,
        precision=args.precision,
        quantize=args.quantize,
        max_text_length=args.max_text_length,
        workers=args.workers,
        api_key=args.api_key,
        references_dir=args.references_dir,
        data_dir=args.data_dir,
        max_body_mb=args.max_body_mb,
        max_references=args.max_references,
        max_reference_seconds=args.max_reference_seconds,
        task_retention_hours=args.task_retention_hours,
        shutdown_timeout=args.shutdown_timeout,
        cors_origins=args.cors_origins,
        max_batch_size=args.max_batch_size,
        max_seq_len=args.max_seq_len,
        max_queue=args.max_queue,
        redis_url=args.redis_url,
        results_dir=args.results_dir,
        task_visibility_timeout=args.task_visibility_timeout,
    )
