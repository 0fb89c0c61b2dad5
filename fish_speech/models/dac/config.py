"""Codec hyper-parameters, read from configs in the original hydra layout.

The original instantiates its codec from a hydra YAML (`modded_dac_vq.yaml`): nested mappings
with `_target_` class paths, and a `_partial_` ModelArgs that each transformer use site
completes. We read the same layout (YAML or JSON) into frozen dataclasses, derive every
implied value the way the original constructors do, and reject anything we would otherwise
silently ignore.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

BUILTIN_DIR = Path(__file__).parent / "configs"

# The original encoder block sizes its transformer from the block width (see spec 4.2).
_ENCODER_WINDOW = 512
_ENCODER_HEAD_WIDTH = 64
_ENCODER_FFN_RATIO = 3


class CodecLoadError(ValueError):
    """A codec config or checkpoint cannot be used; the message says why."""


@dataclass(frozen=True)
class TransformerConfig:
    """One `WindowLimitedTransformer` with its completed `ModelArgs`."""

    n_layer: int
    n_head: int
    dim: int
    intermediate_size: int
    head_dim: int
    block_size: int
    rope_base: float
    norm_eps: float
    input_dim: int
    window_size: int | None


@dataclass(frozen=True)
class QuantizerConfig:
    input_dim: int
    n_codebooks: int
    codebook_size: int
    codebook_dims: tuple[int, ...]  # one per residual quantizer; the semantic one uses [0]
    semantic_codebook_size: int
    downsample_factor: tuple[int, ...]
    downsample_dims: tuple[int, ...]
    pre_module: TransformerConfig | None
    post_module: TransformerConfig | None


@dataclass(frozen=True)
class CodecConfig:
    sample_rate: int
    encoder_dim: int
    encoder_rates: tuple[int, ...]
    latent_dim: int
    decoder_dim: int
    decoder_rates: tuple[int, ...]
    encoder_transformers: tuple[TransformerConfig | None, ...]  # one per encoder block
    quantizer: QuantizerConfig

    @property
    def codebook_sizes(self) -> list[int]:
        q = self.quantizer
        return [q.semantic_codebook_size] + [q.codebook_size] * q.n_codebooks


# ModelArgs fields and defaults of the original dataclass. Dropout values, `channels_first`
# and `max_relative_position` do not change inference on the supported path.
_MODEL_ARGS_DEFAULTS: dict[str, Any] = {
    "block_size": 2048,
    "n_layer": 8,
    "n_head": 8,
    "dim": 512,
    "intermediate_size": 1536,
    "n_local_heads": -1,
    "head_dim": 64,
    "rope_base": 10000.0,
    "norm_eps": 1e-5,
    "dropout_rate": 0.1,
    "attn_dropout_rate": 0.1,
    "channels_first": True,
    "pos_embed_type": "rope",
    "max_relative_position": 128,
}


def _check_target(node: Mapping[str, Any], expected: str, where: str) -> None:
    target = node.get("_target_")
    if target is not None and str(target).rsplit(".", 1)[-1] != expected:
        raise CodecLoadError(f"{where}: _target_ {target!r} is not supported (expected {expected})")


def _check_keys(node: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(node) - allowed - {"_target_", "_partial_"})
    if unknown:
        raise CodecLoadError(f"{where}: unknown keys {unknown}")


def _int(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CodecLoadError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


def _float(value: Any, where: str) -> float:
    # PyYAML reads `1e-5` (no dot) as a string, and the original YAML spells eps that way.
    try:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise CodecLoadError(f"{where}: expected a number, got {value!r}") from None


def _int_list(value: Any, where: str, minimum: int = 1) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise CodecLoadError(f"{where}: expected a non-empty list of integers, got {value!r}")
    return tuple(_int(v, f"{where}[{i}]", minimum) for i, v in enumerate(value))


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CodecLoadError(f"{where}: expected a mapping, got {value!r}")
    return value


def _model_args(node: Mapping[str, Any], where: str, **use_site: int) -> dict[str, Any]:
    """Complete a (possibly partial) ModelArgs node; use-site values win, as with partial()."""
    _check_target(node, "ModelArgs", where)
    _check_keys(node, set(_MODEL_ARGS_DEFAULTS), where)
    args = {**_MODEL_ARGS_DEFAULTS, **node, **use_site}
    if args["pos_embed_type"] != "rope":
        raise CodecLoadError(f"{where}: only pos_embed_type 'rope' is supported")
    if args["channels_first"] is not True:
        raise CodecLoadError(f"{where}: only channels_first true is supported")
    n_head = _int(args["n_head"], f"{where}.n_head")
    # The original's attention splits q, k and v into equal parts, so grouped-query attention
    # (n_local_heads < n_head) cannot work there either.
    if args["n_local_heads"] not in (-1, n_head):
        raise CodecLoadError(f"{where}: n_local_heads must be -1 or equal to n_head")
    dim = _int(args["dim"], f"{where}.dim")
    if args["intermediate_size"] is None:
        hidden = int(2 * 4 * dim / 3)
        args["intermediate_size"] = math.ceil(hidden / 256) * 256
    head_dim = _int(args["head_dim"], f"{where}.head_dim")
    if head_dim % 2:
        raise CodecLoadError(f"{where}: head_dim must be even for rotary embeddings")
    return {
        "n_layer": _int(args["n_layer"], f"{where}.n_layer"),
        "n_head": n_head,
        "dim": dim,
        "intermediate_size": _int(args["intermediate_size"], f"{where}.intermediate_size"),
        "head_dim": head_dim,
        "block_size": _int(args["block_size"], f"{where}.block_size"),
        "rope_base": _float(args["rope_base"], f"{where}.rope_base"),
        "norm_eps": _float(args["norm_eps"], f"{where}.norm_eps"),
    }


def _transformer_module(node: Any, where: str) -> TransformerConfig | None:
    if node is None:
        return None
    node = _mapping(node, where)
    _check_target(node, "WindowLimitedTransformer", where)
    _check_keys(node, {"config", "input_dim", "window_size", "causal"}, where)
    if node.get("causal", True) is not True:
        raise CodecLoadError(f"{where}: only causal transformers are supported")
    args = _model_args(_mapping(node.get("config"), f"{where}.config"), f"{where}.config")
    window = node.get("window_size")
    return TransformerConfig(
        **args,
        input_dim=_int(node.get("input_dim", 512), f"{where}.input_dim"),
        window_size=None if window is None else _int(window, f"{where}.window_size"),
    )


def _quantizer(node: Any) -> QuantizerConfig:
    where = "quantizer"
    node = _mapping(node, where)
    _check_target(node, "DownsampleResidualVectorQuantize", where)
    _check_keys(
        node,
        {
            "input_dim",
            "n_codebooks",
            "codebook_size",
            "codebook_dim",
            "quantizer_dropout",
            "semantic_codebook_size",
            "downsample_factor",
            "downsample_dims",
            "pre_module",
            "post_module",
            "semantic_predictor_module",  # training-only hook; its weights are ignored
        },
        where,
    )
    input_dim = _int(node.get("input_dim", 1024), f"{where}.input_dim")
    n_codebooks = _int(node.get("n_codebooks", 9), f"{where}.n_codebooks")
    codebook_dim = node.get("codebook_dim", 8)
    if isinstance(codebook_dim, list | tuple):
        dims = _int_list(codebook_dim, f"{where}.codebook_dim")
        if len(dims) < n_codebooks:
            raise CodecLoadError(f"{where}.codebook_dim: needs {n_codebooks} entries")
    else:
        dims = (_int(codebook_dim, f"{where}.codebook_dim"),) * n_codebooks
    factors = _int_list(node.get("downsample_factor", [2, 2]), f"{where}.downsample_factor")
    down_dims = node.get("downsample_dims")
    down_dims = (
        (input_dim,) * len(factors)
        if down_dims is None
        else _int_list(down_dims, f"{where}.downsample_dims")
    )
    if len(down_dims) != len(factors):
        raise CodecLoadError(f"{where}: downsample_dims and downsample_factor differ in length")
    if down_dims[-1] != input_dim:
        raise CodecLoadError(f"{where}: the last downsample_dims entry must equal input_dim")
    return QuantizerConfig(
        input_dim=input_dim,
        n_codebooks=n_codebooks,
        codebook_size=_int(node.get("codebook_size", 1024), f"{where}.codebook_size"),
        codebook_dims=dims,
        semantic_codebook_size=_int(
            node.get("semantic_codebook_size", 4096), f"{where}.semantic_codebook_size"
        ),
        downsample_factor=factors,
        downsample_dims=down_dims,
        pre_module=_transformer_module(node.get("pre_module"), f"{where}.pre_module"),
        post_module=_transformer_module(node.get("post_module"), f"{where}.post_module"),
    )


def parse_config(node: Any) -> CodecConfig:
    """Turn a mapping in the original hydra layout into a validated CodecConfig."""
    node = _mapping(node, "config")
    _check_target(node, "DAC", "config")
    _check_keys(
        node,
        {
            "sample_rate",
            "encoder_dim",
            "encoder_rates",
            "latent_dim",
            "decoder_dim",
            "decoder_rates",
            "quantizer",
            "causal",
            "encoder_transformer_layers",
            "decoder_transformer_layers",
            "transformer_general_config",
        },
        "config",
    )
    if node.get("causal", True) is not True:
        raise CodecLoadError("config: only the causal codec (causal: true) is supported")
    encoder_dim = _int(node.get("encoder_dim", 64), "config.encoder_dim")
    encoder_rates = _int_list(node.get("encoder_rates", [2, 4, 8, 8]), "config.encoder_rates")
    latent_dim = node.get("latent_dim")
    latent_dim = (
        encoder_dim * 2 ** len(encoder_rates)
        if latent_dim is None
        else _int(latent_dim, "config.latent_dim")
    )
    decoder_dim = _int(node.get("decoder_dim", 1536), "config.decoder_dim")
    decoder_rates = _int_list(node.get("decoder_rates", [8, 8, 4, 2]), "config.decoder_rates")
    if decoder_dim % 2 ** len(decoder_rates):
        raise CodecLoadError("config: decoder_dim must be divisible by 2**len(decoder_rates)")
    layers = _int_list(
        node.get("encoder_transformer_layers", [0] * len(encoder_rates)),
        "config.encoder_transformer_layers",
        minimum=0,
    )
    if len(layers) != len(encoder_rates):
        raise CodecLoadError("config: encoder_transformer_layers must match encoder_rates")
    # decoder_transformer_layers has no effect: the original builds those transformers and
    # never puts them into the decoder (spec 4.3). Its length still must match, because the
    # original zips it with decoder_rates and would silently drop decoder blocks otherwise.
    decoder_layers = _int_list(
        node.get("decoder_transformer_layers", [0] * len(decoder_rates)),
        "config.decoder_transformer_layers",
        minimum=0,
    )
    if len(decoder_layers) != len(decoder_rates):
        raise CodecLoadError("config: decoder_transformer_layers must match decoder_rates")

    general = node.get("transformer_general_config")
    encoder_transformers: list[TransformerConfig | None] = []
    for i, n_layer in enumerate(layers):
        width = encoder_dim * 2 ** (i + 1)
        if n_layer == 0:
            encoder_transformers.append(None)
            continue
        where = f"config.transformer_general_config (encoder block {i + 1})"
        if width < _ENCODER_HEAD_WIDTH:
            raise CodecLoadError(f"{where}: block width {width} is below one 64-wide head")
        args = _model_args(
            _mapping(general, where),
            where,
            n_layer=n_layer,
            n_head=width // _ENCODER_HEAD_WIDTH,
            dim=width,
            intermediate_size=width * _ENCODER_FFN_RATIO,
        )
        encoder_transformers.append(
            TransformerConfig(**args, input_dim=width, window_size=_ENCODER_WINDOW)
        )

    quantizer = _quantizer(node.get("quantizer"))
    if quantizer.input_dim != latent_dim:
        raise CodecLoadError(
            f"config: quantizer.input_dim {quantizer.input_dim} != latent_dim {latent_dim}"
        )
    return CodecConfig(
        sample_rate=_int(node.get("sample_rate", 44100), "config.sample_rate"),
        encoder_dim=encoder_dim,
        encoder_rates=encoder_rates,
        latent_dim=latent_dim,
        decoder_dim=decoder_dim,
        decoder_rates=decoder_rates,
        encoder_transformers=tuple(encoder_transformers),
        quantizer=quantizer,
    )


def builtin_config_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_config(config: str | Path) -> CodecConfig:
    """Load a built-in config by name, or a YAML/JSON file in the original layout."""
    if isinstance(config, str) and config in builtin_config_names():
        path = BUILTIN_DIR / f"{config}.yaml"
    else:
        path = Path(config)
        if not path.is_file():
            if isinstance(config, str) and path.suffix == "" and len(path.parts) == 1:
                raise CodecLoadError(
                    f"unknown codec config name {config!r}; built-in: {builtin_config_names()}"
                )
            raise CodecLoadError(f"codec config file not found: {path}")
    try:
        node = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is valid YAML
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CodecLoadError(f"cannot read codec config {path}: {exc}") from exc
    try:
        return parse_config(node)
    except CodecLoadError as exc:
        raise CodecLoadError(f"{path}: {exc}") from None
