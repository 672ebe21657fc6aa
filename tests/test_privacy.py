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


PAY_FLOW = """\
version: 1
name: pay
start: card
queues: [billing]
variables:
  api_base: "http://127.0.0.1:9"
sensitive:
  plan: none
nodes:
  card:
    ask:
      prompt: "Your card number?"
      slot: digits
      min_digits: 13
      max_digits: 19
      sensitive: card
    next: pin
  pin:
    ask:
      prompt: "Your PIN?"
      slot: digits
      min_digits: 4
      max_digits: 4
      sensitive: secret
    next: order
  order:
    ask:
      prompt: "Your order number?"
      slot: digits
      max_digits: 10
    next: plan
  plan:
    set: {plan: gold}
    next: to_agent
  to_agent:
    transfer: {queue: billing}
"""


def test_flows_declare_sensitive_slots_and_variables(tmp_path: Path) -> None:
    from ivr.flow.loader import load_flow
    from ivr.flow.testing import ScriptedCall

    path = tmp_path / "pay.yaml"
    path.write_text(PAY_FLOW)
    flow = load_flow(path, classifier_factory=None)
    assert flow.sensitive == {"plan": "none", "card": "card", "pin": "secret"}
    call = ScriptedCall(flow)
    assert call.listening is not None and call.listening.sensitive == "card"
    call.press(VISA + "#")
    assert call.listening is not None and call.listening.sensitive == "secret"
    call.say("4 3 2 1")
    assert call.listening is not None and call.listening.sensitive == ""
    call.press("27182818#")
    context = call.interpreter.context()
    assert context["slots"]["pin"] == "4321"  # the flow itself may use it (e.g. to check it with a service)
    assert context["sensitive"] == {"api_base": "none", "plan": "none", "card": "card", "pin": "secret"}
    assert context["last_text"] == "****" and "4321" not in str(context["utterances"])


def test_an_unknown_sensitivity_is_a_flow_error(tmp_path: Path) -> None:
    from ivr.errors import FlowError
    from ivr.flow.loader import load_flow

    path = tmp_path / "pay.yaml"
    path.write_text(PAY_FLOW.replace("sensitive: secret", "sensitive: secrett").replace("plan: none", "plan: public"))
    with pytest.raises(FlowError) as info:
        load_flow(path, classifier_factory=None)
    text = str(info.value)
    assert ("pay.yaml:24:18: 'sensitive' must be one of card, secret, none, got 'secrett' "
            "(did you mean 'secret'?)") in text
    assert "pay.yaml:8:9: 'sensitive' of 'plan' must be one of card, secret, none" in text
