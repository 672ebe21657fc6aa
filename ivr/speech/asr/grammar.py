"""Phrase grammars for grammar-like prompts ("say yes or no"), shared by both engines.

Vosk decodes against the phrases themselves (plus an unknown-word symbol that absorbs out-of-grammar
speech); Whisper transcribes freely with the phrases as a hint and the result is then *snapped* to the
closest phrase, or rejected when nothing is close enough.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

# Tokens the Vosk models use for "some word not in the vocabulary" (English models: [unk]; Kaldi
# recipes such as the Korean model: <UNK>).
UNKNOWN_WORDS = ("[unk]", "<unk>", "<UNK>")

DEFAULT_SNAP_THRESHOLD = 0.75

_PUNCT = re.compile(r"[^\w\s']", re.UNICODE)


def normalize(text: str) -> str:
    """Lower-case, NFC, punctuation removed, whitespace collapsed: the form phrases are compared in."""
    text = unicodedata.normalize("NFC", text).lower()
    text = _PUNCT.sub(" ", text)
    return " ".join(text.split())


def clean_phrases(phrases: Iterable[str]) -> list[str]:
    """Normalised, de-duplicated, non-empty phrases in their original order."""
    seen: dict[str, None] = {}
    for phrase in phrases:
        norm = normalize(phrase)
        if norm and norm not in seen and norm not in {normalize(u) for u in UNKNOWN_WORDS}:
            seen[norm] = None
    return list(seen)


@dataclass(frozen=True)
class PhraseMatch:
    """The grammar phrase closest to what was heard, and how close it is (0..1)."""

    phrase: str
    score: float


def _ratio(a: str, b: str) -> float:
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def phrase_score(heard: str, phrase: str) -> float:
    """How well ``phrase`` matches ``heard`` (both normalised), 0..1.

    The whole utterance is compared, and so is every window of about the phrase's length, so a phrase
    said inside a longer sentence ("I'd like order status please") still scores high.
    """
    if not heard or not phrase:
        return 0.0
    best = _ratio(heard, phrase)
    words = heard.split()
    size = len(phrase.split())
    for width in {max(1, size - 1), size, size + 1}:
        for start in range(0, max(1, len(words) - width + 1)):
            window = " ".join(words[start : start + width])
            # A window match counts a little less than a whole-utterance match.
            best = max(best, 0.95 * _ratio(window, phrase))
    return best


_DIGITS = re.compile(r"\d+")


def spell_numbers(text: str) -> str:
    """Digits written out as English words ("5" → "five", "21" → "twenty one"), the way phrases are written."""
    from num2words import num2words

    return _DIGITS.sub(lambda m: " " + num2words(int(m.group())).replace("-", " ").replace(",", "") + " ", text)


def closest_phrase(heard: str, phrases: Sequence[str]) -> PhraseMatch | None:
    """The best-scoring phrase for ``heard`` (normalised phrases), or None when there are none.

    A recognizer that writes "5" for a caller's "five" still matches the phrase "five" (and "5" matches "5").
    """
    norm = normalize(heard)
    if _DIGITS.search(norm) and not any(_DIGITS.search(p) for p in phrases):
        norm = normalize(spell_numbers(norm))
    scored = [PhraseMatch(p, phrase_score(norm, p)) for p in phrases]
    if not scored:
        return None
    return max(scored, key=lambda m: m.score)


def snap(heard: str, phrases: Sequence[str], threshold: float = DEFAULT_SNAP_THRESHOLD) -> PhraseMatch | None:
    """The phrase ``heard`` most likely was, or None (reject) when no phrase scores ``threshold``."""
    match = closest_phrase(heard, phrases)
    if match is None or match.score < threshold:
        return None
    return match


def exact_phrase(words: Sequence[str], phrases: Sequence[str]) -> str | None:
    """The phrase the decoded ``words`` spell exactly (unknown-word tokens ignored), else None.

    Used for Vosk grammar results: a decoder confined to the phrases emits a chain of phrase words for
    out-of-grammar speech (``no no yes``), so anything but exactly one phrase counts as a rejection.
    """
    known = [w for w in words if w not in UNKNOWN_WORDS]
    text = normalize(" ".join(known))
    return text if text and text in phrases else None
