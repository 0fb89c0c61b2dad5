"""Sentence splitting for streaming: one sentence in, one audio segment out.

Sentences end at ``. ! ?`` followed by a space (or the end), at the CJK terminators
``。！？；…`` wherever they stand, and at line breaks. Pieces longer than ``max_length``
characters are split again at clause punctuation, then at spaces, then hard, so the first
segment of a long paragraph arrives quickly. Text is never dropped: joining the pieces
gives back the input up to whitespace.
"""

from __future__ import annotations

import regex

# Titles always bind to the next word: "Dr. Smith" is one sentence.
_TITLES = frozenset("mr mrs ms dr prof sr jr st mt rev gen capt".split())
# These end a sentence only when a capitalised word follows: "etc. and" vs "etc. Then".
_ABBREVIATIONS = frozenset(
    "vs etc cf approx dept fig inc ltd vol ca jan feb mar apr jun jul aug sep sept "
    "oct nov dec".split()
)

# Dotted abbreviations such as "e.g", "i.e" and "U.S.A" (the final dot is the candidate end).
_DOTTED = regex.compile(r"(?:\p{L}\.)+\p{L}")
# A closing quote or bracket that belongs to the sentence before the break.
_CLOSERS = "\"'”’»)]}」』）】"
_CLOSER_CLASS = "[" + regex.escape(_CLOSERS) + "]*"

# Latin terminators only count when followed by whitespace or the end, so "3.14",
# "example.com" and "U.S.A." inside a word do not split.
_LATIN_END = regex.compile(rf"[.!?]+{_CLOSER_CLASS}(?=\s|$)")
_CJK_END = regex.compile(rf"(?:[。！？；]|…+|\.\.\.){_CLOSER_CLASS}")
_NEWLINES = regex.compile(r"\s*\n\s*")

# A clause (or word) together with the punctuation and spaces that follow it.
_CLAUSES = regex.compile(r".+?(?:[,，、;:：—]\s*|$)", regex.DOTALL)
_WORDS = regex.compile(r"\S+\s*")


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the full stop at index ``dot`` closes an abbreviation or an initial."""
    start = dot
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    word = text[start:dot].lstrip(_CLOSERS + "(\"'“‘").lower()
    if word in _TITLES:
        return True
    if len(word) == 1 and word.isalpha() and text[dot - 1].isupper():
        return True  # an initial, as in "J. R. R. Tolkien"
    following = text[dot + 1 :].lstrip()
    is_abbreviation = word in _ABBREVIATIONS or _DOTTED.fullmatch(word) is not None
    return is_abbreviation and not (following and following[0].isupper())


def _sentence_ends(text: str) -> list[int]:
    """Indices just past each sentence end in ``text``."""
    ends: set[int] = set()
    for match in _LATIN_END.finditer(text):
        # "Dr. Smith" or "J. Smith": a lone full stop after an abbreviation is no end.
        if match.group().rstrip(_CLOSERS) == "." and _is_abbreviation(text, match.start()):
            continue
        ends.add(match.end())
    ends.update(match.end() for match in _CJK_END.finditer(text))
    ends.update(match.start() for match in _NEWLINES.finditer(text))
    return sorted(ends)


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into stripped sentences; whitespace-only input gives []."""
    sentences: list[str] = []
    start = 0
    for end in [*_sentence_ends(text), len(text)]:
        piece = text[start:end].strip()
        if piece:
            sentences.append(piece)
        start = max(start, end)
    return sentences


def _pack(parts: list[str], max_length: int) -> list[str]:
    """Greedily join consecutive parts while the stripped result fits in ``max_length``."""
    packed: list[str] = []
    for part in parts:
        if packed and len((packed[-1] + part).strip()) <= max_length:
            packed[-1] += part
        else:
            packed.append(part)
    return [piece.strip() for piece in packed if piece.strip()]


def _split_long(sentence: str, max_length: int) -> list[str]:
    if len(sentence) <= max_length:
        return [sentence]
    pieces: list[str] = []
    for clause in _pack(_CLAUSES.findall(sentence), max_length):
        if len(clause) <= max_length:
            pieces.append(clause)
            continue
        for chunk in _pack(_WORDS.findall(clause), max_length):
            # Unspaced scripts (Chinese, Japanese) may still be too long: cut hard.
            pieces.extend(chunk[i : i + max_length] for i in range(0, len(chunk), max_length))
    return pieces


def split_text(text: str, max_length: int = 200) -> list[str]:
    """Sentences of ``text``, with any longer than ``max_length`` characters split further.

    ``max_length <= 0`` means no limit.
    """
    sentences = split_sentences(text)
    if max_length <= 0:
        return sentences
    return [piece for sentence in sentences for piece in _split_long(sentence, max_length)]


def _clauses(piece: str) -> list[str]:
    return [clause.strip() for clause in _CLAUSES.findall(piece) if clause.strip()]


def split_for_latency(text: str, max_length: int, latency: str) -> list[str]:
    """The pieces an engine speaks one by one for a latency mode.

    ``normal``: sentences (see split_text). ``balanced``: the first sentence is cut at its
    clause punctuation too, so the first audio comes sooner. ``low``: every sentence is.
    """
    pieces = split_text(text, max_length)
    if latency == "low":
        return [clause for piece in pieces for clause in _clauses(piece)]
    if latency == "balanced" and pieces:
        return [*_clauses(pieces[0]), *pieces[1:]]
    return pieces


def take_finished(buffer: str, max_length: int) -> tuple[list[str], str]:
    """Split text that is still arriving (token by token) into what can be spoken now and
    what must wait for more.

    A sentence is finished once text after its end has begun: "3." may still become
    "3.14" and "etc." may still be followed by a lower-case word. A run with no end that
    grows past ``max_length`` characters is spoken up to its last clause or word break.
    """
    ends = [end for end in _sentence_ends(buffer) if buffer[end:].strip()]
    cut = ends[-1] if ends else 0
    ready = split_text(buffer[:cut], max_length)
    rest = buffer[cut:]
    if max_length > 0 and len(rest.strip()) > max_length:
        pieces = split_text(rest, max_length)
        if len(pieces) > 1:
            ready += pieces[:-1]
            rest = rest[rest.rindex(pieces[-1]) :]
    return ready, rest
