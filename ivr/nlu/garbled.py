"""Text a recognizer produced that no caller said: a decoding loop or noise heard as a chant of words."""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def looks_garbled(text: str, max_run: int = 4) -> bool:
    """True when a word or a run of up to ``max_run`` words repeats three times in a row.

    "please, please, please, please" and "where with my order, where with my order, where with" are loops
    of a recognizer on noise or padding, not what a caller said; a classifier would still find an intent in
    them. Two in a row ("no, no") is how people talk and passes.
    """
    words = [w.lower() for w in _WORD.findall(text)]
    for size in range(1, max_run + 1):
        for start in range(len(words) - 3 * size + 1):
            gram = words[start:start + size]
            if gram == words[start + size:start + 2 * size] == words[start + 2 * size:start + 3 * size]:
                return True
    return False
