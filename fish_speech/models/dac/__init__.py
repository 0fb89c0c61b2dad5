"""The S1 ("modded DAC") audio codec: 44.1 kHz audio <-> grids of integer codes."""

from .codec import Codec
from .config import CodecConfig, CodecLoadError, load_config
from .loader import load_codec

__all__ = ["Codec", "CodecConfig", "CodecLoadError", "load_codec", "load_config"]
