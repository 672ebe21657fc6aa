"""Callbacks (virtual hold): the ACD keeps a caller's place, reserves an agent and asks a dialer to call back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ivr.call import events as ev
from ivr.call.config import SessionConfig
from ivr.call.line import CallLine
from ivr.call.playback import Playback
from ivr.call.queueing import QueueWait, callback_number
from ivr.call.records import CallRecords, Privacy
from ivr.errors import ConfigError
from ivr.events import DtmfDigit
from ivr.flow.prompts import system_prompts
from ivr.queue import Acd, CallbackOffer, OfferResult, QueueError, parse_queues
from ivr.queue import callbacks as cb
from ivr.replay.channel import ReplayChannel
from ivr.services import SpeechServices
from ivr.speech.interfaces import RecognizerCapabilities
from ivr.store import Store, open_store
from ivr.testing.fakes import FakeClock, FakeConnector, FakeDialer

QUEUES = """
agents:
  ann: {uri: "sip:ann@127.0.0.1"}
  bob: {uri: "sip:bob@127.0.0.1"}
queues:
  support:
    ring_timeout: 10
    wrap_up: 0
    handle_time: 300
    callback: {offer_after: 120, key: "1", retries: 2, retry_after: 120, max_per_number_per_day: 2}
  plain:
    wrap_up: 0
"""


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "ivr.db"
        self.clock = FakeClock()
        self.connector = FakeConnector()
        self.dialer = FakeDialer()
        self.store: Store = open_store(self.path)
        self.acd = Acd(parse_queues(QUEUES), self.connector, self.store, self.clock, dialer=self.dialer)

    def busy_agent(self) -> None:
        """ann logged in and talking to c0: the next callers wait about one handle time."""
        self.acd.set_agent_state("ann", "available")
        self.acd.enqueue("c0", "support", context={"caller": "sip:zed@127.0.0.1"})
        self.connector.report(self.connector.offers[-1].offer_id, OfferResult.ANSWERED)

    def later(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.acd.tick()

    def entry(self, call_id: str) -> dict[str, Any]:
        return dict(self.store.get_call(call_id)["queue_entries"][-1])  # type: ignore[index]

    def events(self, call_id: str, kind: str) -> list[dict[str, Any]]:
        call = self.store.get_call(call_id)
        assert call is not None
        return [e["data"] for e in call["events"] if e["kind"] == kind]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = Rig(tmp_path)
    yield made
    made.acd.stop()


def test_a_long_wait_offers_a_callback_once(rig: Rig) -> None:
    rig.busy_agent()
    rig.acd.enqueue("c1", "support", context={"caller": "sip:amy@127.0.0.1"})
    updates = rig.acd.poll("c1")
    assert [u for u in updates if isinstance(u, CallbackOffer)] == [CallbackOffer("1", 300.0, "support")]
    rig.later(5)
    assert not [u for u in rig.acd.poll("c1") if isinstance(u, CallbackOffer)]


def test_no_offer_while_the_wait_is_short_or_the_queue_has_no_callbacks(rig: Rig) -> None:
    rig.acd.set_agent_state("ann", "available")
    rig.acd.set_agent_state("bob", "available")
    rig.acd.enqueue("c1", "plain", context={"caller": "sip:amy@127.0.0.1"})
    rig.acd.enqueue("c2", "support", context={"caller": "sip:bea@127.0.0.1"})  # bob is free: no wait
    assert not [u for c in ("c1", "c2") for u in rig.acd.poll(c) if isinstance(u, CallbackOffer)]
    assert rig.acd.request_callback("c1", "sip:amy@127.0.0.1") is False  # plain offers none


def test_callback_keeps_the_place_reserves_the_agent_and_connects(rig: Rig) -> None:
    rig.busy_agent()
    rig.acd.enqueue("c1", "support", context={"caller": "sip:amy@127.0.0.1", "intent": "billing"})
    rig.acd.enqueue("c2", "support", context={"caller": "sip:bea@127.0.0.1"})
    assert rig.acd.request_callback("c1", "sip:amy@127.0.0.1")
    assert rig.entry("c1")["state"] == "callback" and rig.entry("c1")["callback_number"] == "sip:amy@127.0.0.1"
    rig.acd.call_finished("c0")  # ann is free: c1 kept its place ahead of c2
    [attempt] = rig.dialer.attempts
    assert (attempt.call_id, attempt.number, attempt.agent, attempt.attempt) == ("c1", "sip:amy@127.0.0.1", "ann", 1)
    assert attempt.headers["X-IVR-Intent"] == "billing" and attempt.headers["X-IVR-Queue"] == "support"
    assert rig.acd.snapshot()["agents"]["ann"]["state"] == "reserved"
    assert len(rig.connector.offers) == 1  # ann is offered nothing else, c2 waits
    rig.dialer.report(cb.ANSWERED)
    assert rig.acd.snapshot()["agents"]["ann"]["state"] == "on_call"
    assert rig.entry("c1")["state"] == "connected"
    rig.acd.abandon("c1")  # the original call's session ending does not touch the callback
    assert rig.entry("c1")["state"] == "connected"
    rig.dialer.report(cb.ENDED)
    assert rig.entry("c1")["outcome"] == "callback_completed"
    assert [o.call_id for o in rig.connector.offers] == ["c0", "c2"]  # ann (no wrap-up) takes c2 next
    assert [e["result"] for e in rig.events("c1", "callback_attempt")] == [cb.ANSWERED, cb.ENDED]


def test_unanswered_callbacks_retry_then_fail(rig: Rig) -> None:
    rig.busy_agent()
    rig.acd.enqueue("c1", "support", context={"caller": "sip:amy@127.0.0.1"})
    assert rig.acd.request_callback("c1", "sip:amy@127.0.0.1")
    rig.acd.call_finished("c0")
    rig.dialer.report(cb.NO_ANSWER)
    assert rig.acd.snapshot()["agents"]["ann"]["state"] == "available"  # freed at once
    assert rig.entry("c1")["state"] == "callback" and len(rig.dialer.attempts) == 1
    rig.later(119)
    assert len(rig.dialer.attempts) == 1
    rig.later(1)
    assert rig.dialer.attempts[-1].attempt == 2
    rig.dialer.report(cb.REJECTED)
    rig.later(120)
    assert rig.dialer.attempts[-1].attempt == 3
    rig.dialer.report(cb.FAILED)
    rig.later(600)
    assert len(rig.dialer.attempts) == 3  # retries: 2
    entry = rig.entry("c1")
    assert (entry["state"], entry["outcome"], entry["callback_attempts"]) == ("failed", "callback_failed", 3)
    assert rig.acd.snapshot()["agents"]["ann"]["state"] == "available"


def test_a_missed_agent_counts_a_miss_and_the_callback_retries(rig: Rig) -> None:
    rig.busy_agent()
    rig.acd.enqueue("c1", "support", context={"caller": "sip:amy@127.0.0.1"})
    assert rig.acd.request_callback("c1", "sip:amy@127.0.0.1")
    rig.acd.call_finished("c0")
    rig.dialer.report(cb.AGENT_MISSED)
    assert rig.acd.snapshot()["agents"]["ann"]["missed"] == 1
    assert rig.entry("c1")["state"] == "callback"


def test_the_limit_per_number_per_day(rig: Rig) -> None:
    rig.busy_agent()
    for call in ("c1", "c2"):
        rig.acd.enqueue(call, "support", context={"caller": "sip:amy@127.0.0.1"})
        assert rig.acd.request_callback(call, "sip:amy@127.0.0.1")
    rig.acd.enqueue("c3", "support", context={"caller": "sip:amy@127.0.0.1"})
    assert not [u for u in rig.acd.poll("c3") if isinstance(u, CallbackOffer)]  # not even offered
    assert rig.acd.request_callback("c3", "sip:amy@127.0.0.1") is False
    with pytest.raises(QueueError, match="callbacks for today"):
        rig.acd.add_callback("api-1", "support", "sip:amy@127.0.0.1")
    rig.clock.advance(86400)
    rig.acd.enqueue("c4", "support", context={"caller": "sip:amy@127.0.0.1"})
    assert [u for u in rig.acd.poll("c4") if isinstance(u, CallbackOffer)]


def test_callback_entries_survive_a_restart_with_the_days_count(rig: Rig) -> None:
    rig.busy_agent()
    rig.acd.enqueue("c1", "support", context={"caller": "sip:amy@127.0.0.1"})
    rig.acd.enqueue("c2", "support", context={"caller": "sip:amy@127.0.0.1"})
    assert rig.acd.request_callback("c1", "sip:amy@127.0.0.1")
    assert rig.acd.request_callback("c2", "sip:amy@127.0.0.1")
    again = Acd(parse_queues(QUEUES), FakeConnector(), rig.store, rig.clock, dialer=FakeDialer())
    assert [r["state"] for r in again.snapshot()["queues"]["support"]] == ["callback", "callback"]
    with pytest.raises(QueueError, match="callbacks for today"):
        again.add_callback("api-1", "support", "sip:amy@127.0.0.1")


def test_add_callback_from_outside_a_call(rig: Rig) -> None:
    rig.acd.add_callback("api-1", "support", "sip:crm@127.0.0.1", {"intent": "renewal"})
    assert rig.entry("api-1")["state"] == "callback"
    rig.acd.set_agent_state("bob", "available")
    [attempt] = rig.dialer.attempts
    assert (attempt.number, attempt.agent, attempt.headers["X-IVR-Intent"]) == ("sip:crm@127.0.0.1", "bob", "renewal")
    with pytest.raises(QueueError, match="takes no callbacks"):
        rig.acd.add_callback("api-2", "plain", "sip:crm@127.0.0.1")
    with pytest.raises(QueueError, match="unknown queue"):
        rig.acd.add_callback("api-3", "nope", "sip:crm@127.0.0.1")


def test_callback_config_errors_have_positions() -> None:
    bad = QUEUES.replace('key: "1", retries: 2', 'key: "12", retries: -1, colour: red')
    with pytest.raises(ConfigError) as info:
        parse_queues(bad, "q.yaml")
    text = str(info.value)
    assert "q.yaml:" in text and "one keypad key" in text and "retries must be a whole number" in text
    assert "unknown key 'colour'" in text


# ----------------------------------------------------------------------------------- the session


class _NoAsr:
    name = "none"
    capabilities = RecognizerCapabilities()

    def new_recognizer(self, sample_rate: int, grammar: Any = None) -> Any:
        raise AssertionError("no speech in this test")


class _SilentTts:
    def synthesize(self, text: str, sample_rate: int) -> bytes:
        return bytes(int(sample_rate * 0.1) * 2)

    def stream(self, text: str, sample_rate: int) -> Iterator[bytes]:
        yield self.synthesize(text, sample_rate)


def test_pressing_the_key_keeps_the_place_confirms_and_hangs_up(rig: Rig) -> None:
    services = SpeechServices(asr=_NoAsr(), tts=_SilentTts(), workers=1)  # type: ignore[arg-type]
    try:
        rig.busy_agent()
        channel = ReplayChannel([], {}, 8000, max_seconds=60)
        channel.caller = "sip:amy@127.0.0.1"
        channel._control.append((8.0, DtmfDigit("1")))  # after the offer (a replay's steps wait for a turn)
        said: list[str] = []

        class Observer:
            def on_event(self, event: ev.CallEvent) -> None:
                channel.on_event(event)
                if isinstance(event, ev.PromptPlayed):
                    said.append(event.text)

        line = CallLine(channel, channel.call_id, services, SessionConfig(), Observer())
        records = CallRecords(None, channel.call_id)
        playback = Playback(line, services.tts, system_prompts("en", None), records, Privacy(dict))
        wait = QueueWait(line, rig.acd, playback, records, voicemail=lambda q="": None, resume_at=lambda n: None)
        assert wait.wait("support", {"caller": "sip:amy@127.0.0.1"}) is None
        assert line.result.outcome == "callback_requested"
        assert any("Press 1 to keep your place" in text for text in said)
        assert any("we will call you back" in text for text in said)
        assert rig.entry(channel.call_id)["state"] == "callback"
        assert not channel.connected
    finally:
        services.shutdown()


def test_callback_number_prefers_a_uri() -> None:
    class Chan:
        caller = "1001"
        contact = "sip:1001@10.0.0.9:5062"

    assert callback_number(Chan(), {}) == "sip:1001@10.0.0.9:5062"
    Chan.caller = "sip:amy@host"
    assert callback_number(Chan(), {}) == "sip:amy@host"


# ----------------------------------------------------------------------------------- POST /api/callbacks


def test_api_queues_a_callback_with_a_supervisor_token_and_says_what_to_fix(rig: Rig) -> None:
    from werkzeug.security import generate_password_hash

    from ivr.web import create_app, new_token

    for name, role in (("sue", "supervisor"), ("ann", "agent")):
        rig.store.add_user(name, generate_password_hash(f"{name}-password", "pbkdf2:sha256:1000"), role, 0.0)
    client = create_app(rig.store, rig.acd, {"secret_key": "test"}).test_client()
    sue = {"Authorization": f"Bearer {new_token(rig.store, 'sue')}"}
    ann = {"Authorization": f"Bearer {new_token(rig.store, 'ann')}"}

    body = {"number": "sip:amy@127.0.0.1:5090", "queue": "support", "context": {"intent": "renewal"}}
    assert client.post("/api/callbacks", json=body).status_code in (400, 401)  # no token (and no CSRF header)
    assert client.post("/api/callbacks", json=body, headers=ann).status_code == 403
    resp = client.post("/api/callbacks", json=body, headers=sue)
    assert resp.status_code == 201, resp.data
    made = resp.get_json()
    assert made["state"] == "callback" and made["call_id"].startswith("callback-")
    assert rig.entry(made["call_id"])["callback_number"] == "sip:amy@127.0.0.1:5090"
    rig.acd.set_agent_state("bob", "available")
    assert rig.dialer.attempts[-1].headers["X-IVR-Intent"] == "renewal"

    def error(payload: dict[str, Any]) -> str:
        resp = client.post("/api/callbacks", json=payload, headers=sue)
        assert resp.status_code == 400, resp.data
        return str(resp.get_json()["error"])

    assert "number must be a SIP URI" in error({"queue": "support"})
    assert "number must be a SIP URI" in error({"number": "call me", "queue": "support"})
    assert "queue must be one of: support, plain" in error({"number": "+15550100", "queue": "nope"})
    assert "takes no callbacks" in error({"number": "+15550100", "queue": "plain"})
    assert "context must be a JSON object" in error({"number": "+15550100", "queue": "support", "context": [1]})
    assert client.post("/api/callbacks", json={"number": "+15550100", "queue": "support"},
                       headers=sue).status_code == 201
    client.post("/api/callbacks", json={"number": "+15550100", "queue": "support"}, headers=sue)
    assert "has had its 2 callbacks for today" in error({"number": "+15550100", "queue": "support"})


def test_a_dialer_that_never_reports_does_not_keep_the_agent_reserved(rig: Rig) -> None:
    rig.busy_agent()
    rig.acd.enqueue("c1", "support", context={"caller": "sip:amy@127.0.0.1"})
    assert rig.acd.request_callback("c1", "sip:amy@127.0.0.1")
    rig.acd.call_finished("c0")
    [attempt] = rig.dialer.attempts
    rig.later(2 * 10 + 29)
    assert rig.acd.snapshot()["agents"]["ann"]["state"] == "reserved"
    rig.later(1)
    assert rig.dialer.cancelled == [attempt.attempt_id]
    assert rig.acd.snapshot()["agents"]["ann"]["state"] == "available"
    assert rig.entry("c1")["state"] == "callback"  # tried again after retry_after
