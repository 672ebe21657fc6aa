"""Privacy: what each audience sees of a caller's numbers and collected values (issue 11)."""

from __future__ import annotations

import json
import logging
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    assert mask_url("https://crm.test/customers/jane@example.com/orders/5123") == "https://crm.test/customers/***/orders/****"


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


# ------------------------------------------------------------------ a whole call, through the real parts

PAY_QUEUES = """
agents:
  ann: {uri: "sip:ann@127.0.0.1"}
  ben: {uri: "sip:ben@127.0.0.1"}
queues:
  billing:
    ring_timeout: 30
    wrap_up: 0
    connection: refer
    announce: {every: 30, first_after: 0, text: "Please hold."}
"""


class _QuietTts:
    def synthesize(self, text: str, sample_rate: int) -> bytes:
        return bytes(int(sample_rate * 0.1) * 2)

    def stream(self, text: str, sample_rate: int) -> Iterator[bytes]:
        yield self.synthesize(text, sample_rate)


def _console_user(app: Any, store: Any, name: str, role: str) -> Any:
    from werkzeug.security import generate_password_hash

    store.add_user(name, generate_password_hash(f"{name}-password", "pbkdf2:sha256:1000"), role, 0.0)
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    resp = client.post("/login", data={"name": name, "password": f"{name}-password", "csrf_token": token})
    assert resp.status_code == 302
    return client


def test_the_agent_offered_the_call_sees_what_the_caller_gave_and_only_they_do(tmp_path: Path) -> None:
    from ivr.call import CallSession, SessionConfig
    from ivr.call import events as ev
    from ivr.flow.loader import load_flow
    from ivr.handoff import context_url
    from ivr.queue import Acd, parse_queues
    from ivr.replay.channel import ReplayChannel
    from ivr.replay.scenario import CallerStep
    from ivr.store import open_store
    from ivr.testing.fakes import FakeConnector
    from ivr.web import create_app
    from ivr.web.webhook import call_payload

    (tmp_path / "pay.yaml").write_text(PAY_FLOW)
    flow = load_flow(tmp_path / "pay.yaml", classifier_factory=None)
    store = open_store(tmp_path / "ivr.db")
    connector = FakeConnector()
    acd = Acd(parse_queues(PAY_QUEUES), connector, store, context_url=lambda c: context_url("http://c.test", "k", c))
    app = create_app(store, acd, {"secret_key": "k", "public_url": "http://c.test"})
    ann = _console_user(app, store, "ann", "agent")
    ben = _console_user(app, store, "ben", "agent")
    sue = _console_user(app, store, "sue", "supervisor")
    acd.set_agent_state("ann", "available")
    seen: dict[str, Any] = {}

    class Agent:
        """While ann's phone rings: what each person sees, then she answers."""

        def on_event(self, event: ev.CallEvent) -> None:
            channel.on_event(event)
            if isinstance(event, ev.PromptPlayed) and event.text == "Please hold." and not seen:
                seen["panel"] = ann.get("/agent/panel").get_data(as_text=True)
                seen["pop"] = ann.get("/api/agents/ann/current").get_json()["call"]
                seen["ben"] = ben.get(f"/api/calls/{channel.call_id}").status_code
                seen["sue"] = sue.get(f"/calls/{channel.call_id}").get_data(as_text=True)
                seen["headers"] = connector.offers[0].headers
                connector.answer("ann")

    steps = [CallerStep(line=1, dtmf=VISA + "#", after=0.3), CallerStep(line=2, dtmf="4321", after=0.3),
             CallerStep(line=3, dtmf="27182818#", after=0.3)]
    channel = ReplayChannel(steps, {}, 8000, max_seconds=120)
    services = SpeechServices(asr=None, tts=_QuietTts(), workers=1)  # type: ignore[arg-type]
    try:
        from ivr.runtime import FlowRuntime

        interpreter = FlowRuntime(flow).new_interpreter(channel)
        result = CallSession(channel, interpreter, services, flow_name="pay", store=store, queues=acd,
                             observer=Agent(), config=SessionConfig(recordings_dir=str(tmp_path))).run()
    finally:
        services.shutdown()
    assert result.outcome == "transferred", result
    pop, panel = seen["pop"], seen["panel"]
    # the agent on the call: the order number in full, the card's last 4 digits, never the PIN
    assert pop["slots"] == {"card": "************1111", "pin": "****", "order": "27182818"}
    assert "27182818" in panel and "************1111" in panel and "4321" not in panel and VISA not in panel
    assert "[DTMF 27182818]" in [t["text"] for t in pop["turns"]]
    assert "[DTMF ************1111]" in [t["text"] for t in pop["turns"]]
    assert "27182818" in seen["sue"] and VISA not in seen["sue"]  # supervisors too
    assert seen["ben"] == 404  # another agent sees nothing of it
    # the agent's phone: masked headers and the signed link to the full context
    headers = seen["headers"]
    assert "order=****2818" in headers["X-IVR-Slots"] and "27182818" not in str(headers)
    link = headers["X-IVR-Context-Url"].removeprefix("http://c.test")
    full = app.test_client().get(link).get_json()
    assert full["context"]["slots"]["order"] == "27182818" and full["context"]["slots"]["pin"] == "****"
    assert app.test_client().get(link[:-1] + ("0" if link[-1] != "0" else "1")).status_code == 403
    # a CRM webhook (a third party) gets it masked
    payload = call_payload(store, result.call_id)
    assert payload is not None and payload["context"]["slots"]["order"] == "****2818"
    assert "27182818" not in json.dumps(payload) and VISA not in json.dumps(payload)
    # nothing in the database file holds the card number or the PIN
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("ivr.db*"))
    assert VISA.encode() not in raw and b"4321" not in raw


# ------------------------------------------------------------------ at rest: encryption, erasure, retention

def _stored_call(store: Any, call_id: str, started: float, recording: Path | None = None) -> None:
    store.start_call(call_id, "+15550100", "100", "pay", started)
    store.add_turn(call_id, started + 1, "caller", "my order is 2 7 1 8 2 8 1 8", intent="order_status")
    store.add_event(call_id, started + 2, "http", {"url": "http://api.test/orders/27182818", "ok": True})
    store.set_context(call_id, {"intent": "order_status", "slots": {"order": "27182818"}})
    store.add_queue_entry(call_id, "billing", 0, started + 3, {"slots": {"order": "27182818"}})
    store.add_note(call_id, "ann", started + 4, "customer Jane, order 27182818", "resolved")
    if recording is not None:
        write_wav(recording, bytes(1600), 8000, private=True)
        store.add_event(call_id, started + 5, "recording", {"path": str(recording), "duration": 0.1})
    store.end_call(call_id, started + 6, "completed")


def test_collected_values_are_encrypted_at_rest_with_a_private_key_file(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from ivr.store import open_store

    monkeypatch.delenv("IVR_DATA_KEY", raising=False)
    store = open_store(tmp_path / "ivr.db")
    _stored_call(store, "c1", 1000.0)
    call = store.get_call("c1")
    assert call is not None and call["context"]["slots"]["order"] == "27182818"
    assert call["turns"][0]["text"] == "my order is 2 7 1 8 2 8 1 8" and "27182818" in call["notes"][0]["text"]
    assert call["events"][0]["data"]["url"].endswith("/27182818")
    assert store.list_calls(search="order")[0]["id"] == "c1"  # words still searchable
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("ivr.db*") if p.suffix != ".key")
    assert b"27182818" not in raw and b"2 7 1 8" not in raw and b"Jane" not in raw
    key = tmp_path / "ivr.db.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    again = open_store(tmp_path / "ivr.db")  # the same key file: readable again
    assert again.get_call("c1")["context"]["slots"]["order"] == "27182818"  # type: ignore[index]
    monkeypatch.setenv("IVR_DATA_KEY", "a passphrase from the environment")
    from ivr.store.crypto import DataKeyError

    with pytest.raises(DataKeyError, match="not the one it was written with"):
        open_store(tmp_path / "ivr.db").get_call("c1")


def test_ivr_calls_erase_removes_what_the_caller_said_and_their_recordings(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ivr.cli.main import _register, cli
    from ivr.store import open_store

    db = tmp_path / "ivr.db"
    store = open_store(db)
    recording = tmp_path / "rec" / "c1.wav"
    _stored_call(store, "c1", 1000.0, recording)
    _stored_call(store, "c2", 1000.0)
    _register()
    result = CliRunner().invoke(cli, ["calls", "erase", "c1", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "erased call c1" in result.output
    call = store.get_call("c1")
    assert call is not None and call["erased_at"] and call["outcome"] == "completed"  # figures keep it
    assert call["turns"] == [] and call["events"] == [] and call["notes"] == [] and call["context"] == {}
    assert call["caller"] == "" and call["queue_entries"][0]["context"] == {}
    assert not recording.exists()
    assert store.get_call("c2")["turns"]  # type: ignore[index]  # other calls untouched
    missing = CliRunner().invoke(cli, ["calls", "erase", "nope", "--db", str(db)])
    assert missing.exit_code == 1 and "no call 'nope'" in missing.output


def test_retention_purges_old_transcripts_and_recordings_at_start_and_daily(tmp_path: Path) -> None:
    import time

    from ivr.store import open_store
    from ivr.store.retention import DAY, RetentionPurger

    store = open_store(tmp_path / "ivr.db")
    now = time.time()
    old = tmp_path / "rec" / "old.wav"
    _stored_call(store, "old", now - 40 * DAY, old)
    _stored_call(store, "new", now - 2 * DAY)
    purger = RetentionPurger(store, 30, interval=0.05)
    purger.start()
    try:
        deadline = time.monotonic() + 5
        while purger.runs < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        purger.stop()
    assert purger.runs >= 2  # at start, then again each interval
    gone, kept = store.get_call("old"), store.get_call("new")
    assert gone is not None and gone["turns"] == [] and gone["context"] == {} and not old.exists()
    assert gone["caller"] == "+15550100" and gone["notes"]  # retention is for transcripts and recordings
    assert kept is not None and kept["turns"] and kept["context"]["slots"]["order"] == "27182818"


def test_serve_switches_on_the_crm_webhook_context_links_and_retention(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    from click.testing import CliRunner

    import ivr.server
    from ivr.cli.serve import serve
    from ivr.errors import IvrError

    configs: list[Any] = []

    class Recorder:
        def __init__(self, config: Any) -> None:
            configs.append(config)

        def start(self) -> None:
            raise IvrError("stopped by the test")

    monkeypatch.setattr(ivr.server, "IvrServer", Recorder)
    result = CliRunner().invoke(serve, ["--flows", str(tmp_path), "--crm-webhook", "https://crm.test/hook",
                                        "--public-url", "https://ivr.test", "--retention-days", "30"])
    assert isinstance(result.exception, IvrError), result.output
    [config] = configs
    assert config.crm_webhook == "https://crm.test/hook" and config.public_url == "https://ivr.test"
    assert config.retention_days == 30
    assert CliRunner().invoke(serve, ["--retention-days", "0"]).exit_code == 2  # must be positive


def test_a_sensitive_name_that_nothing_defines_is_a_flow_error(tmp_path: Path) -> None:
    from ivr.errors import FlowError
    from ivr.flow.loader import load_flow

    path = tmp_path / "pay.yaml"
    path.write_text(PAY_FLOW.replace("  plan: none", "  plna: none"))
    with pytest.raises(FlowError, match=r"pay.yaml:8:3: 'sensitive' names 'plna', which no slot, set, http, record "
                                        r"or 'variables:' defines \(did you mean 'plan'\?\)"):
        load_flow(path, classifier_factory=None)
