"""Privacy: what each audience sees of a caller's numbers and collected values (issue 11)."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from ivr.audio.wavfile import write_wav
from ivr.flow import actions as fa
from ivr.services import SpeechServices
from ivr.store.masking import is_card_number, mask_cards, mask_sensitive, mask_url, mask_value

VISA = "4111111111111111"  # Luhn-valid test card


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111;1111;1111;1111", "card ****;****;****;1111"),
        ("card 4111_1111_1111_1111", "card ****_****_****_1111"),
        ("card 4111|1111|1111|1111", "card ****|****|****|1111"),
        ("4111 and 1111 and 1111 and 1111", "**** and **** and **** and 1111"),
        ("for won won won won won won won won won won won won won won won",
         "* * * * * * * * * * * * won won won won"),
        ("four one one one one one one one one one one one one one one one",
         "* * * * * * * * * * * * one one one one"),
        ("pay to 4111111111111111 for me", "pay to ************1111 for me"),
        ("5 to 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "5 to * * * * * * * * * * * * 1 1 1 1"),
    ],
)
def test_card_numbers_with_any_separator_or_spoken_homophones_are_masked(text: str, expected: str) -> None:
    assert mask_cards(text) == expected
    assert mask_sensitive(text) == expected


def test_only_card_numbers_are_masked_for_the_agent_but_long_numbers_for_everyone_else() -> None:
    said = "order 27182818 paid with 4111 1111 1111 1111"
    assert mask_cards(said) == "order 27182818 paid with **** **** **** 1111"
    assert mask_sensitive(said) == "order ****2818 paid with **** **** **** 1111"
    assert mask_cards("I need it for 2 days, to 5 people") == "I need it for 2 days, to 5 people"
    assert is_card_number("4111-1111-1111-1111") and not is_card_number("4111111111111112")


def test_collected_values_and_urls_are_masked_for_logs() -> None:
    assert mask_value("27182818") == "****2818"
    assert mask_value("1234") == "****"
    assert mask_value("Jane Doe") == "***"
    assert mask_url("http://user:pw@api.test:8085/orders/27182818?pin=1234") == "http://api.test:8085/orders/****2818?pin=***"


def test_a_failed_webhook_logs_a_masked_url(caplog: pytest.LogCaptureFixture) -> None:
    services = SpeechServices(asr=None, tts=None, workers=1)  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.WARNING, logger="ivr.services"):
            result = services.http(fa.HttpRequest("GET", "http://127.0.0.1:9/orders/27182818", timeout=0.5))
    finally:
        services.shutdown()
    assert not result.ok
    assert "/orders/****2818" in caplog.text
    assert "27182818" not in caplog.text


def test_private_wav_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "recordings" / "c1.wav"
    write_wav(path, bytes(1600), 8000, private=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
