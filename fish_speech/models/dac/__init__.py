"""The S1 ("modded DAC") audio codec: 44.1 kHz audio <-> grids of integer codes.

    codec = load_codec("checkpoints/openaudio-s1-mini/codec.pth")  # config "modded_dac_vq"
    codes = codec.encode(audio, sample_rate)  # int64 (codec.num_codebooks, frames)
    audio = codec.decode(codes)               # float32, frames * codec.hop_length samples

`encode_batch` / `decode_batch` take lists and give the same results as single calls.
Config and checkpoint problems raise CodecLoadError (a ValueError); bad audio or code grids
raise ValueError. Numerics follow the original at fish-speech commit d3df505 (S1-mini).
"""

from .codec import Codec
from .config import CodecConfig, CodecLoadError, load_config
from .loader import load_codec

__all__ = ["Codec", "CodecConfig", "CodecLoadError", "load_codec", "load_config"]
