"""What each output format can carry: media types, sample rates, bitrates.

Plain data with no codec imports, so the request schemas (which clients import) can
validate against it.
"""

from __future__ import annotations

MEDIA_TYPES = {
    "wav": "audio/wav",
    "pcm": "application/octet-stream",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",  # Ogg Opus (RFC 7845), which browsers and players read
    "flac": "audio/flac",
    "aac": "audio/aac",  # ADTS; only the OpenAI route offers it
}

# Uncompressed and lossless formats take any rate in this range.
RATE_RANGE = (8000, 48000)
# Compressed formats only have the rates of their codec: MPEG-1/2/2.5 layer III, and the
# five rates Opus encodes at (libsndfile refuses others rather than resampling).
CODEC_RATES: dict[str, tuple[int, ...]] = {
    "mp3": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
    "opus": (8000, 12000, 16000, 24000, 48000),
}
ENGINE_RATE = 44100  # every engine answers at this rate (fish_speech.engine.base)
DEFAULT_RATES = {"opus": 48000}

MP3_BITRATES = (64, 128, 192)  # kbps
# The hosted API takes kbps, its SDKs send either kbps or bps; -1000 is Opus's "auto".
OPUS_AUTO = -1000
OPUS_BITRATES = (OPUS_AUTO, 24, 32, 48, 64, 24000, 32000, 48000, 64000)


def default_rate(fmt: str) -> int:
    return DEFAULT_RATES.get(fmt, ENGINE_RATE)


def check_sample_rate(fmt: str, rate: int) -> None:
    """Raise ValueError naming the valid rates when ``fmt`` cannot carry ``rate``."""
    if fmt in CODEC_RATES:
        if rate not in CODEC_RATES[fmt]:
            rates = ", ".join(str(r) for r in CODEC_RATES[fmt])
            raise ValueError(f"sample_rate {rate} is not possible for {fmt}; use one of {rates}")
    elif not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
        low, high = RATE_RANGE
        raise ValueError(f"sample_rate must be between {low} and {high} for {fmt}, not {rate}")


def opus_bits_per_second(value: int) -> int | None:
    """The Opus target in bit/s, or None for the encoder's automatic choice."""
    if value == OPUS_AUTO:
        return None
    return value * 1000 if value < 1000 else value
