"""Light, honest text clean-up before synthesis.

The voices read digits, dates and most symbols themselves, so this only removes what no
voice should read (emoji, control characters) and evens out spacing and full-width forms.
"""

from __future__ import annotations

import unicodedata

import regex

# Emoji shown as pictures, plus the joiners, skin tones, flags and presentation selectors that
# build them; "©" or "™" without a selector stay (eSpeak reads them as words).
_EMOJI = regex.compile(
    r"\p{Emoji_Presentation}|\p{Extended_Pictographic}\uFE0F|\p{Emoji_Modifier}"
    r"|\p{Regional_Indicator}|[\u200D\uFE0E\uFE0F\u20E3]"
)
# Zero-width non-joiner stays: Persian and Indic spelling needs it.
_CONTROL = regex.compile(r"[\p{Cc}\p{Cf}--[\n\t\u200C]]", regex.V1)
# Full-width ASCII letters and digits (Ａ, ５) read as their ASCII forms; full-width
# punctuation stays, as it marks CJK sentence ends.
_FULLWIDTH_ALNUM = regex.compile(r"[\uFF10-\uFF19\uFF21-\uFF3A\uFF41-\uFF5A]")
_SPACES = regex.compile(r"[^\S\n]+")
_BLANK_LINES = regex.compile(r"\s*\n\s*")


def normalize_text(text: str) -> str:
    text = _EMOJI.sub(" ", text)
    text = _CONTROL.sub("", text)
    text = _FULLWIDTH_ALNUM.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)
    text = _SPACES.sub(" ", text)
    return _BLANK_LINES.sub("\n", text).strip()
