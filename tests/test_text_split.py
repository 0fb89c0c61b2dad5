import pytest

from fish_speech.text import Run, normalize_text, split_runs, split_sentences, split_text


def _letters(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize("text", ["", "   ", "\n\t \n"])
def test_blank_input_gives_no_sentences(text: str) -> None:
    assert split_text(text) == []
    assert split_sentences(text) == []


def test_english_sentences_keep_abbreviations_and_decimals() -> None:
    text = "Dr. Smith paid $3.50 at example.com, etc. and left. Did he? Yes! J. R. R. Tolkien"
    assert split_sentences(text) == [
        "Dr. Smith paid $3.50 at example.com, etc. and left.",
        "Did he?",
        "Yes!",
        "J. R. R. Tolkien",
    ]


def test_abbreviation_before_capital_still_ends_sentence() -> None:
    assert split_sentences("Apples, pears, etc. Then the U.S.A. is big.") == [
        "Apples, pears, etc.",
        "Then the U.S.A. is big.",
    ]


def test_quotes_and_brackets_stay_with_their_sentence() -> None:
    assert split_sentences('He said "Stop." Then he left (quietly!). 「好。」') == [
        'He said "Stop."',
        "Then he left (quietly!).",
        "「好。」",
    ]


def test_cjk_terminators_split_without_spaces() -> None:
    assert split_sentences("你好世界。今天好吗？很好！走吧；再见…好") == [
        "你好世界。",
        "今天好吗？",
        "很好！",
        "走吧；",
        "再见…",
        "好",
    ]


def test_newlines_and_ellipsis_end_sentences() -> None:
    assert split_sentences("Line one\nLine two\n\n  Wait... what") == [
        "Line one",
        "Line two",
        "Wait...",
        "what",
    ]


def test_long_sentences_split_at_commas_then_spaces() -> None:
    text = "one two, three four five six seven eight nine ten eleven, twelve"
    pieces = split_text(text, max_length=20)
    assert all(len(piece) <= 20 for piece in pieces)
    assert pieces[0] == "one two,"
    assert _letters(" ".join(pieces)) == _letters(text)


def test_long_unspaced_text_is_cut_hard_without_losing_characters() -> None:
    text = "一二三四五六七八九十" * 5 + "，" + "甲乙丙丁" * 3
    pieces = split_text(text, max_length=16)
    assert len(pieces) > 3
    assert all(len(piece) <= 16 for piece in pieces)
    assert "".join(pieces) == text


def test_max_length_zero_means_unlimited() -> None:
    text = "word " * 100
    assert split_text(text, max_length=0) == [text.strip()]


def test_mixed_scripts_become_runs() -> None:
    assert split_runs("Hello world, 你好世界") == [
        Run("Hello world,", "en"),
        Run("你好世界", "zh"),
    ]


def test_digits_join_their_run_and_cantonese_is_opt_in() -> None:
    assert split_runs("我有3个iPhone。") == [Run("我有3个", "zh"), Run("iPhone。", "en")]
    assert split_runs("你好", han_language="yue") == [Run("你好", "yue")]
    assert split_runs("42!") == [Run("42!", None)]


def test_kana_makes_han_japanese_and_other_scripts_are_tagged() -> None:
    assert split_runs("東京へ行きます") == [Run("東京へ行きます", "ja")]
    assert split_runs("안녕 Привет Γειά") == [
        Run("안녕", "ko"),
        Run("Привет", "ru"),
        Run("Γειά", "el"),
    ]


def test_runs_without_letters_or_digits_are_dropped() -> None:
    assert split_runs("😀 🎉 --") == []


def test_normalize_is_modest() -> None:
    assert normalize_text("  Hello 😀👍🏽  world\u200b ©  ２０２４年 \n\n\n next ") == (
        "Hello world © 2024年\nnext"
    )
    assert normalize_text("Ｈｉ，你好。") == "Hi，你好。"  # full-width punctuation stays
