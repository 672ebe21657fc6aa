"""Masking of card and account numbers in text shown to people or written to logs.

A caller may type or speak a card number ("4111 1111 1111 1111", "four one one one ..."). Any run of 8 or
more digits (digits and spoken digit words, separated by spaces, dashes, dots or commas) keeps only its
last 4 digits; the others become ``*``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MIN_DIGITS = 8
KEEP_DIGITS = 4

_DIGIT_WORDS = ("zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TOKEN = re.compile(r"\d+|\b(?:" + "|".join(_DIGIT_WORDS) + r")\b", re.IGNORECASE)
_GAP = re.compile(r"[\s\-.,/]*")
# Fields that hold phone numbers or ids, not card or account numbers.
UNMASKED_KEYS = frozenset({"caller", "called", "call_id", "id", "from", "to", "uri"})


def _digit_count(token: str) -> int:
    return len(token) if token[0].isdigit() else 1


def _mask_group(text: str, group: list[re.Match[str]]) -> list[tuple[int, int, str]]:
    total = sum(_digit_count(m.group()) for m in group)
    to_mask = total - KEEP_DIGITS
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


def mask_sensitive(text: str) -> str:
    """Return ``text`` with every run of 8+ typed or spoken digits masked except its last 4 digits."""
    if not text:
        return text
    tokens = list(_TOKEN.finditer(text))
    groups: list[list[re.Match[str]]] = []
    for m in tokens:
        if groups:
            prev = groups[-1][-1]
            gap = text[prev.end() : m.start()]
            if _GAP.fullmatch(gap) and (gap or (prev.group()[0].isdigit() != m.group()[0].isdigit())):
                groups[-1].append(m)
                continue
        groups.append([m])
    edits: list[tuple[int, int, str]] = []
    for group in groups:
        if sum(_digit_count(m.group()) for m in group) >= MIN_DIGITS:
            edits.extend(_mask_group(text, group))
    if not edits:
        return text
    out: list[str] = []
    pos = 0
    for start, end, repl in edits:
        out.append(text[pos:start])
        out.append(repl)
        pos = end
    out.append(text[pos:])
    return "".join(out)


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
