"""OpenAudio S1 text-to-semantic model: checkpoint loading, tokenizer, prompt, generation."""

from .api import Text2Semantic, default_dtype, load_text2semantic
from .config import CheckpointError, DualARConfig
from .generation import SamplingParams, generate_frames
from .model import DualARTransformer
from .prompt import PromptTooLongError, build_prompt
from .tokenizer import FishTokenizer

__all__ = [
    "CheckpointError",
    "DualARConfig",
    "DualARTransformer",
    "FishTokenizer",
    "PromptTooLongError",
    "SamplingParams",
    "Text2Semantic",
    "build_prompt",
    "default_dtype",
    "generate_frames",
    "load_text2semantic",
]
