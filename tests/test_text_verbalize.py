"""Numbers, money, times, dates and units read as words, per sentence language."""

from __future__ import annotations

import pytest

from fish_speech.text.verbalize import verbalize


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("It costs $12.50 today.", "It costs twelve dollars and fifty cents today."),
        ("I paid $1 and £0.99.", "I paid one dollar and ninety-nine pence."),
        ("$5 million raised.", "five million dollars raised."),
        ("Meet at 3:30 pm.", "Meet at three thirty p m."),
        ("Wake at 7am.", "Wake at seven a m."),
        ("The meeting is at 12:00.", "The meeting is at twelve o'clock."),
        ("Leave at 9:05.", "Leave at nine oh five."),
        ("We had 1,250 visitors.", "We had one thousand two hundred and fifty visitors."),
        ("She came 5th.", "She came fifth."),
        ("Growth was 3.5% in 2024.", "Growth was three point five percent in twenty twenty-four."),
        ("Pi is 3.14.", "Pi is three point one four."),
        ("Temperature -5 degrees.", "Temperature minus five degrees."),
        ("Call 555-123-4567 now.", "Call five five five, one two three, four five six seven now."),
        ("On 2024-03-05 we left.", "On March fifth, twenty twenty-four we left."),
        (
            "It weighs 5 kg and is 10cm long.",
            "It weighs five kilograms and is ten centimeters long.",
        ),
        ("It is 25°C.", "It is twenty-five degrees Celsius."),
        ("Give me 5 min.", "Give me five minutes."),
        ("Room 101 is free.", "Room one hundred and one is free."),
        # A unit-like word after a space stays a word.
        ("I have 2 in stock.", "I have two in stock."),
    ],
)
def test_english(text: str, spoken: str) -> None:
    assert verbalize(text) == spoken


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("2024年3月5日出发。", "二零二四年三月五日出发。"),
        ("增长了3.5%。", "增长了百分之三点五。"),
        ("会议在12:30开始。", "会议在十二点三十分开始。"),
        ("下午3:05见。", "下午三点零五分见。"),
        ("请拨打13812345678。", "请拨打一三八一二三四五六七八。"),
        ("电话010-12345678。", "电话零一零，一二三四五六七八。"),
        ("价格是¥12.5。", "价格是十二点五元。"),
        ("温度25°C，重2.5kg。", "温度二十五摄氏度，重二点五千克。"),
        ("共1,250人，第5名。", "共一千二百五十人，第五名。"),
        ("3/4的人同意。", "四分之三的人同意。"),
        ("日期是2024-03-05。", "日期是二零二四年三月五日。"),
    ],
)
def test_chinese(text: str, spoken: str) -> None:
    assert verbalize(text) == spoken


def test_each_sentence_in_its_own_language() -> None:
    text = "I have 3 cats. 我有3只猫。\nThat is 2 more."
    assert verbalize(text) == "I have three cats. 我有三只猫。\nThat is two more."


def test_text_without_digits_is_untouched() -> None:
    text = "  Nothing to read here!  没有数字。 "
    assert verbalize(text) == text
