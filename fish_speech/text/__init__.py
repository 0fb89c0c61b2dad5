"""Text utilities shared by engines: normalisation, sentence splitting, script runs."""

from fish_speech.text.normalize import normalize_text
from fish_speech.text.script import SCRIPT_LANGUAGES, Run, is_speakable, split_runs
from fish_speech.text.split import split_for_latency, split_sentences, split_text, take_finished

__all__ = [
    "SCRIPT_LANGUAGES",
    "Run",
    "is_speakable",
    "normalize_text",
    "split_for_latency",
    "split_runs",
    "split_sentences",
    "split_text",
    "take_finished",
]
