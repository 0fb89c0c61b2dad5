"""Split a sentence into runs of one writing system, each tagged with the language to speak it in.

Script is all we can see without a language model, so the mapping is deliberately simple:
Latin is read as English, Han as Mandarin (or Cantonese when asked), and Han characters in a
sentence that also holds kana are read as Japanese. Digits, punctuation and spaces have no
script of their own and join the run they sit in, so "我有3个" stays one Mandarin run.
"""

from __future__ import annotations

from dataclasses import dataclass

import regex

# Unicode script name -> language code (the codes engines route on).
SCRIPT_LANGUAGES: dict[str, str] = {
    "Latin": "en",
    "Han": "zh",
    "Hiragana": "ja",
    "Katakana": "ja",
    "Hangul": "ko",
    "Cyrillic": "ru",
    "Greek": "el",
    "Arabic": "ar",
    "Hebrew": "he",
    "Devanagari": "hi",
    "Bengali": "bn",
    "Tamil": "ta",
    "Thai": "th",
    "Georgian": "ka",
    "Armenian": "hy",
}

_SCRIPT_PATTERNS = [
    (regex.compile(rf"\p{{Script={name}}}"), language)
    for name, language in SCRIPT_LANGUAGES.items()
]
_KANA = regex.compile(r"[\p{Script=Hiragana}\p{Script=Katakana}]")
# A run is worth speaking only if it holds a letter or a digit (not just emoji or dashes).
_SPEAKABLE = regex.compile(r"[\p{L}\p{N}]")


@dataclass(frozen=True)
class Run:
    text: str
    # Language code from SCRIPT_LANGUAGES (or the Han override); None: no script at all,
    # e.g. a run of digits, which the engine speaks in its default language.
    language: str | None


def _char_language(char: str, han_language: str) -> str | None:
    for pattern, language in _SCRIPT_PATTERNS:
        if pattern.match(char):
            return han_language if language == "zh" else language
    return None


def is_speakable(text: str) -> bool:
    return _SPEAKABLE.search(text) is not None


def split_runs(sentence: str, han_language: str = "zh") -> list[Run]:
    """Runs of ``sentence`` by script, dropping runs with nothing speakable.

    ``han_language`` is the code for Han characters outside Japanese text ("zh" or "yue").
    Script-less characters join the run before them (or the first run, at the start).
    """
    if _KANA.search(sentence):
        han_language = "ja"
    runs: list[list] = []  # [text, language] pairs, merged as we go
    for char in sentence:
        language = _char_language(char, han_language)
        if runs and (language is None or language == runs[-1][1] or runs[-1][1] is None):
            runs[-1][0] += char
            # A leading script-less run takes the language of the first letter after it.
            if runs[-1][1] is None:
                runs[-1][1] = language
        else:
            runs.append([char, language])
    return [Run(text.strip(), language) for text, language in runs if is_speakable(text)]
