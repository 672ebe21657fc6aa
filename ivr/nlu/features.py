"""Spelling-tolerant text features: normalisation and hashed character/word n-gram TF-IDF.

Speech recognisers lowercase, drop punctuation and mishear words ("cared" for "card"); character
n-grams inside word boundaries still overlap for such near-misses, word n-grams keep the phrasing.
Features are hashed into fixed-size vectors so no vocabulary has to be stored.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from collections import Counter

import numpy as np

_NOT_WORD = re.compile(r"[^\w']+|_+")  # letters of any script (Hangul, Han, …), digits, apostrophes
_CONTRACTIONS = {"'s": " is", "n't": " not", "'m": " am", "'re": " are", "'ve": " have", "'ll": " will", "'d": " would"}


def normalize(text: str) -> str:
    """Lowercase, expand common contractions, keep only letters and digits, single spaces."""
    text = text.lower().replace("’", "'")
    for short, long in _CONTRACTIONS.items():
        text = text.replace(short, long)
    return " ".join(_NOT_WORD.sub(" ", text).replace("'", " ").split())


def char_ngrams(text: str, sizes: tuple[int, ...] = (2, 3, 4, 5)) -> Counter[str]:
    """Character n-grams of each space-padded word (like scikit-learn's ``char_wb`` analyser)."""
    grams: Counter[str] = Counter()
    for word in text.split():
        padded = f" {word} "
        for n in sizes:
            for i in range(max(len(padded) - n + 1, 1)):
                grams[padded[i : i + n]] += 1
    return grams


def word_ngrams(text: str) -> Counter[str]:
    """Word unigrams and bigrams."""
    words = text.split()
    grams: Counter[str] = Counter(words)
    grams.update(f"{a} {b}" for a, b in itertools.pairwise(words))
    return grams


def _bucket(gram: str, dim: int) -> int:
    return zlib.crc32(gram.encode("utf-8")) % dim


class HashedTfidf:
    """TF-IDF over hashed n-grams, fitted on a flow's examples; rows are L2-normalised per n-gram kind."""

    def __init__(self, dim: int = 1 << 14) -> None:
        self.dim = dim
        self._idf_char = np.ones(dim, dtype=np.float32)
        self._idf_word = np.ones(dim, dtype=np.float32)

    def fit(self, texts: list[str]) -> HashedTfidf:
        """Learn inverse document frequencies from normalised texts."""
        n = len(texts)
        for kind, idf in (("char", self._idf_char), ("word", self._idf_word)):
            df = np.zeros(self.dim, dtype=np.float32)
            for text in texts:
                df[list({_bucket(g, self.dim) for g in self._grams(kind, text)})] += 1
            idf[:] = np.log((1 + n) / (1 + df)) + 1
        return self

    @staticmethod
    def _grams(kind: str, text: str) -> Counter[str]:
        return char_ngrams(text) if kind == "char" else word_ngrams(text)

    def sparse(self, text: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """(indices, weights) of the char block and of the word block of one normalised text."""
        blocks = []
        for kind, idf in (("char", self._idf_char), ("word", self._idf_word)):
            weights: dict[int, float] = {}
            for gram, count in self._grams(kind, text).items():
                b = _bucket(gram, self.dim)
                weights[b] = weights.get(b, 0.0) + 1.0 + math.log(count)
            idx = np.fromiter(weights, dtype=np.int64, count=len(weights))
            val = np.fromiter(weights.values(), dtype=np.float32, count=len(weights)) * idf[idx]
            norm = float(np.linalg.norm(val))
            blocks.append((idx, val / norm if norm else val))
        return blocks[0], blocks[1]

    def dense(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Dense (len(texts), dim) char and word matrices."""
        chars = np.zeros((len(texts), self.dim), dtype=np.float32)
        words = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            (ci, cv), (wi, wv) = self.sparse(text)
            np.add.at(chars[row], ci, cv)
            np.add.at(words[row], wi, wv)
        return chars, words


def _bigrams(word: str) -> set[str]:
    padded = f" {word} "
    return {padded[i : i + 2] for i in range(len(padded) - 1)}


class WordCorrector:
    """Maps a word the examples never use to the closest word they do use, when it is a near-miss.

    Recognisers write "bil" for "bill" or "oder" for "order"; sentence embeddings treat such pieces as
    unrelated words, so the utterance is re-spelt with the examples' vocabulary before it is embedded.
    Words the embedding model knows as whole words (``known_words``) are left alone.
    """

    def __init__(
        self, texts: list[str], known_words: frozenset[str] = frozenset(), min_similarity: float = 0.6
    ) -> None:
        self.min_similarity = min_similarity
        self._known = known_words
        self._vocabulary = {word for text in texts for word in text.split()}
        self._grams = {word: _bigrams(word) for word in self._vocabulary if len(word) >= 3}

    def correct(self, text: str) -> str:
        """The normalised text with near-miss words replaced (Dice similarity of character bigrams)."""
        words = text.split()
        for i, word in enumerate(words):
            if word in self._vocabulary or word in self._known or len(word) < 3 or word.isdigit():
                continue
            grams = _bigrams(word)
            best, best_score = word, self.min_similarity
            for candidate, candidate_grams in self._grams.items():
                score = 2 * len(grams & candidate_grams) / (len(grams) + len(candidate_grams))
                if score > best_score:
                    best, best_score = candidate, score
            words[i] = best
        return " ".join(words)
