"""Slot parsers: what callers say (as speech recognisers write it) → digits, numbers, yes/no, text."""

from __future__ import annotations

import pytest

from ivr.nlu.slots import parse_digits, parse_dtmf_slot, parse_number, parse_slot, parse_text, parse_yes_no


@pytest.mark.parametrize(("text", "digits"), [
    ("four five six", "456"),
    ("4 5 6", "456"),
    ("456", "456"),
    ("four hundred fifty six", "456"),
    ("my order number is one two three four", "1234"),
    ("twelve thirty four", "1234"),
    ("oh one two", "012"),
    ("zero zero seven", "007"),
    ("double seven three", "773"),
    ("triple five", "555"),
    ("fifty-six", "56"),
    ("two thousand three hundred and five", "2305"),
    ("it's 98 76", "9876"),
    ("일 이 삼 사", "1234"),
])
def test_digits_spoken_and_written(text: str, digits: str) -> None:
    assert parse_digits(text) == digits


@pytest.mark.parametrize("text", ["", "I don't know", "hello there"])
def test_no_digits_is_none(text: str) -> None:
    assert parse_digits(text) is None


@pytest.mark.parametrize(("text", "number"), [
    ("four", 4), ("I'd give it a four", 4), ("5", 5), ("twenty five", 25), ("one hundred and five", 105),
    ("a hundred", 100), ("three out of five", 3),
])
def test_numbers(text: str, number: int) -> None:
    assert parse_number(text) == number


@pytest.mark.parametrize("text", ["yes", "Yeah.", "yep that's it", "that's right", "correct", "sure",
                                  "uh huh", "of course", "okay", "네", "예 맞아요"])
def test_yes_variants(text: str) -> None:
    assert parse_yes_no(text) is True


@pytest.mark.parametrize("text", ["no", "Nope.", "nah", "no that's not right", "that's wrong", "incorrect",
                                  "아니요", "아니오"])
def test_no_variants(text: str) -> None:
    assert parse_yes_no(text) is False


@pytest.mark.parametrize(("text", "answer"), [
    ("Yes, not right.", True),  # "yes, that's right" as whisper heard it on a phone line
    ("yes I think that's not it", True),
    ("no, that's right", False),
    ("yeah, no", False),  # colloquial no
])
def test_a_leading_yes_or_no_decides(text: str, answer: bool) -> None:
    assert parse_yes_no(text) is answer


@pytest.mark.parametrize("text", ["maybe", "what", "", "order status"])
def test_neither_yes_nor_no(text: str) -> None:
    assert parse_yes_no(text) is None


def test_free_text_is_trimmed_and_empty_is_none() -> None:
    assert parse_text("  leave   a message ") == "leave a message"
    assert parse_text("   ") is None
    assert parse_slot("text", "hello") == "hello"


def test_keys_per_slot_type() -> None:
    assert parse_dtmf_slot("digits", "1234#") == "1234"
    assert parse_dtmf_slot("digits", "12*4") is None
    assert parse_dtmf_slot("number", "4") == 4
    assert parse_dtmf_slot("yes_no", "1") is True
    assert parse_dtmf_slot("yes_no", "2") is False
    assert parse_dtmf_slot("yes_no", "7") is None
    assert parse_dtmf_slot("text", "1") is None
