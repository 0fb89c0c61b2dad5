"""Numbers, times, money and units written out as a speaker reads them (``normalize: true``).

The Fish model reads digits unreliably ("1,250" may come out digit by digit, "3:30" as a
ratio), so before synthesis each sentence is verbalised in its own language: Chinese where
the sentence has more Han characters than Latin letters, English otherwise. The number
words come from ``cn2an`` and ``num2words``; this module only finds the spans (times, phone
numbers, money, units, ordinals, dates) and chooses how each one is read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import cn2an
import regex
from num2words import num2words

from fish_speech.text.split import split_sentences

log = logging.getLogger(__name__)

_HAN = regex.compile(r"\p{Han}")
_LATIN_WORD = regex.compile(r"\p{Latin}+")
_DIGIT = regex.compile(r"\d")

# A number as written: 1,250 / 1250 / 3.5 (no sign; signs are handled by each reader).
_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"

_EN_UNITS = {
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "mph": ("mile per hour", "miles per hour"),
    "km": ("kilometer", "kilometers"),
    "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"),
    "kg": ("kilogram", "kilograms"),
    "mg": ("milligram", "milligrams"),
    "ml": ("milliliter", "milliliters"),
    "kb": ("kilobyte", "kilobytes"),
    "mb": ("megabyte", "megabytes"),
    "gb": ("gigabyte", "gigabytes"),
    "tb": ("terabyte", "terabytes"),
    "khz": ("kilohertz", "kilohertz"),
    "hz": ("hertz", "hertz"),
    "°c": ("degree Celsius", "degrees Celsius"),
    "°f": ("degree Fahrenheit", "degrees Fahrenheit"),
    "lbs": ("pound", "pounds"),
    "lb": ("pound", "pounds"),
    "oz": ("ounce", "ounces"),
    "ft": ("foot", "feet"),
    "in": ("inch", "inches"),
    "m": ("meter", "meters"),
    "g": ("gram", "grams"),
    "l": ("liter", "liters"),
    "h": ("hour", "hours"),
    "min": ("minute", "minutes"),
    "s": ("second", "seconds"),
    "ms": ("millisecond", "milliseconds"),
}
# "in", "m", "s" and the like are words too: they count as units only right after a number
# with no space ("5m", "10s"), or when unambiguous ("5 kg").
_EN_SPACED_UNITS = {"km/h", "mph", "km", "cm", "mm", "kg", "mg", "ml", "kb", "mb", "gb", "tb",
                    "khz", "hz", "°c", "°f", "lbs", "lb", "oz", "ft", "min", "ms"}  # fmt: skip

_ZH_UNITS = {
    "km/h": "公里每小时",
    "km": "公里",
    "cm": "厘米",
    "mm": "毫米",
    "kg": "千克",
    "mg": "毫克",
    "ml": "毫升",
    "gb": "G",
    "mb": "兆",
    "°c": "摄氏度",
    "°f": "华氏度",
    "℃": "摄氏度",
    "m": "米",
    "g": "克",
    "l": "升",
}

_CURRENCIES_EN = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "US$": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "¥": ("yuan", "yuan", "fen", "fen"),
    "￥": ("yuan", "yuan", "fen", "fen"),
}
_CURRENCIES_ZH = {"$": "美元", "US$": "美元", "€": "欧元", "£": "英镑", "¥": "元", "￥": "元"}
_SCALES = {"k": "thousand", "m": "million", "b": "billion", "bn": "billion"}
_SCALES.update({w: w for w in ("thousand", "million", "billion", "trillion")})

_MONTHS = ("January February March April May June July August September October November "
           "December").split()  # fmt: skip

_CURRENCY_SYMBOL = r"(?P<symbol>US\$|[$€£¥￥])"
_CURRENCY = regex.compile(
    _CURRENCY_SYMBOL + rf"\s?(?P<amount>{_NUMBER})"
    r"(?:\s?(?P<scale>thousand|million|billion|trillion|bn|[kKmMbB])\b)?"
)
_TIME = regex.compile(
    r"(?<![\d:])(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)(?::(?P<s>[0-5]\d))?(?![\d:])"
    # The dot after "p.m" is left in place: it may also end the sentence.
    r"(?:\s?(?P<ampm>[aApP])\.?\s?[mM](?!\w))?"
)
_HOUR_AMPM = regex.compile(
    r"(?<![\d:.])(?P<h>1[0-2]|0?[1-9])\s?(?P<ampm>[aApP])\.?\s?[mM](?![A-Za-z])"
)
_ISO_DATE = regex.compile(
    r"(?<![\d-])(?P<y>\d{4})-(?P<mo>0?[1-9]|1[0-2])-(?P<d>0?[1-9]|[12]\d|3[01])(?![\d-])"
)
# Digit runs are bounded by digits and Latin letters only: in Chinese text the neighbours
# are Han characters, which count as word characters.
_PHONE = regex.compile(
    r"(?<![\dA-Za-z+])(?:\+\d{1,3}[\s-]?)?(?:\(\d{2,4}\)\s?|\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}"
    r"(?![\dA-Za-z])"
    r"|(?<![\dA-Za-z])(?:0\d{2,3}-\d{7,8}|1[3-9]\d{9})(?![\dA-Za-z])"  # Chinese landline, mobile
)
_LONG_DIGITS = regex.compile(r"(?<![\dA-Za-z.,])\d{7,}(?![\dA-Za-z]|[.,]\d)")
_PERCENT = regex.compile(rf"(?P<sign>-)?(?P<n>{_NUMBER})\s?%")
_ORDINAL = regex.compile(r"(?<!\w)(?P<n>\d+)(?P<suffix>st|nd|rd|th)(?!\w)", regex.IGNORECASE)
_UNIT = regex.compile(
    rf"(?<![\dA-Za-z.,])(?P<n>-?{_NUMBER})(?P<space>\s?)(?P<unit>km/h|°[CcFf]|℃|[A-Za-z]{{1,3}})(?![A-Za-z0-9/])"
)
_SIGNED_NUMBER = regex.compile(rf"(?<![\w.,:/])(?P<sign>[-−])?(?P<n>{_NUMBER})(?![\w]|[.,:]\d)")
_YEAR = regex.compile(r"^(1[1-9]|20)\d\d$")


def _amount(text: str) -> str:
    return text.replace(",", "")


def _digits_en(digits: str) -> str:
    names = "zero one two three four five six seven eight nine".split()
    return " ".join(names[int(d)] for d in digits)


def _words_en(number: int, **kwargs: str) -> str:
    # num2words writes "one thousand, two hundred": the comma would become a pause.
    return num2words(number, **kwargs).replace(",", "")


def _cardinal_en(number: str, year_like: bool = False) -> str:
    """Words for '1,250', '3.5', or '1999' (read as a year when ``year_like``)."""
    plain = _amount(number)
    if "." in plain:
        whole, frac = plain.split(".", 1)
        return f"{_words_en(int(whole))} point {_digits_en(frac)}"
    if year_like and "," not in number and _YEAR.match(plain):
        return _words_en(int(plain), to="year")
    return _words_en(int(plain))


def _money_en(match: regex.Match) -> str:
    one, many, sub_one, sub_many = _CURRENCIES_EN[match["symbol"]]
    amount = _amount(match["amount"])
    if match["scale"]:
        scale = _SCALES[match["scale"].lower()]
        return f"{_cardinal_en(amount)} {scale} {many}"
    whole, _, cents = amount.partition(".")
    units, sub = int(whole), int((cents + "0")[:2]) if cents else 0
    if len(cents) > 2:  # "$0.125" is not money in cents: read the number
        return f"{_cardinal_en(amount)} {many}"
    parts = []
    if units or not sub:
        parts.append(f"{_words_en(units)} {one if units == 1 else many}")
    if sub:
        parts.append(f"{_words_en(sub)} {sub_one if sub == 1 else sub_many}")
    return " and ".join(parts)


def _time_en(match: regex.Match) -> str:
    hour, minute = int(match["h"]), int(match["m"])
    ampm = match["ampm"]
    words = _words_en(hour if hour or not ampm else 12)
    if minute == 0:
        words += "" if ampm else " o'clock"
    elif minute < 10:
        words += f" oh {_words_en(minute)}"
    else:
        words += f" {_words_en(minute)}"
    if match["s"]:
        words += f" and {_words_en(int(match['s']))} seconds"
    if ampm:
        words += " a m" if ampm.lower() == "a" else " p m"
    return words


def _date_en(match: regex.Match) -> str:
    year, month, day = int(match["y"]), int(match["mo"]), int(match["d"])
    return f"{_MONTHS[month - 1]} {_words_en(day, to='ordinal')}, {_words_en(year, to='year')}"


def _phone_en(match: regex.Match) -> str:
    groups = regex.findall(r"\d+", match.group())
    return ", ".join(_digits_en(g) for g in groups)


def _percent_en(match: regex.Match) -> str:
    sign = "minus " if match["sign"] else ""
    return f"{sign}{_cardinal_en(match['n'])} percent"


def _ordinal_en(match: regex.Match) -> str:
    return _words_en(int(match["n"]), to="ordinal")


def _unit_en(match: regex.Match) -> str:
    unit = match["unit"].lower()
    if unit not in _EN_UNITS or (match["space"] and unit not in _EN_SPACED_UNITS):
        return match.group()
    number = match["n"]
    one, many = _EN_UNITS[unit]
    sign = "minus " if number.startswith("-") else ""
    number = number.lstrip("-")
    name = one if _amount(number) == "1" else many
    return f"{sign}{_cardinal_en(number)} {name}"


def _number_en(match: regex.Match) -> str:
    sign = "minus " if match["sign"] else ""
    return sign + _cardinal_en(match["n"], year_like=not match["sign"])


def _digits_zh(digits: str) -> str:
    return "".join("零一二三四五六七八九"[int(d)] for d in digits)


def _number_zh(number: str) -> str:
    plain = _amount(number)
    return cn2an.an2cn(plain, "low")


def _money_zh(match: regex.Match) -> str:
    scale = match["scale"]
    amount = _number_zh(match["amount"])
    if scale:
        zh_scale = {"k": "千", "thousand": "千", "m": "百万", "million": "百万",
                    "b": "十亿", "bn": "十亿", "billion": "十亿", "trillion": "万亿"}  # fmt: skip
        amount += zh_scale[scale.lower()]
    return amount + _CURRENCIES_ZH[match["symbol"]]


def _time_zh(match: regex.Match) -> str:
    hour, minute = int(match["h"]), int(match["m"])
    words = _number_zh(str(hour)) + "点"
    if minute:
        words += ("零" if minute < 10 else "") + _number_zh(str(minute)) + "分"
    if match["s"]:
        words += _number_zh(str(int(match["s"]))) + "秒"
    if match["ampm"]:
        words = ("上午" if match["ampm"].lower() == "a" else "下午") + words
    return words


def _date_zh(match: regex.Match) -> str:
    month, day = _number_zh(str(int(match["mo"]))), _number_zh(str(int(match["d"])))
    return f"{_digits_zh(match['y'])}年{month}月{day}日"


def _phone_zh(match: regex.Match) -> str:
    return "，".join(_digits_zh(g) for g in regex.findall(r"\d+", match.group()))


def _unit_zh(match: regex.Match) -> str:
    unit = match["unit"].lower()
    if unit not in _ZH_UNITS:
        return match.group()
    number = match["n"]
    sign = "负" if number.startswith("-") else ""
    return sign + _number_zh(number.lstrip("-")) + _ZH_UNITS[unit]


def _rest_zh(text: str) -> str:
    """Dates written with 年月日, percentages, fractions, decimals and plain numbers."""
    text = regex.sub(r"(?<=\d),(?=\d{3})", "", text)
    try:
        return cn2an.transform(text, "an2cn")
    except (ValueError, KeyError, IndexError) as exc:  # cn2an refuses odd forms: keep them
        log.debug("cn2an could not verbalise %r: %s", text, exc)
        return text


Rule = tuple[regex.Pattern, Callable[[regex.Match], str]]

_EN_RULES: list[Rule] = [
    (_CURRENCY, _money_en),
    (_ISO_DATE, _date_en),
    (_TIME, _time_en),
    (_HOUR_AMPM, lambda m: f"{_words_en(int(m['h']))} {m['ampm'].lower()} m"),
    (_PHONE, _phone_en),
    (_LONG_DIGITS, lambda m: _digits_en(m.group())),
    (_PERCENT, _percent_en),
    (_ORDINAL, _ordinal_en),
    (_UNIT, _unit_en),
    (_SIGNED_NUMBER, _number_en),
]
_ZH_RULES: list[Rule] = [
    (_CURRENCY, _money_zh),
    (_ISO_DATE, _date_zh),
    (_TIME, _time_zh),
    (
        _HOUR_AMPM,
        lambda m: ("上午" if m["ampm"].lower() == "a" else "下午") + _number_zh(m["h"]) + "点",
    ),
    (_PHONE, _phone_zh),
    (_LONG_DIGITS, lambda m: _digits_zh(m.group())),
    (_UNIT, _unit_zh),
]


def _apply(rules: list[Rule], text: str) -> str:
    for pattern, reader in rules:
        text = pattern.sub(reader, text)
    return text


def is_chinese(sentence: str) -> bool:
    # Han characters against Latin *words*, so unit symbols ("kg", "°C") do not tip it.
    return len(_HAN.findall(sentence)) > len(_LATIN_WORD.findall(sentence))


def verbalize_sentence(sentence: str) -> str:
    if not _DIGIT.search(sentence):
        return sentence
    if is_chinese(sentence):
        return _rest_zh(_apply(_ZH_RULES, sentence))
    return _apply(_EN_RULES, sentence)


def verbalize(text: str) -> str:
    """``text`` with its numbers, times, money, dates and units written as words.

    Each sentence keeps its position and the text between sentences (spaces, line breaks)
    is kept, so sentence splitting afterwards sees the same boundaries.
    """
    if not _DIGIT.search(text):
        return text
    out: list[str] = []
    position = 0
    for sentence in split_sentences(text):
        start = text.find(sentence, position)
        out.append(text[position:start])
        out.append(verbalize_sentence(sentence))
        position = start + len(sentence)
    out.append(text[position:])
    return "".join(out)
