"""The call session with small fakes for the flow and the speech engines (real VAD, real replay channel)."""

from __future__ import annotations

import json
import threading
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ivr.audio.wavfile import read_wav
from ivr.call import CallSession, SessionConfig
from ivr.call import events as ev
from ivr.events import ControlEvent, DtmfDigit, Hangup, HttpResult, NoInput, RecordingFinished, Transcript
from ivr.flow import actions as fa
from ivr.handoff import check_context_signature, context_headers, context_url
from ivr.replay.channel import ReplayChannel
from ivr.replay.scenario import CallerStep
from ivr.services import SpeechServices
from ivr.testing.fakes import FakeAsr, FakeTts


class ScriptedFlow:
    """An interpreter that answers each event with the next list of actions."""

    def __init__(self, start: list[fa.FlowAction], replies: list[list[fa.FlowAction]] | None = None,
                 fail_on: type | None = None) -> None:
        self._start = start
        self._replies = list(replies or [])
        self.events: list[ControlEvent] = []
        self.finished = False
        self.fail_on = fail_on

    def start(self) -> list[fa.FlowAction]:
        return self._start

    def handle(self, event: ControlEvent) -> list[fa.FlowAction]:
        self.events.append(event)
        if self.fail_on is not None and isinstance(event, self.fail_on):
            raise RuntimeError("flow blew up")
        return self._replies.pop(0) if self._replies else []

    def context(self) -> dict[str, Any]:
        return {"flow": "test", "intent": "agent", "confidence": 0.8, "slots": {"order number": "12345"}}


class MemoryStore:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args: self.calls.append((name, args))


@pytest.fixture
def services_factory() -> Iterator[Callable[[Sequence[str]], SpeechServices]]:
    made: list[SpeechServices] = []

    def make(texts: Sequence[str] = ()) -> SpeechServices:
        services = SpeechServices(asr=FakeAsr(texts), tts=FakeTts())
        made.append(services)
        return services

    yield make
    for services in made:
        services.shutdown()


def _run(flow: ScriptedFlow, steps: list[CallerStep], services: SpeechServices, audio: dict[str, bytes] | None = None,
         store: MemoryStore | None = None, config: SessionConfig | None = None,
         queues: Any = None) -> tuple[Any, ReplayChannel, list]:
    channel = ReplayChannel(steps, audio or {}, 8000, max_seconds=120)
    events: list[ev.CallEvent] = []

    class Observer:
        def on_event(self, event: ev.CallEvent) -> None:
            channel.on_event(event)
            events.append(event)

    session = CallSession(channel, flow, services, flow_name="test", store=store, observer=Observer(), config=config,
                          queues=queues)
    return session.run(), channel, events


@pytest.fixture(scope="module")
def hello_pcm(espeak_wav: Callable[..., Path]) -> bytes:
    return read_wav(espeak_wav("I would like to talk to a person please", rate=8000, lead=0.2, tail=0.2), 8000).pcm


def test_speech_answer_reaches_the_flow_and_transfer_carries_context(services_factory, hello_pcm) -> None:
    flow = ScriptedFlow(
        [fa.Say("Welcome. How can I help?"), fa.Listen()],
        [[fa.Say("Transferring you now."), fa.Transfer(queue="support")]],
    )
    store = MemoryStore()
    result, channel, events = _run(flow, [CallerStep(line=1, audio="hello")], services_factory(["talk to a person"]),
                                   {"hello": hello_pcm}, store)
    assert result.outcome == "transferred"
    assert isinstance(flow.events[0], Transcript) and flow.events[0].text == "talk to a person"
    target, headers = channel.transfers[0]
    assert target == "support"
    assert headers["X-IVR-Intent"] == "agent"
    assert headers["X-IVR-Slots"] == "order number=*****"  # SIP headers carry what anyone may see
    kinds = [name for name, _ in store.calls]
    assert kinds[0] == "start_call" and kinds[-1] == "end_call"
    assert ("add_turn" in kinds) and store.calls[-1][1][2] == "transferred"
    # the caller heard the whole goodbye before the transfer
    assert channel.playback_pending() == 0
    assert any(isinstance(e, ev.TurnLatency) for e in events)


def test_silence_gives_no_input_after_the_timeout(services_factory) -> None:
    flow = ScriptedFlow([fa.Say("Hello?"), fa.Listen(no_input_timeout=2.0)], [[fa.Hangup("no_input")]])
    result, _channel, events = _run(flow, [CallerStep(line=1, silence=10)], services_factory())
    assert isinstance(flow.events[0], NoInput)
    no_input_at = next(e.at for e in events if isinstance(e, ev.NoInputHeard))
    prompt_end = 0.1 * 1  # one word at 0.1 s
    assert prompt_end + 2.0 - 0.04 <= no_input_at <= prompt_end + 2.2
    assert result.outcome == "no_input"


def test_dtmf_digits_are_collected_until_the_terminator(services_factory) -> None:
    flow = ScriptedFlow([fa.Say("Key your order number then hash."), fa.Listen(speech=False, dtmf_max_digits=10)],
                        [[fa.Hangup()]])
    _run(flow, [CallerStep(line=1, dtmf="12345#")], services_factory())
    assert flow.events == [DtmfDigit("12345")]


def test_dtmf_inter_digit_timeout_ends_collection(services_factory) -> None:
    flow = ScriptedFlow([fa.Listen(dtmf_max_digits=6, dtmf_inter_digit_timeout=1.0)], [[fa.Hangup()]])
    _run(flow, [CallerStep(line=1, dtmf="42")], services_factory())
    assert flow.events == [DtmfDigit("42")]


def test_speech_over_a_prompt_barges_in(services_factory, hello_pcm) -> None:
    long_prompt = " ".join(["word"] * 60)  # six seconds
    flow = ScriptedFlow([fa.Say(long_prompt), fa.Listen()], [[fa.Hangup()]])
    _result, channel, events = _run(flow, [CallerStep(line=1, audio="hello", barge_in=True, after=1.0)],
                                    services_factory(["operator"]), {"hello": hello_pcm})
    barge = [e for e in events if isinstance(e, ev.BargedIn)]
    assert barge and barge[0].by == "speech"
    assert barge[0].at < 1.6  # the caller started at ~1.0 s (plus espeak's 0.2 s lead)
    assert isinstance(flow.events[0], Transcript)
    # the rest of the six-second prompt was dropped, not played
    played_until = len(channel.bot_audio) / 2 / 8000
    assert played_until < 6.0


def test_no_barge_in_when_the_prompt_forbids_it(services_factory, hello_pcm) -> None:
    flow = ScriptedFlow([fa.Say(" ".join(["word"] * 30), barge_in=False), fa.Listen(no_input_timeout=1.0)],
                        [[fa.Hangup()]])
    _r, _c, events = _run(flow, [CallerStep(line=1, audio="hello", barge_in=True, after=0.5)],
                          services_factory(["ignored"]), {"hello": hello_pcm})
    assert not any(isinstance(e, ev.BargedIn) for e in events)
    assert isinstance(flow.events[0], NoInput)


def test_caller_hangup_mid_prompt_ends_the_call_and_is_recorded(services_factory) -> None:
    flow = ScriptedFlow([fa.Say(" ".join(["word"] * 50)), fa.Listen()])
    store = MemoryStore()
    result, _c, _e = _run(flow, [CallerStep(line=1, hangup=True, barge_in=True, after=0.5)], services_factory(),
                          store=store)
    assert result.outcome == "caller_hangup"
    assert store.calls[-1][0] == "end_call" and store.calls[-1][1][2] == "caller_hangup"


def test_an_error_in_the_flow_apologises_and_transfers_to_the_fallback_queue(services_factory) -> None:
    flow = ScriptedFlow([fa.Say("Hi"), fa.Listen(no_input_timeout=1.0)], fail_on=NoInput)
    result, channel, events = _run(flow, [CallerStep(line=1, silence=5)], services_factory(),
                                   config=SessionConfig(fallback_queue="fallback"))
    assert result.outcome == "transferred"
    assert channel.transfers[0][0] == "fallback"
    prompts = [e.text for e in events if isinstance(e, ev.PromptPlayed)]
    assert "Sorry, something went wrong" in prompts[-1]


class _SlowHandler(BaseHTTPRequestHandler):
    delay = 1.3

    def do_GET(self) -> None:
        threading.Event().wait(self.delay)
        body = json.dumps({"status": "shipped"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def slow_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_slow_webhook_plays_filler_and_returns_the_result(services_factory, slow_server) -> None:
    request = fa.HttpRequest("GET", f"{slow_server}/orders/1", timeout=5, filler="One moment please.",
                             filler_after=0.5)
    flow = ScriptedFlow([request], [[fa.Hangup()]])
    _r, _c, events = _run(flow, [], services_factory())
    result = flow.events[0]
    assert isinstance(result, HttpResult) and result.ok and result.data == {"status": "shipped"}
    assert "One moment please." in [e.text for e in events if isinstance(e, ev.PromptPlayed)]


class _StuckOrderApi(BaseHTTPRequestHandler):
    """An order API that takes 5 s to answer; ``arrived`` counts requests as they come in."""

    arrived = threading.Semaphore(0)

    def do_GET(self) -> None:
        type(self).arrived.release()
        threading.Event().wait(5.0)
        body = json.dumps({"status": "shipped"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_slow_order_api_does_not_delay_another_calls_recognition(hello_pcm) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StuckOrderApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    services = SpeechServices(asr=FakeAsr(["talk to a person"]), tts=FakeTts())
    url = f"http://127.0.0.1:{server.server_address[1]}/orders/1"
    stuck = [ScriptedFlow([fa.HttpRequest("GET", url, timeout=10)], [[fa.Hangup()]])
             for _ in range(services.workers + 1)]  # more waiting calls than there are recognition workers
    threads = [threading.Thread(target=CallSession(ReplayChannel([], {}, 8000, max_seconds=60), flow, services).run)
               for flow in stuck]
    try:
        for thread in threads:
            thread.start()
        for _ in range(services.workers):  # (a shared pool would hold the last one back)
            assert _StuckOrderApi.arrived.acquire(timeout=5)  # the webhooks are waiting on the order API
        listener = ScriptedFlow([fa.Listen()], [[fa.Hangup()]])
        _result, _channel, events = _run(listener, [CallerStep(line=1, audio="hello")], services, {"hello": hello_pcm})
        assert listener.events[0] == Transcript("talk to a person", 0.9)
        recognition = [e.seconds for e in events if isinstance(e, ev.RecognitionTimed)]
        assert recognition and max(recognition) < 0.05, recognition
        for thread in threads:
            thread.join(timeout=10)
        assert all(isinstance(f.events[0], HttpResult) and f.events[0].ok for f in stuck)
    finally:
        server.shutdown()
        server.server_close()
        services.shutdown()


def test_failing_webhook_reports_failure_without_raising(services_factory) -> None:
    request = fa.HttpRequest("GET", "http://127.0.0.1:9/nothing-listens-here", timeout=0.5, retries=1)
    flow = ScriptedFlow([request], [[fa.Hangup()]])
    _run(flow, [], services_factory())
    result = flow.events[0]
    assert isinstance(result, HttpResult) and not result.ok and result.error


def test_record_writes_what_the_caller_said(services_factory, hello_pcm, tmp_path) -> None:
    flow = ScriptedFlow([fa.Say("Leave a message after the tone."), fa.Record(max_seconds=10, end_silence=1.0)],
                        [[fa.Hangup()]])
    _run(flow, [CallerStep(line=1, audio="hello", after=0.3)], services_factory(), {"hello": hello_pcm},
         config=SessionConfig(recordings_dir=str(tmp_path)))
    finished = flow.events[0]
    assert isinstance(finished, RecordingFinished)
    with wave.open(finished.path) as wav:
        seconds = wav.getnframes() / wav.getframerate()
    speech_seconds = len(hello_pcm) / 2 / 8000
    assert speech_seconds <= seconds <= speech_seconds + 3.0


def test_hangup_reaches_the_flow_when_the_caller_leaves_while_listening(services_factory) -> None:
    flow = ScriptedFlow([fa.Listen()])
    _run(flow, [CallerStep(line=1, hangup=True)], services_factory())
    assert flow.events == [Hangup()]


def test_transfer_headers_are_ascii_and_single_line() -> None:
    headers = context_headers({"call_id": "c1", "intent": "billing", "slots": {"name": "Zoë\r\nX-Evil: 1"},
                               "sensitive": {"name": "none"}})
    assert headers["X-IVR-Slots"] == "name=Zo? X-Evil: 1"
    assert all("\n" not in v and v.isascii() for v in headers.values())


class CardFlow(ScriptedFlow):
    def context(self) -> dict[str, Any]:
        return {"flow": "pay", "intent": "billing", "confidence": 0.9, "last_text": "it is 4111 1111 1111 1111",
                "slots": {"card": "4111111111111111", "pin": "4321", "order": "27182818", "plan": "gold"},
                "sensitive": {"card": "card", "pin": "secret", "plan": "none"}}


def test_a_uri_transfer_sends_masked_headers_and_a_signed_context_link(services_factory) -> None:
    flow = CardFlow([fa.Transfer(uri="sip:desk@pbx.test", context={"order_again": "27182818"})])
    store = MemoryStore()
    config = SessionConfig(context_url=lambda call_id: context_url("http://console.test", "k", call_id))
    result, channel, _ = _run(flow, [], services_factory(), store=store, config=config)
    assert result.outcome == "transferred"
    target, headers = channel.transfers[0]
    assert target == "sip:desk@pbx.test"
    assert headers["X-IVR-Slots"] == "card=************1111;pin=****;order=****2818;plan=gold"
    assert "4111" not in str(headers) and "27182818" not in str(headers) and "4321" not in str(headers)
    link = headers["X-IVR-Context-Url"]
    assert link.startswith(f"http://console.test/api/context/{result.call_id}/")
    expires, sig = link.split("/")[-2:]
    assert check_context_signature("k", result.call_id, expires, sig)
    assert not check_context_signature("other key", result.call_id, expires, sig)
    # the call record keeps what the agent may see: the order in full, the card's last 4, no PIN
    stored = next(args[1] for name, args in store.calls if name == "set_context")
    assert stored["slots"] == {"card": "************1111", "pin": "****", "order": "27182818", "plan": "gold"}
    assert stored["last_text"] == "it is **** **** **** 1111" and stored["order_again"] == "27182818"


def test_answers_to_secret_and_card_questions_are_masked_in_turns_and_events(services_factory) -> None:
    flow = ScriptedFlow([fa.Listen(dtmf_max_digits=4, sensitive="secret")],
                        [[fa.Listen(dtmf_max_digits=16, sensitive="card")], [fa.Hangup()]])
    store = MemoryStore()
    _result, _channel, events = _run(flow, [CallerStep(line=1, dtmf="4321", after=0.2),
                                            CallerStep(line=2, dtmf="4111111111111111", after=0.2)],
                                     services_factory(), store=store)
    assert flow.events[0] == DtmfDigit("4321") and flow.events[1] == DtmfDigit("4111111111111111")  # the flow has them
    turns = [args[3] for name, args in store.calls if name == "add_turn" and args[2] == "caller"]
    assert turns == ["[DTMF ****]", "[DTMF ************1111]"]
    assert [e.digits for e in events if isinstance(e, ev.KeysPressed)] == ["****", "************1111"]


# ------------------------------------------------------------------------------------------ agent queues

QUEUES = """
version: 1
agents:
  alice: {uri: "sip:alice@127.0.0.1:5071", skills: [english]}
queues:
  support:
    skills: [english]
    ring_timeout: 5
    connection: refer
    announce: {every: 5, first_after: 0, text: "You are number {position} in the queue."}
    overflow: {voicemail: support, when: [no_agents]}
"""


def _acd(auto: dict[str, Any] | None = None) -> Any:
    from ivr.queue.config import parse_queues
    from ivr.queue.engine import Acd
    from ivr.testing.fakes import FakeConnector

    connector = FakeConnector(auto=auto or {})
    return Acd(parse_queues(QUEUES), connector), connector


def test_transfer_to_a_queue_waits_with_announcements_until_an_agent_answers(services_factory) -> None:
    from ivr.queue.connector import OfferResult

    acd, connector = _acd()
    acd.set_agent_state("alice", "available")
    flow = ScriptedFlow([fa.Transfer(queue="support")])
    channel = ReplayChannel([], {}, 8000, max_seconds=60)
    events: list[ev.CallEvent] = []

    class Observer:
        def on_event(self, event: ev.CallEvent) -> None:
            channel.on_event(event)
            events.append(event)
            if isinstance(event, ev.PromptPlayed) and "number 1" in event.text:
                connector.report(connector.offers[0].offer_id, OfferResult.ANSWERED)

    result = CallSession(channel, flow, services_factory(), queues=acd, observer=Observer()).run()
    assert result.outcome == "transferred"
    assert any(isinstance(e, ev.AgentConnected) and e.agent == "alice" for e in events)
    offer = connector.offers[0]
    assert offer.uri == "sip:alice@127.0.0.1:5071"
    assert any(name.lower() == "x-ivr-intent" for name in offer.headers)
    # music on hold played while waiting: the caller never heard dead air before the agent answered
    assert channel.bot_audio.count(b"\x00" * 3200) < 3


def test_caller_who_hangs_up_in_the_queue_is_counted_abandoned(services_factory) -> None:
    acd, _connector = _acd()
    acd.set_agent_state("alice", "available")
    flow = ScriptedFlow([fa.Transfer(queue="support")])
    channel = ReplayChannel([], {}, 8000, max_seconds=3)  # the caller gives up after 3 s
    result = CallSession(channel, flow, services_factory(), queues=acd, observer=channel).run()
    assert result.outcome == "abandoned"
    assert acd.poll(channel.call_id) == []
    assert acd.snapshot()["queues"]["support"] == []


def test_no_agents_logged_in_overflows_to_voicemail(services_factory, tmp_path) -> None:
    acd, _connector = _acd()
    flow = ScriptedFlow([fa.Transfer(queue="support")])
    result, _channel, events = _run(flow, [], services_factory(), config=SessionConfig(recordings_dir=str(tmp_path)),
                                    queues=acd)
    assert result.outcome == "voicemail"
    assert any(isinstance(e, ev.QueueOverflowed) and e.kind == "voicemail" for e in events)
    assert any(isinstance(e, ev.MessageRecorded) for e in events)


def test_queue_overflow_to_a_flow_node_continues_the_flow(services_factory) -> None:
    from ivr.flow.interpreter import CallInterpreter
    from ivr.flow.loader import load_flow
    from ivr.flow.testing import KeywordClassifier
    from ivr.queue.config import parse_queues
    from ivr.queue.engine import Acd
    from ivr.testing.fakes import FakeConnector

    flow = load_flow(Path(__file__).parent.parent / "flows" / "hotline.yaml",
                     classifier_factory=KeywordClassifier.build)
    acd = Acd(parse_queues(QUEUES.replace("{voicemail: support, when: [no_agents]}", "{node: goodbye}")),
              FakeConnector())
    channel = ReplayChannel([CallerStep(line=1, dtmf="0")], {}, 8000, max_seconds=120)
    interpreter = CallInterpreter(flow, call_vars={"caller": "+1555"})
    events: list[ev.CallEvent] = []

    class Observer:
        def on_event(self, event: ev.CallEvent) -> None:
            channel.on_event(event)
            events.append(event)

    result = CallSession(channel, interpreter, services_factory(), queues=acd, observer=Observer()).run()
    prompts = [e.text for e in events if isinstance(e, ev.PromptPlayed)]
    assert any("connect you with an agent" in p for p in prompts)
    assert prompts[-1] == "Thank you for calling Acme. Goodbye."
    assert any(isinstance(e, ev.QueueOverflowed) and e.kind == "node" for e in events)
    assert result.outcome == interpreter.outcome != "transferred"


def test_a_caller_hanging_up_mid_message_keeps_the_recording(services_factory, hello_pcm, tmp_path) -> None:
    flow = ScriptedFlow([fa.Record(max_seconds=30, end_silence=3.0, beep=False)])
    half = hello_pcm[: len(hello_pcm) // 2]
    store = MemoryStore()
    result, _channel, events = _run(flow, [CallerStep(line=1, audio="half", after=0.2),
                                           CallerStep(line=2, hangup=True, barge_in=True, after=0.0)],
                                    services_factory(), {"half": half}, store=store,
                                    config=SessionConfig(recordings_dir=str(tmp_path)))
    assert result.outcome == "caller_hangup"
    recording = next(e for e in events if isinstance(e, ev.MessageRecorded))
    with wave.open(recording.path) as wav:
        assert wav.getnframes() >= len(half) // 2 - 160  # everything the caller said before hanging up
    assert isinstance(flow.events[0], RecordingFinished)
    assert store.calls[-1][1][2] == "caller_hangup"


def test_slow_recognition_fills_the_line_with_comfort_noise(hello_pcm) -> None:
    class SlowAsr(FakeAsr):
        def new_recognizer(self, sample_rate: int, grammar: Sequence[str] | None = None) -> Any:
            rec = super().new_recognizer(sample_rate, grammar)
            finish = rec.finish

            def slow_finish() -> Transcript:
                threading.Event().wait(1.6)
                return finish()

            rec.finish = slow_finish
            return rec

    services = SpeechServices(asr=SlowAsr(["operator"]), tts=FakeTts())
    flow = ScriptedFlow([fa.Listen(no_input_timeout=5)], [[fa.Hangup()]])
    channel = ReplayChannel([CallerStep(line=1, audio="hello", after=0.1)], {"hello": hello_pcm}, 8000,
                            realtime=True, max_seconds=20)
    try:
        CallSession(channel, flow, services, observer=channel).run()
    finally:
        services.shutdown()
    assert isinstance(flow.events[0], Transcript)
    # FakeTts prompts are digital silence, so anything audible after the caller stopped is comfort noise.
    speech_stop = 0.1 + len(hello_pcm) / 2 / 8000
    after = channel.bot_audio[int(speech_stop * 8000) * 2:]
    levels = [abs(int.from_bytes(after[i:i + 2], "little", signed=True)) for i in range(0, len(after), 2)]
    audible = [i for i, level in enumerate(levels) if level > 0]
    assert audible, "dead air while the recognizer was slow"
    assert max(levels) < 400  # soft
    # only after about a second of waiting (comfort_noise_after): it starts 1.005 s into the bot's audio on a quiet
    # machine, and the bot's timeline runs a frame or two short of the clock under load (0.986 s in a fresh-clone
    # CI run), so the bound leaves room for that and still fails noise that starts early
    assert audible[0] / 8000 >= 0.8, audible[0] / 8000


def test_a_lost_line_ends_the_call_as_interrupted_without_spinning(services_factory) -> None:
    """The call's SIP worker died: no hangup arrives, the channel just ends. The session stops at once."""
    from ivr.sip.channel import SipChannel

    class NoControl:
        def request_hangup(self, channel: Any) -> None: ...
        def request_transfer(self, channel: Any, target: str, headers: dict[str, str]) -> Any: ...

    channel = SipChannel(NoControl(), call_id="lost-1", caller="555", called="100", sample_rate=8000)
    flow = ScriptedFlow([fa.Listen(no_input_timeout=30.0)])
    store = MemoryStore()
    session = CallSession(channel, flow, services_factory(), flow_name="test", store=store)

    def feed_then_lose_the_line() -> None:
        for _ in range(25):
            channel.push_inbound(None)  # half a second of silence
        time.sleep(0.5)
        channel.mark_ended(by_caller=False, interrupted=True)

    feeder = threading.Thread(target=feed_then_lose_the_line)
    started = time.monotonic()
    feeder.start()
    result = session.run()
    feeder.join()
    assert result.outcome == "interrupted"
    assert time.monotonic() - started < 2.0
    assert store.calls[-1][0] == "end_call" and store.calls[-1][1][2] == "interrupted"
    assert flow.events == []  # nobody to talk to: the flow is not asked what to do next


# ------------------------------------------------------------------------------ failed transfers


class RefusingChannel(ReplayChannel):
    """A line whose SIP transfers (REFER) all fail."""

    def transfer(self, target: str, headers: dict[str, str]) -> bool:
        self.transfers.append((target, headers))
        return False


def test_a_transfer_to_an_unknown_queue_goes_to_the_fallback_queue_and_is_logged(services_factory, caplog) -> None:
    from ivr.queue.connector import OfferResult

    acd, _connector = _acd(auto={"alice": OfferResult.ANSWERED})
    acd.set_agent_state("alice", "available")
    flow = ScriptedFlow([fa.Say("Connecting you to billing."), fa.Transfer(queue="billing")])
    channel = ReplayChannel([], {}, 8000, max_seconds=60)
    events: list[ev.CallEvent] = []

    class Observer:
        def on_event(self, event: ev.CallEvent) -> None:
            channel.on_event(event)
            events.append(event)

    with caplog.at_level("ERROR", logger="ivr.call"):
        result = CallSession(channel, flow, services_factory(), queues=acd, observer=Observer(),
                             fallback_queue="support").run()
    assert result.outcome == "transferred"
    assert any(isinstance(e, ev.AgentConnected) and e.agent == "alice" for e in events)  # a person took the call
    [error] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert channel.call_id in error.getMessage() and "billing" in error.getMessage()
    assert "fallback queue support" in error.getMessage()


def test_a_refused_transfer_and_a_refused_fallback_end_in_voicemail(services_factory, caplog, tmp_path) -> None:
    flow = ScriptedFlow([fa.Transfer(uri="sip:billing@pbx.example.com")])
    channel = RefusingChannel([], {}, 8000, max_seconds=30)
    events: list[ev.CallEvent] = []

    class Observer:
        def on_event(self, event: ev.CallEvent) -> None:
            channel.on_event(event)
            events.append(event)

    with caplog.at_level("ERROR", logger="ivr.call"):
        result = CallSession(channel, flow, services_factory(), observer=Observer(), fallback_queue="support",
                             config=SessionConfig(recordings_dir=str(tmp_path))).run()
    assert [t for t, _ in channel.transfers] == ["sip:billing@pbx.example.com", "support"]
    assert result.outcome == "voicemail"
    assert any(isinstance(e, ev.MessageRecorded) for e in events)
    prompts = " ".join(e.text for e in events if isinstance(e, ev.PromptPlayed))
    assert "couldn't connect you" in prompts and "leave a message" in prompts
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2 and all(channel.call_id in e for e in errors)
    assert "sip:billing@pbx.example.com" in errors[0] and "support" in errors[1]


# ------------------------------------------------------------------------- system prompts in the flow's language

KOREAN_QUEUES = """
version: 1
agents:
  minji: {uri: "sip:minji@127.0.0.1:5071"}
queues:
  support_ko:
    agents: [minji]
    announce: {every: 5, first_after: 0}
    overflow: {voicemail: support_ko, when: [no_agents]}
"""


def _korean_call(services: SpeechServices, acd: Any, tmp_path: Path,
                 steps: list[CallerStep] | None = None) -> tuple[Any, list[str]]:
    """The Korean demo flow; the caller presses 0 for an agent."""
    from ivr.flow.interpreter import CallInterpreter
    from ivr.flow.loader import load_flow
    from ivr.flow.testing import KeywordClassifier

    flow = load_flow(Path(__file__).parent.parent / "flows" / "korean.yaml", classifier_factory=KeywordClassifier.build)
    channel = ReplayChannel(steps or [CallerStep(line=1, dtmf="0")], {}, 8000, max_seconds=40)
    events: list[ev.CallEvent] = []

    class Observer:
        def on_event(self, event: ev.CallEvent) -> None:
            channel.on_event(event)
            events.append(event)

    session = CallSession(channel, CallInterpreter(flow, call_vars={"caller": "+8210"}), services,
                          flow_name=flow.name, language=flow.language, prompts=flow.prompts, queues=acd,
                          observer=Observer(), config=SessionConfig(recordings_dir=str(tmp_path)))
    result = session.run()
    return result, [e.text for e in events if isinstance(e, ev.PromptPlayed)]


def _hangul(text: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" for ch in text)


def test_korean_caller_with_no_agents_hears_the_voicemail_prompts_in_korean(services_factory, tmp_path) -> None:
    from ivr.queue.config import parse_queues
    from ivr.queue.engine import Acd
    from ivr.testing.fakes import FakeConnector

    acd = Acd(parse_queues(KOREAN_QUEUES), FakeConnector())  # nobody logged in: overflow to voicemail
    result, prompts = _korean_call(services_factory(), acd, tmp_path)
    assert result.outcome == "voicemail"
    assert "메시지를 남겨 주세요" in " ".join(prompts)
    assert all(_hangul(p) for p in prompts), prompts  # not one English word on the Korean line


def test_korean_caller_waiting_in_a_queue_hears_announcements_in_korean(services_factory, tmp_path) -> None:
    from ivr.queue.config import parse_queues
    from ivr.queue.engine import Acd
    from ivr.testing.fakes import FakeConnector

    acd = Acd(parse_queues(KOREAN_QUEUES), FakeConnector())
    acd.set_agent_state("minji", "break", "lunch")  # staffed but busy: the caller waits
    acd.start(interval=0.05)
    try:
        _result, prompts = _korean_call(services_factory(), acd, tmp_path,
                                        [CallerStep(line=1, dtmf="0"), CallerStep(line=2, silence=8)])
    finally:
        acd.stop()
    announcements = [p for p in prompts if "대기" in p]
    assert announcements and "1번째" in announcements[0] and "약 3분" in announcements[0]
    assert all(_hangul(p) for p in prompts), prompts


def test_an_unexpected_error_apologises_in_the_flow_language(services_factory) -> None:
    flow = ScriptedFlow([fa.Listen(no_input_timeout=0.5)], fail_on=NoInput)
    channel = ReplayChannel([CallerStep(line=1, silence=3)], {}, 8000, max_seconds=10)
    said: list[str] = []

    class Observer:
        def on_event(self, event: ev.CallEvent) -> None:
            channel.on_event(event)
            if isinstance(event, ev.PromptPlayed):
                said.append(event.text)

    result = CallSession(channel, flow, services_factory(), language="zh-CN", observer=Observer()).run()
    assert result.outcome == "transferred"
    assert said and said[-1].startswith("抱歉"), said


def test_webhooks_beyond_the_bound_fail_at_once_instead_of_queueing(slow_server) -> None:
    services = SpeechServices(asr=FakeAsr([]), tts=FakeTts(), webhook_workers=1, max_webhook_backlog=1)
    try:
        first = services.submit_webhook(fa.HttpRequest("GET", f"{slow_server}/orders/1", timeout=5))
        second = services.submit_webhook(fa.HttpRequest("GET", f"{slow_server}/orders/2", timeout=5))
        assert second.done() and not second.result().ok and "busy" in second.result().error
        assert first.result(timeout=5).ok
    finally:
        services.shutdown()


class _TricklingApi(BaseHTTPRequestHandler):
    """Answers at once, then sends its body one byte a second: each read is quick, the reply never ends."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "12")
        self.end_headers()
        for _ in range(12):
            self.wfile.write(b" ")
            self.wfile.flush()
            threading.Event().wait(0.5)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_webhook_reply_that_never_ends_fails_on_time(services_factory) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TricklingApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        request = fa.HttpRequest("GET", f"http://127.0.0.1:{server.server_address[1]}/orders/1", timeout=1)
        flow = ScriptedFlow([request], [[fa.Hangup()]])
        started = time.perf_counter()
        _run(flow, [], services_factory())
        result = flow.events[0]
        assert isinstance(result, HttpResult) and not result.ok and "timed out" in result.error
        assert time.perf_counter() - started < 4  # the 1 s timeout + 1 s grace, not the 6 s trickle
    finally:
        server.shutdown()
        server.server_close()


def test_recordings_are_written_readable_by_the_server_only(services_factory, hello_pcm, tmp_path) -> None:
    import stat

    flow = ScriptedFlow([fa.Record(max_seconds=5, end_silence=1.0)], [[fa.Hangup()]])
    _run(flow, [CallerStep(line=1, audio="hello", after=0.3)], services_factory(), {"hello": hello_pcm},
         config=SessionConfig(recordings_dir=str(tmp_path / "rec")))
    finished = flow.events[0]
    assert isinstance(finished, RecordingFinished)
    assert stat.S_IMODE(Path(finished.path).stat().st_mode) == 0o600


def test_a_prompt_reading_back_a_secret_or_a_card_is_written_down_masked(services_factory) -> None:
    flow = CardFlow([fa.Say("You said 4 3 2 1 and card 4111 1111 1111 1111."), fa.Hangup()])
    store = MemoryStore()
    _run(flow, [], services_factory(), store=store)
    [said] = [args[3] for name, args in store.calls if name == "add_turn" and args[2] == "bot"]
    assert said == "You said **** and card **** **** **** 1111."


# ------------------------------------------------------------------ a queue never holds a caller forever

NO_OVERFLOW_QUEUES = """
version: 1
agents:
  alice: {uri: "sip:alice@127.0.0.1:5071", skills: [english]}
  bob: {uri: "sip:bob@127.0.0.1:5072", skills: [english, billing]}
queues:
  billing:                    # no overflow: the defaults (no_agents_grace 5 s, max_wait 600 s) hold
    skills: [billing]
    announce: {every: 10, first_after: 0, text: "You are number {position} in the queue."}
  support:
    agents: [alice]
    connection: refer
"""


class QueueClockChannel(ReplayChannel):
    """A replayed line whose ACD runs on the call clock and ticks every 20 ms frame, as the server's ticker."""

    def __init__(self, queues_yaml: str, max_seconds: float) -> None:
        from ivr.queue.config import parse_queues
        from ivr.queue.connector import OfferResult
        from ivr.queue.engine import Acd
        from ivr.testing.fakes import FakeConnector

        super().__init__([], {}, 8000, max_seconds=max_seconds)
        self.acd = Acd(parse_queues(queues_yaml), FakeConnector(auto={"alice": OfferResult.ANSWERED}),
                       clock=lambda: self.now)
        self.on_frame = self.acd.tick
        self.events: list[ev.CallEvent] = []

    def on_event(self, event: ev.CallEvent) -> None:
        super().on_event(event)
        self.events.append(event)

    def prompts(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, ev.PromptPlayed)]


def test_a_queue_nobody_is_logged_in_to_gives_the_caller_to_the_fallback_queue(services_factory, caplog) -> None:
    channel = QueueClockChannel(NO_OVERFLOW_QUEUES, max_seconds=120)
    channel.acd.set_agent_state("alice", "available")  # support is staffed, billing is not
    flow = ScriptedFlow([fa.Transfer(queue="billing")])
    with caplog.at_level("ERROR", logger="ivr.call"):
        result = CallSession(channel, flow, services_factory(), queues=channel.acd, observer=channel,
                             fallback_queue="support").run()
    assert result.outcome == "transferred" and result.transfer_target == "sip:alice@127.0.0.1:5071"
    [failed] = [e for e in channel.events if isinstance(e, ev.TransferFailed)]
    assert 5.0 <= failed.at < 7.0  # refused after the 5 s grace, not held until the caller gives up
    assert failed.target == "billing" and "no agent" in failed.error
    assert not any("number 1" in p for p in channel.prompts())  # no wait was promised in billing
    [error] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert channel.call_id in error and "billing" in error and "fallback queue support" in error


def test_a_caller_waiting_past_the_maximum_wait_ends_in_voicemail(services_factory, caplog, tmp_path) -> None:
    channel = QueueClockChannel(NO_OVERFLOW_QUEUES.replace("  support:", "    max_wait: 30\n  support:"),
                                max_seconds=200)
    channel.acd.set_agent_state("bob", "break", "meeting")  # billing is staffed but nobody is free
    flow = ScriptedFlow([fa.Transfer(queue="billing")])
    with caplog.at_level("ERROR", logger="ivr.call"):
        result = CallSession(channel, flow, services_factory(), queues=channel.acd, observer=channel,
                             fallback_queue="support", config=SessionConfig(recordings_dir=str(tmp_path))).run()
    assert result.outcome == "voicemail"
    failures = [(e.at, e.target) for e in channel.events if isinstance(e, ev.TransferFailed)]
    assert [target for _, target in failures] == ["billing", "support"]  # then nobody in support either
    assert 30.0 <= failures[0][0] < 32.0
    assert any("number 1" in p for p in channel.prompts()[:1])  # billing announced while the caller waited
    assert "leave a message" in " ".join(channel.prompts())
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 2
