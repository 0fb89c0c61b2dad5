"""Text splitting for latency modes and for text that arrives token by token."""

from __future__ import annotations

from fish_speech.text import split_for_latency, take_finished

TEXT = "First part, second part. Next one, with a clause. Last."


def test_latency_modes_split_sentences_then_clauses():
    assert split_for_latency(TEXT, 200, "normal") == [
        "First part, second part.",
        "Next one, with a clause.",
        "Last.",
    ]
    assert split_for_latency(TEXT, 200, "balanced") == [
        "First part,",
        "second part.",
        "Next one, with a clause.",
        "Last.",
    ]
    assert split_for_latency(TEXT, 200, "low") == [
        "First part,",
        "second part.",
        "Next one,",
        "with a clause.",
        "Last.",
    ]


def test_a_sentence_is_finished_once_text_after_it_begins():
    assert take_finished("Hello there.", 200) == ([], "Hello there.")
    assert take_finished("Hello there. ", 200) == ([], "Hello there. ")
    assert take_finished("Hello there. Ne", 200) == (["Hello there."], " Ne")
    assert take_finished("Pi is 3.", 200) == ([], "Pi is 3.")  # may become 3.14
    assert take_finished("Pi is 3.14. So", 200) == (["Pi is 3.14."], " So")
    assert take_finished("Ask Dr. Smith", 200) == ([], "Ask Dr. Smith")
    assert take_finished("你好。世界", 200) == (["你好。"], "世界")


def test_token_stream_keeps_every_character():
    tokens = ["Hel", "lo ", "there", ". ", "How ", "are", " you", "? ", "Fine", "."]
    buffer, spoken = "", []
    for token in tokens:
        ready, buffer = take_finished(buffer + token, 200)
        spoken += ready
    assert spoken == ["Hello there.", "How are you?"] and buffer == " Fine."


def test_a_long_run_without_an_end_is_cut_at_a_break():
    words = "word " * 50
    ready, rest = take_finished(words, 100)
    assert ready and all(len(piece) <= 100 for piece in ready)
    assert " ".join([*ready, rest.strip()]).split() == words.split()
