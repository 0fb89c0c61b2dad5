"""The codec network: encoder, downsampling residual quantizer and decoder (spec section 4)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import CodecConfig, QuantizerConfig, TransformerConfig
from .modules import (
    CausalConv1d,
    CausalConvTranspose1d,
    ConvNeXtBlock,
    ResidualUnit,
    Snake1d,
    WindowLimitedTransformer,
    WNConv1d,
    to_planes,
)


class Encoder(nn.Module):
    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        width = cfg.encoder_dim
        layers: list[nn.Module] = [CausalConv1d(1, width, 7)]
        for stride, transformer in zip(cfg.encoder_rates, cfg.encoder_transformers, strict=True):
            blocks: list[nn.Module] = [
                ResidualUnit(width, 1),
                ResidualUnit(width, 3),
                ResidualUnit(width, 9),
                Snake1d(width),
                CausalConv1d(width, 2 * width, 2 * stride, stride=stride),
            ]
            if transformer is not None:
                blocks.append(WindowLimitedTransformer(transformer))
            layers.append(_Block(blocks))
            width *= 2
        layers += [Snake1d(width), CausalConv1d(width, cfg.latent_dim, 3)]
        self.block = nn.Sequential(*layers)

    def forward(self, audio: Tensor) -> Tensor:
        return self.block(audio)


class Decoder(nn.Module):
    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        width = cfg.decoder_dim
        layers: list[nn.Module] = [CausalConv1d(cfg.latent_dim, width, 7)]
        for stride in cfg.decoder_rates:
            layers.append(
                _Block(
                    [
                        Snake1d(width),
                        CausalConvTranspose1d(width, width // 2, 2 * stride, stride),
                        ResidualUnit(width // 2, 1),
                        ResidualUnit(width // 2, 3),
                        ResidualUnit(width // 2, 9),
                    ]
                )
            )
            width //= 2
        layers += [Snake1d(width), CausalConv1d(width, 1, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, latent: Tensor) -> Tensor:
        # Channels-last planes: the decoder's convs are most of the codec's compute.
        return self.model(to_planes(latent)).squeeze(2)


class _Block(nn.Module):
    """A Sequential kept under the attribute name `block`, as the checkpoint keys expect."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class VectorQuantizer(nn.Module):
    """Factorised, l2-normalised VQ: lookup by cosine in a small space, raw rows for output."""

    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int) -> None:
        super().__init__()
        self.in_proj = WNConv1d(input_dim, codebook_dim, 1)
        self.out_proj = WNConv1d(codebook_dim, input_dim, 1)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return (reconstruction, indices (B, T), projected latents) for z (B, C, T)."""
        latents = self.in_proj(z)
        batch, dim, length = latents.shape
        flat = F.normalize(latents.transpose(1, 2).reshape(-1, dim).float())
        book = F.normalize(self.codebook.weight.float())
        # The squared-distance form the original computes, so argmax ties break the same way.
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ book.t() + book.pow(2).sum(1)[None]
        indices = dist.neg().argmax(1).view(batch, length)
        rows = self.codebook(indices).transpose(1, 2)
        # The original's straight-through form; it rounds slightly differently from `rows`.
        rows = latents + (rows - latents)
        return self.out_proj(rows), indices, latents

    def dequantize(self, indices: Tensor) -> Tensor:
        return self.out_proj(self.codebook(indices).transpose(1, 2))


class ResidualQuantizer(nn.Module):
    def __init__(self, input_dim: int, codebook_size: int, codebook_dims: tuple[int, ...]) -> None:
        super().__init__()
        self.quantizers = nn.ModuleList(
            VectorQuantizer(input_dim, codebook_size, dim) for dim in codebook_dims
        )

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Return (sum of the stage reconstructions, codes (B, n, T))."""
        total = torch.zeros_like(z)
        codes = []
        for quantizer in self.quantizers:
            part, indices, _ = quantizer.quantize(z)
            total = total + part
            z = z - part
            codes.append(indices)
        return total, torch.stack(codes, dim=1)

    def dequantize(self, codes: Tensor) -> Tensor:
        total = self.quantizers[0].dequantize(codes[:, 0])
        for i in range(1, codes.shape[1]):
            total = total + self.quantizers[i].dequantize(codes[:, i])
        return total


class DownsampleQuantizer(nn.Module):
    def __init__(self, cfg: QuantizerConfig) -> None:
        super().__init__()
        dims = (cfg.input_dim, *cfg.downsample_dims)
        stages = list(enumerate(cfg.downsample_factor))
        self.downsample = nn.Sequential(
            *(
                nn.Sequential(
                    CausalConv1d(dims[i], dims[i + 1], f, stride=f, weight_norm=False),
                    ConvNeXtBlock(dims[i + 1]),
                )
                for i, f in stages
            )
        )
        self.upsample = nn.Sequential(
            *(
                nn.Sequential(
                    CausalConvTranspose1d(dims[i + 1], dims[i], f, f, weight_norm=False),
                    ConvNeXtBlock(dims[i]),
                )
                for i, f in reversed(stages)
            )
        )
        self.pre_module = _transformer_or_identity(cfg.pre_module)
        self.post_module = _transformer_or_identity(cfg.post_module)
        self.semantic_quantizer = ResidualQuantizer(
            cfg.input_dim, cfg.semantic_codebook_size, cfg.codebook_dims[:1]
        )
        self.quantizer = ResidualQuantizer(cfg.input_dim, cfg.codebook_size, cfg.codebook_dims)

    def encode(self, latent: Tensor) -> Tensor:
        z = self.pre_module(self.downsample(latent))
        semantic, semantic_codes = self.semantic_quantizer.quantize(z)
        _, residual_codes = self.quantizer.quantize(z - semantic)
        return torch.cat([semantic_codes, residual_codes], dim=1)

    def dequantize(self, codes: Tensor) -> Tensor:
        """Latents (B, input_dim, T) of codes (B, rows, T); each frame on its own."""
        z = self.semantic_quantizer.dequantize(codes[:, :1])
        if codes.shape[1] > 1:
            z = z + self.quantizer.dequantize(codes[:, 1:])
        return z

    def decode(self, codes: Tensor) -> Tensor:
        return self.upsample(self.post_module(self.dequantize(codes)))


def _transformer_or_identity(cfg: TransformerConfig | None) -> nn.Module:
    return nn.Identity() if cfg is None else WindowLimitedTransformer(cfg)


class CodecModel(nn.Module):
    """Tensor-level codec. Inputs are expected already validated and padded (see Codec)."""

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = DownsampleQuantizer(cfg.quantizer)
        self.decoder = Decoder(cfg)
        down = math.prod(cfg.quantizer.downsample_factor)
        self.hop_length = math.prod(cfg.encoder_rates) * down
        self.decode_hop_length = math.prod(cfg.decoder_rates) * down
        self.max_frames = self._max_frames(down)

    def _max_frames(self, down: int) -> int | None:
        """Longest code sequence every transformer's RoPE table covers (None: unlimited)."""
        cfg = self.cfg
        # An encoder block's transformer sees prod(later rates) * down frames per code frame.
        limits = [
            t.block_size // (math.prod(cfg.encoder_rates[i + 1 :]) * down)
            for i, t in enumerate(cfg.encoder_transformers)
            if t is not None
        ]
        q = cfg.quantizer
        limits += [t.block_size for t in (q.pre_module, q.post_module) if t is not None]
        return min(limits) if limits else None

    def encode(self, audio: Tensor) -> Tensor:
        """(B, 1, L) with L a multiple of hop_length -> int64 codes (B, rows, L / hop_length)."""
        return self.quantizer.encode(self.encoder(audio))

    def decode(self, codes: Tensor) -> Tensor:
        """int64 codes (B, rows, T), in range -> audio (B, 1, T * decode_hop_length)."""
        return self.decoder(self.quantizer.decode(codes))

    def decode_copy(self, dtype: torch.dtype) -> CodecModel:
        """A model that can only decode: a copy of this one's decode path (code look-up,
        post transformer, upsampling, decoder) cast to ``dtype``. The encoder side stays on
        the meta device, so the copy costs only the decode path's memory."""
        with torch.device("meta"):
            copy = CodecModel(self.cfg)
        state = {
            key: tensor.to(dtype)
            for key, tensor in self.state_dict().items()
            if key.startswith(_DECODE_PATH)
        }
        copy.load_state_dict(state, strict=False, assign=True)
        return copy.eval().requires_grad_(False)


# State-dict prefixes of the modules CodecModel.decode runs.
_DECODE_PATH = (
    "decoder.",
    "quantizer.post_module.",
    "quantizer.upsample.",
    "quantizer.semantic_quantizer.",
    "quantizer.quantizer.",
)
