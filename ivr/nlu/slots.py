"""Slot parsers: turn what a caller said (as transcribed) into digits, a number, yes/no or free text.

Each parser returns None when the utterance does not hold a value, so the flow can count a no-match.
Speech recognisers write numbers both ways ("four five six", "4 5 6", "456", "four hundred fifty six");
all are understood. Sino-Korean digit words (일 이 삼 …) and Korean yes/no words are understood too.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_UNITS = {
    "zero": 0, "oh": 0, "o": 0, "nought": 0, "naught": 0, "nil": 0,
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "영": 0, "공": 0, "일": 1, "이": 2, "삼": 3, "사": 4, "오": 5, "육": 6, "륙": 6, "칠": 7, "팔": 8, "구": 9,
}
_TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_REPEAT = {"double": 2, "triple": 3}
_TOKEN = re.compile(r"\d+|[^\W\d_]+", re.UNICODE)


class _Group:
    """One spoken number being built ("four hundred fifty six")."""

    def __init__(self) -> None:
        self.total = 0  # completed thousands
        self.current = 0  # below a thousand
        self.last = ""  # kind of the last word: unit, teen, tens, hundred, thousand
        self.words = 0

    def value(self) -> int:
        return self.total + self.current


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower().replace("-", " "))


def _number_groups(text: str) -> list[str]:
    """Split an utterance into the numbers it says, each as a digit string, in order.

    "four five six" → ["4", "5", "6"]; "four hundred fifty six" → ["456"]; "twelve thirty four" →
    ["12", "34"]; "double five" → ["5", "5"]; "1 2 3" → ["1", "2", "3"]. Other words separate numbers.
    """
    groups: list[str] = []
    group: _Group | None = None
    repeat = 1

    def flush() -> None:
        nonlocal group
        if group is not None and group.words:
            groups.append(str(group.value()))
        group = None

    for token in _tokens(text):
        if token.isdigit():
            flush()
            groups.extend([token] * repeat)
            repeat = 1
            continue
        if token in _REPEAT:
            flush()
            repeat = _REPEAT[token]
            continue
        if token == "and" and group is not None and group.last == "hundred":
            continue
        if token in _UNITS:
            value = _UNITS[token]
            if repeat > 1:
                flush()
                groups.extend([str(value)] * repeat)
                repeat = 1
                continue
            if group is not None and group.last in ("tens", "hundred", "thousand") and token not in ("oh", "o"):
                group.current += value
            else:
                flush()
                group = _Group()
                group.current = value
            group.last, group.words = "unit", group.words + 1
        elif token in _TEENS or token in _TENS:
            value = _TEENS.get(token) or _TENS[token]
            if group is not None and group.last in ("hundred", "thousand"):
                group.current += value
            else:
                flush()
                group = _Group()
                group.current = value
            group.last, group.words = ("teen" if token in _TEENS else "tens"), group.words + 1
        elif token == "hundred":
            if group is None or group.last == "hundred" or group.current >= 100:
                flush()
                group = _Group()
            group.current = max(group.current, 1) * 100
            group.last, group.words = "hundred", group.words + 1
        elif token == "thousand":
            if group is None:
                group = _Group()
                group.current = 1
            group.total += max(group.current, 1) * 1000
            group.current = 0
            group.last, group.words = "thousand", group.words + 1
        else:
            flush()
            repeat = 1
    flush()
    return groups


def parse_digits(text: str) -> str | None:
    """The digit string a caller spoke or keyed ("four five six", "4 5 6", "four hundred fifty six",
    "oh one two", "double seven") → "456", "456", "456", "012", "77"; None if there are no digits."""
    groups = _number_groups(text)
    return "".join(groups) if groups else None


def parse_number(text: str) -> int | None:
    """The first number in an utterance ("I'd give it a four" → 4, "twenty five" → 25, "4" → 4)."""
    groups = _number_groups(text)
    return int(groups[0]) if groups else None


_YES = {
    "yes", "yeah", "yea", "yep", "yup", "ya", "sure", "correct", "right", "affirmative", "absolutely",
    "ok", "okay", "indeed", "exactly", "true", "definitely", "certainly", "uh-huh", "mhm", "yes please",
    "네", "예", "응", "맞아요", "맞습니다", "맞아", "그래요", "좋아요",
}
_NO = {
    "no", "nope", "nah", "not", "incorrect", "wrong", "negative", "false", "never", "don't", "isn't",
    "wasn't", "aren't",
    "아니요", "아니오", "아니", "아닙니다", "틀려요", "틀렸어요",
}
_LEADING_YES = {"yes", "yep", "yup", "sure", "correct", "absolutely", "definitely", "네", "예", "맞아요", "맞습니다"}
_YES_PHRASES = ("of course", "that's it", "that is it", "uh huh", "go ahead")


def parse_yes_no(text: str) -> bool | None:
    """True for yes ("yeah", "that's right", "correct", "네"), False for no ("nope", "that's not right",
    "wrong", "아니요"), None when neither. An answer that starts with a plain yes or no word is that answer
    ("yes, that's right", and "yes, not right" as a recognizer may mishear it); otherwise a negation wins:
    "that's not right" is no."""
    lowered = text.lower().strip()
    words = re.findall(r"[\w']+", lowered)
    if words and words[0] in _LEADING_YES:
        return True
    if words and words[0] in _NO:
        return False
    if any(word in _NO for word in words):
        return False
    if any(word in _YES for word in words) or any(phrase in lowered for phrase in _YES_PHRASES):
        return True
    return None


def parse_text(text: str) -> str | None:
    """Free text: the utterance itself, trimmed; None when empty."""
    stripped = " ".join(text.split())
    return stripped or None


SLOT_PARSERS: dict[str, Callable[[str], object | None]] = {
    "digits": parse_digits,
    "number": parse_number,
    "yes_no": parse_yes_no,
    "text": parse_text,
}
"""Slot type name (as written in a flow's ``slot:``) → parser of a transcript."""


def parse_slot(kind: str, text: str) -> object | None:
    """Parse ``text`` as slot type ``kind`` (digits, number, yes_no, text); None when it holds no value."""
    return SLOT_PARSERS[kind](text)


def parse_dtmf_slot(kind: str, keys: str) -> object | None:
    """A slot value from keys the caller pressed (terminator already removed): digits as typed, numbers
    as their value, 1 = yes and 2 = no; None for keys that mean nothing here (free text takes no keys)."""
    keys = keys.strip().rstrip("#")
    if not keys:
        return None
    if kind == "digits":
        return keys if keys.isdigit() else None
    if kind == "number":
        return int(keys) if keys.isdigit() else None
    if kind == "yes_no":
        return {"1": True, "2": False}.get(keys)
    return None
