"""Unit tests for phrase grammars, Whisper post-processing, WER and the Vosk word-list reader."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from ivr.bench.asr import word_errors
from ivr.errors import ModelError
from ivr.speech.asr.grammar import clean_phrases, closest_phrase, exact_phrase, normalize, snap
from ivr.speech.asr.vocabulary import read_vocabulary, supports_runtime_grammar
from ivr.speech.asr.whisper_engine import drop_repeated_sentences

PHRASES = clean_phrases(["Order status", "talk to an agent", "pay my bill", "order status", "[unk]", ""])


def test_phrases_are_normalised_and_deduplicated() -> None:
    assert PHRASES == ["order status", "talk to an agent", "pay my bill"]
    assert normalize("  Yes,   PLEASE! ") == "yes please"


def test_snap_finds_a_phrase_inside_a_longer_sentence() -> None:
    match = snap("Um, I'd like to talk to an agent, please.", PHRASES)
    assert match is not None and match.phrase == "talk to an agent"


def test_snap_tolerates_a_misheard_word() -> None:
    match = snap("order stratus", PHRASES)
    assert match is not None and match.phrase == "order status"


def test_snap_rejects_unrelated_speech() -> None:
    assert snap("my name is Sarah and I live in Boston", PHRASES) is None
    assert snap("", PHRASES) is None
    best = closest_phrase("my name is Sarah and I live in Boston", PHRASES)
    assert best is not None and best.score < 0.75


def test_exact_phrase_requires_exactly_one_phrase() -> None:
    assert exact_phrase(["order", "status"], PHRASES) == "order status"
    assert exact_phrase(["[unk]", "order", "status"], PHRASES) == "order status"
    assert exact_phrase(["order", "status", "order", "status"], PHRASES) is None
    assert exact_phrase(["pay", "order", "status"], PHRASES) is None
    assert exact_phrase(["[unk]"], PHRASES) is None


def test_repeated_whisper_sentence_is_dropped() -> None:
    assert drop_repeated_sentences("Can I speak to someone? Can I speak to someone?") == "Can I speak to someone?"
    assert drop_repeated_sentences("Yes. No. Yes.") == "Yes. No. Yes."
    assert drop_repeated_sentences("The leader has left the conference. The leader has left the") == (
        "The leader has left the conference.")
    assert drop_repeated_sentences("I need help. Is that right?") == "I need help. Is that right?"
    # a one-word answer said twice is what the caller said (a digit string, "no, no"), and a number is one word
    assert drop_repeated_sentences("5. 5.") == "5. 5." and drop_repeated_sentences("No. No.") == "No. No."
    assert drop_repeated_sentences("7.98") == "7.98" and drop_repeated_sentences("It is 3.50. Thanks.") == (
        "It is 3.50. Thanks.")


def test_word_errors_counts_substitutions_insertions_deletions() -> None:
    assert word_errors("check my order status", "Check my order status.") == (0, 4)
    assert word_errors("check my order status", "check the order") == (2, 4)
    assert word_errors("yes", "yes yes yes") == (2, 1)


def test_vocabulary_from_words_txt(tmp_path: Path) -> None:
    (tmp_path / "graph").mkdir()
    (tmp_path / "graph" / "words.txt").write_text("<eps> 0\n[unk] 1\nhello 2\n")
    assert read_vocabulary(tmp_path) == {"<eps>", "[unk]", "hello"}
    assert not supports_runtime_grammar(tmp_path)


def test_damaged_fst_word_list_is_a_model_error(tmp_path: Path) -> None:
    (tmp_path / "graph").mkdir()
    (tmp_path / "graph" / "Gr.fst").write_bytes(struct.pack("<i", 2125659606) + b"\x05\x00")
    with pytest.raises(ModelError, match="damaged"):
        read_vocabulary(tmp_path)


@pytest.mark.slow
def test_korean_model_vocabulary_read_from_gr_fst() -> None:
    from ivr.speech.models import vosk_korean_dir

    vocab = read_vocabulary(vosk_korean_dir())
    assert {"감사합니다", "아니요", "<UNK>"} <= vocab
    assert len(vocab) > 100_000
    assert supports_runtime_grammar(vosk_korean_dir())
