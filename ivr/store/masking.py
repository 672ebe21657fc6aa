"""Masking of card numbers, account numbers and other collected values in what people and logs see.

A caller may type or speak a number ("4111 1111 1111 1111", "four one one one ...", "4111;1111_1111|1111",
"four one one one and one one one one", "for won won won ..."). Digits, spoken digit words and the words
that sound like digits ("won", "to", "for", "ate") separated by spaces, dashes, dots, commas, slashes,
``;``, ``_``, ``|``, ``:`` or "and" form one run. Two levels:

- :func:`mask_cards`: a run that is a card number (13 to 19 digits passing the Luhn check) keeps only its
  last 4 digits. Applied for everyone, the agent on the call included.
- :func:`mask_sensitive`: also every run of 8 or more digits keeps only its last 4. For text that leaves
  the people handling the call: logs, metrics, webhooks to third parties, other agents.

Declared sensitivity (``sensitive: card | secret | none`` in a flow) is applied by :mod:`ivr.store.views`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

MIN_DIGITS = 8
KEEP_DIGITS = 4
CARD_DIGITS = range(13, 20)
_CARD_LENGTHS = (16, 15, 19, 14, 13, 17, 18)  # most common first

_DIGIT_WORDS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9"}
# Words a recognizer writes for a spoken digit: they count as digits only inside a run of digits.
_HOMOPHONES = {"won": "1", "to": "2", "too": "2", "for": "4", "fore": "4", "ate": "8"}
_WORDS = {**_DIGIT_WORDS, **_HOMOPHONES}
_TOKEN = re.compile(r"\d+|\b(?:" + "|".join(sorted(_WORDS, key=len, reverse=True)) + r")\b", re.IGNORECASE)
_GAP = re.compile(r"(?:[\s\-.,/;_|:]|\band\b|&)*", re.IGNORECASE)
# Fields that hold phone numbers or ids, not card or account numbers.
UNMASKED_KEYS = frozenset({"caller", "called", "call_id", "id", "from", "to", "uri"})


def _digits(token: str) -> str:
    return token if token[0].isdigit() else _WORDS[token.lower()]


def _is_homophone(token: str) -> bool:
    return token.lower() in _HOMOPHONES


def luhn_valid(digits: str) -> bool:
    """Whether a digit string passes the Luhn check every payment card number passes."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return bool(digits) and total % 10 == 0


def is_card_number(value: object) -> bool:
    """Whether ``value`` (digits with any separators) is a card number: 13 to 19 digits and Luhn-valid."""
    digits = "".join(_digits(m.group()) for m in _TOKEN.finditer(str(value)))
    return len(digits) in CARD_DIGITS and luhn_valid(digits)


def _runs(text: str) -> list[list[re.Match[str]]]:
    """Tokens that belong together: digits and digit words separated only by separators."""
    groups: list[list[re.Match[str]]] = []
    for m in _TOKEN.finditer(text):
        if groups:
            prev = groups[-1][-1]
            gap = text[prev.end() : m.start()]
            if _GAP.fullmatch(gap) and (gap or prev.group()[0].isdigit() != m.group()[0].isdigit()):
                groups[-1].append(m)
                continue
        groups.append([m])
    return groups


def _core(group: list[re.Match[str]]) -> tuple[int, int]:
    """The run without homophones at its ends ("to", "for" next to a number are usually words)."""
    start, end = 0, len(group)
    while start < end and _is_homophone(group[start].group()):
        start += 1
    while end > start and _is_homophone(group[end - 1].group()):
        end -= 1
    return start, end


def _count(group: list[re.Match[str]]) -> int:
    return sum(len(_digits(m.group())) for m in group)


def _card_span(group: list[re.Match[str]]) -> list[re.Match[str]] | None:
    """The part of a run that is a card number ("5 to 4111 ..." holds one after "5 to"): of the Luhn-valid
    parts, the one with the fewest sound-alike words, then of the most common card length."""
    digits = [_digits(m.group()) for m in group]
    best: tuple[tuple[int, int], list[re.Match[str]]] | None = None
    for lo in range(len(group)):
        text = ""
        for hi in range(lo, len(group)):
            text += digits[hi]
            if len(text) > CARD_DIGITS[-1]:
                break
            if len(text) in CARD_DIGITS and luhn_valid(text):
                homophones = sum(_is_homophone(m.group()) for m in group[lo : hi + 1])
                key = (homophones, _CARD_LENGTHS.index(len(text)))
                if best is None or key < best[0]:
                    best = (key, group[lo : hi + 1])
    return best[1] if best else None


def _mask_tokens(group: list[re.Match[str]], keep: int) -> list[tuple[int, int, str]]:
    to_mask = _count(group) - keep
    edits: list[tuple[int, int, str]] = []
    for m in group:
        if to_mask <= 0:
            break
        token = m.group()
        if token[0].isdigit():
            n = min(to_mask, len(token))
            edits.append((m.start(), m.start() + n, "*" * n))
            to_mask -= n
        else:
            edits.append((m.start(), m.end(), "*"))
            to_mask -= 1
    return edits


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    if not edits:
        return text
    out: list[str] = []
    pos = 0
    for start, end, repl in sorted(edits):
        out.append(text[pos:start])
        out.append(repl)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def mask_cards(text: str) -> str:
    """``text`` with every card number (13-19 digits, Luhn-valid, typed or spoken) masked but its last 4."""
    if not text:
        return text
    edits: list[tuple[int, int, str]] = []
    for group in _runs(text):
        span = _card_span(group)
        if span is not None:
            edits.extend(_mask_tokens(span, KEEP_DIGITS))
    return _apply(text, edits)


def mask_sensitive(text: str) -> str:
    """``text`` with card numbers and every run of 8+ typed or spoken digits masked except its last 4."""
    if not text:
        return text
    edits: list[tuple[int, int, str]] = []
    for group in _runs(text):
        span = _card_span(group)
        if span is None:
            start, end = _core(group)
            span = group[start:end]
            if _count(span) < MIN_DIGITS:
                continue
        edits.extend(_mask_tokens(span, KEEP_DIGITS))
    return _apply(text, edits)


def mask_url(url: str) -> str:
    """A URL as it may be logged: no user:password, numbers and e-mail addresses masked in its path, query
    values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask_sensitive(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    path = "/".join("***" if "@" in segment else segment for segment in parts.path.split("/"))  # e-mails
    path = re.sub(r"\d{4,}", lambda m: mask_value(m.group()), path)
    query = re.sub(r"=([^&]*)", lambda m: "=" + ("***" if m.group(1) else ""), parts.query)
    return urlunsplit((parts.scheme, host, path, query, ""))


def mask_value(value: object) -> str:
    """A collected value as others see it: a number of 8+ digits keeps its last 4 (separators kept), a
    shorter one is starred out digit by digit, anything else becomes ``***``."""
    text = str(value)
    digits = sum(ch.isdigit() for ch in text)
    if digits and re.fullmatch(r"[\d\s\-.]+", text):
        to_mask = digits - KEEP_DIGITS if digits >= MIN_DIGITS else digits
        out = []
        for ch in text:
            if ch.isdigit() and to_mask > 0:
                out.append("*")
                to_mask -= 1
            else:
                out.append(ch)
        return "".join(out)
    return "***" if text else text


def mask_data(value: object, key: str = "") -> object:
    """Mask every string (and long integer) inside a JSON-like value, except phone-number/id fields."""
    if key in UNMASKED_KEYS:
        return value
    if isinstance(value, str):
        return mask_sensitive(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return mask_sensitive(str(value)) if abs(value) >= 10 ** (MIN_DIGITS - 1) else value
    if isinstance(value, Mapping):
        return {k: mask_data(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_data(v) for v in value]
    return value
