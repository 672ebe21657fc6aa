"""The parts of a call session, each alone with small fakes (a replayed line, a fake queue, a fake store)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ivr.call import events as ev
from ivr.call.config import SessionConfig
from ivr.call.line import CallEnded, CallLine
from ivr.call.playback import Playback
from ivr.call.queueing import QueueWait
from ivr.call.records import CallRecords, Privacy
from ivr.call.turns import TurnTaker
from ivr.events import DtmfDigit, NoInput
from ivr.flow import actions as fa
from ivr.flow.prompts import system_prompts
from ivr.queue.engine import Announce, Connected, Overflowed, Refused, Ticket
from ivr.replay.channel import ReplayChannel
from ivr.replay.scenario import CallerStep
from ivr.services import SpeechServices
from ivr.speech.interfaces import RecognizerCapabilities


class SilentTts:
    def synthesize(self, text: str, sample_rate: int) -> bytes:
        return bytes(int(sample_rate * 0.1) * 2)

    def stream(self, text: str, sample_rate: int) -> Iterator[bytes]:
        yield self.synthesize(text, sample_rate)


class NoAsr:
    name = "none"
    capabilities = RecognizerCapabilities()

    def new_recognizer(self, sample_rate: int, grammar: Any = None) -> Any:
        raise AssertionError("nothing to recognise here")


class ListStore:
    """Keeps what the call writes, by method; ``broken`` makes every write fail."""

    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.writes: list[tuple[str, tuple[Any, ...]]] = []

    def _write(self, name: str, *args: Any) -> None:
        if self.broken:
            raise OSError("disk full")
        self.writes.append((name, args))

    def start_call(self, *args: Any) -> None: self._write("start_call", *args)
    def mark_answered(self, *args: Any) -> None: self._write("mark_answered", *args)
    def add_turn(self, *args: Any) -> None: self._write("add_turn", *args)
    def add_event(self, *args: Any) -> None: self._write("add_event", *args)
    def set_context(self, *args: Any) -> None: self._write("set_context", *args)
    def end_call(self, *args: Any) -> None: self._write("end_call", *args)


class FakeQueues:
    """A queue service that hands out scripted updates, one list per poll."""

    def __init__(self, updates: list[list[Any]]) -> None:
        self.updates = updates
        self.finished: list[str] = []
        self.abandoned: list[str] = []

    def enqueue(self, call_id: str, queue: str, priority: int | None = None,
                context: dict[str, Any] | None = None) -> Ticket:
        return Ticket(call_id, queue, 0, 1, 0.0, None)

    def poll(self, call_id: str) -> list[Any]:
        return self.updates.pop(0) if self.updates else []

    def abandon(self, call_id: str) -> None:
        self.abandoned.append(call_id)

    def call_finished(self, call_id: str) -> None:
        self.finished.append(call_id)

    def has_queue(self, name: str) -> bool:
        return True


@pytest.fixture
def services() -> Iterator[SpeechServices]:
    made = SpeechServices(asr=NoAsr(), tts=SilentTts(), workers=1)  # type: ignore[arg-type]
    yield made
    made.shutdown()


def _parts(services: SpeechServices, steps: list[CallerStep], store: ListStore | None = None,
           context: dict[str, Any] | None = None) -> tuple[CallLine, ReplayChannel, list[ev.CallEvent],
                                                           CallRecords, Playback]:
    channel = ReplayChannel(steps, {}, 8000, max_seconds=30)
    events: list[ev.CallEvent] = []

    class Observer:
        def on_event(self, event: ev.CallEvent) -> None:
            channel.on_event(event)
            events.append(event)

    line = CallLine(channel, channel.call_id, services, SessionConfig(), Observer())
    records = CallRecords(store, channel.call_id)
    privacy = Privacy(lambda: dict(context or {}))
    playback = Playback(line, services.tts, system_prompts("en", None), records, privacy)
    return line, channel, events, records, playback


def test_a_broken_store_is_logged_and_the_call_goes_on(caplog) -> None:
    records = CallRecords(ListStore(broken=True), "call-1")
    with caplog.at_level("ERROR", logger="ivr.call"):
        records.call_started("+1555", "100", "support", 1.0)
        records.call_ended("completed")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["call call-1: store.start_call failed", "call call-1: store.mark_answered failed",
                        "call call-1: store.end_call failed"]


def test_records_write_what_the_store_expects() -> None:
    store = ListStore()
    records = CallRecords(store, "call-2")
    records.caller_turn("track my order", "order_status", 0.9)
    records.event(ev.WebhookAnswered(at=3.0, url="http://orders.test/1", status=200, ok=True))
    name, (call_id, _at, speaker, text, intent, confidence) = store.writes[0]
    assert (name, call_id, speaker, text, intent, confidence) == (
        "add_turn", "call-2", "caller", "track my order", "order_status", 0.9)
    assert store.writes[1][0] == "add_event" and store.writes[1][1][2:] == (
        "http", {"url": "http://orders.test/1", "status": 200, "ok": True, "error": ""})


def test_a_card_number_is_masked_in_what_the_caller_keyed(services: SpeechServices) -> None:
    store = ListStore()
    line, _channel, events, records, playback = _parts(services, [CallerStep(line=1, dtmf="4111111111111111#")],
                                                       store)
    turns = TurnTaker(line, playback, records, Privacy(dict))
    event = turns.listen(fa.Listen(speech=False, dtmf=True, dtmf_max_digits=20, sensitive="card"))
    assert event == DtmfDigit("4111111111111111")  # the flow gets the number itself
    [keys] = [e for e in events if isinstance(e, ev.KeysPressed)]
    assert "4111111111" not in keys.digits and keys.digits.endswith("1111")
    assert "4111111111" not in store.writes[-1][1][3]


def test_no_answer_is_no_input_on_the_call_clock(services: SpeechServices) -> None:
    line, _channel, events, records, playback = _parts(services, [CallerStep(line=1, silence=5.0, after=0.0)])
    turns = TurnTaker(line, playback, records, Privacy(dict))
    assert turns.listen(fa.Listen(no_input_timeout=2.0)) == NoInput()
    [no_input] = [e for e in events if isinstance(e, ev.NoInputHeard)]
    assert 2.0 <= no_input.at < 2.2


def test_the_first_audio_of_a_reply_ends_the_turn_latency(services: SpeechServices) -> None:
    line, _channel, events, _records, playback = _parts(services, [])
    playback.say(fa.Say("Hello."))  # no caller turn before it: no latency
    playback.turn_ended = 0.0
    playback.say(fa.Say("Your order ships today."))
    playback.say(fa.Say("Anything else?"))
    assert len([e for e in events if isinstance(e, ev.TurnLatency)]) == 1
    assert len(line.result.turn_latencies) == 1


def test_waiting_in_a_queue_announces_then_an_agent_takes_the_call(services: SpeechServices) -> None:
    store = ListStore()
    line, _channel, events, records, playback = _parts(services, [], store)
    queues = FakeQueues([[], [Announce("", position=2, queue="support")], [],
                         [Connected("alice", "sip:alice@example.com", "refer")]])
    wait = QueueWait(line, queues, playback, records, voicemail=lambda: None, resume_at=lambda node: None)
    assert wait.wait("support", {}) is None
    assert any(isinstance(e, ev.PromptPlayed) and "2" in e.text for e in events)
    assert line.result.outcome == "transferred" and line.result.transfer_target == "sip:alice@example.com"
    assert [w[1][2] for w in store.writes] == ["queued", "bot", "agent_connected"]  # the announcement is a turn


def test_a_queue_overflowing_to_a_node_resumes_the_flow_there(services: SpeechServices) -> None:
    line, _channel, _events, records, playback = _parts(services, [])
    resumed: list[str] = []
    wait = QueueWait(line, FakeQueues([[Overflowed("node", "goodbye", "max_wait")]]), playback, records,
                     voicemail=lambda: None, resume_at=resumed.append)
    assert wait.wait("support", {}) is None
    assert resumed == ["goodbye"]


def test_a_queue_giving_the_call_back_says_why(services: SpeechServices) -> None:
    line, _channel, _events, records, playback = _parts(services, [])
    wait = QueueWait(line, FakeQueues([[Refused("billing", "no_agents", "nobody logged in")]]), playback,
                     records, voicemail=lambda: None, resume_at=lambda node: None)
    assert wait.wait("billing", {}) == "queue billing gave the call back: nobody logged in"


def test_a_caller_hanging_up_in_the_queue_abandons_it(services: SpeechServices) -> None:
    line, _channel, _events, records, playback = _parts(services, [CallerStep(line=1, hangup=True, after=1.0)])
    queues = FakeQueues([])
    wait = QueueWait(line, queues, playback, records, voicemail=lambda: None, resume_at=lambda node: None)
    with pytest.raises(CallEnded):
        wait.wait("support", {})
    assert line.result.outcome == "abandoned" and queues.abandoned == [line.call_id]
