"""Call recording and voicemail: mixed, paused around card numbers, sealed at rest, linked to the call."""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ivr.call import CallSession, SessionConfig
from ivr.call.taping import RecordingPolicy
from ivr.events import ControlEvent
from ivr.flow import actions as fa
from ivr.replay.channel import ReplayChannel
from ivr.replay.scenario import CallerStep
from ivr.services import SpeechServices
from ivr.store import open_store
from ivr.store.crypto import DataKeyError, Sealer
from ivr.store.sealed_audio import AudioVault, is_sealed_audio, read_sealed_audio
from ivr.store.store import Store
from ivr.testing.fakes import FakeAsr, FakeTts

RATE = 8000


def tone(*freqs: float, seconds: float = 1.0, amplitude: int = 6000) -> bytes:
    """A tone (a DTMF key is two of them) as PCM16."""
    t = np.arange(int(RATE * seconds)) / RATE
    wave_ = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)
    return (wave_ * amplitude).astype("<i2").tobytes()


def level(pcm: bytes, freq: float) -> float:
    """How strongly ``freq`` sounds in ``pcm`` (amplitude, averaged over the whole recording)."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    t = np.arange(len(x)) / RATE
    return float(abs(np.sum(x * np.exp(-2j * np.pi * freq * t))) / len(x))


class ScriptedFlow:
    """Answers each event with the next list of actions."""

    def __init__(self, start: list[fa.FlowAction], replies: list[list[fa.FlowAction]]) -> None:
        self._start, self._replies = start, list(replies)
        self.finished = False

    def start(self) -> list[fa.FlowAction]:
        return self._start

    def handle(self, event: ControlEvent) -> list[fa.FlowAction]:
        return self._replies.pop(0) if self._replies else []

    def context(self) -> dict[str, Any]:
        return {}

    def resume_at(self, node: str) -> list[fa.FlowAction]:
        return []


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path / "ivr.db")
    yield s
    s.close()


@pytest.fixture
def services() -> Iterator[SpeechServices]:
    s = SpeechServices(asr=FakeAsr(), tts=FakeTts())
    yield s
    s.shutdown()


def _keys(**kw: Any) -> fa.Listen:
    return fa.Listen(speech=False, dtmf=True, no_input_timeout=3.0, **kw)


def test_a_recorded_call_holds_both_sides_but_nothing_of_a_card_answer_or_a_paused_span(
        store: Store, services: SpeechServices, tmp_path: Path) -> None:
    card_key = (770.0, 1336.0)  # the in-band tones of key 5
    flow = ScriptedFlow(
        [fa.Say("Hello"), _keys()],
        [[fa.Say("Your card number please"), _keys(sensitive="card")],
         [fa.RecordingControl(pause=True), fa.Say("Paused"), _keys()],
         [fa.RecordingControl(pause=False), fa.Say("Resumed"), _keys()],
         [fa.Hangup()]],
    )
    audio = {"hello": tone(440), "card": tone(*card_key), "paused": tone(1000), "resumed": tone(2000)}
    channel = ReplayChannel([CallerStep(line=n, audio=name) for n, name in enumerate(audio, 1)], audio, RATE,
                            max_seconds=60)
    bot_audio = tone(3000, seconds=0.5)

    class Tts(FakeTts):
        def synthesize(self, text: str, sample_rate: int) -> bytes:
            return bot_audio if text == "Hello" else super().synthesize(text, sample_rate)

    talking = SpeechServices(asr=FakeAsr(), tts=Tts())
    vault = AudioVault(tmp_path / "rec", store.sealer)
    try:
        CallSession(channel, flow, talking, store=store, observer=channel, config=SessionConfig(vault=vault),
                    recording=RecordingPolicy("This call may be recorded.")).run()
    finally:
        talking.shutdown()
    (row,) = store.get_call(channel.call_id)["recordings"]  # type: ignore[index]
    assert row["kind"] == "call" and row["duration"] > 5
    pcm, rate = read_sealed_audio(row["path"], store.sealer)
    assert rate == RATE and abs(len(pcm) / 2 / RATE - row["duration"]) < 0.05
    assert level(pcm, 440) > 100 and level(pcm, 2000) > 100  # the caller, before and after
    assert level(pcm, 3000) > 100  # the bot's prompt, mixed in
    for freq in (*card_key, 1000):  # the card answer's tones, the span the flow paused
        assert level(pcm, freq) < 2, freq
    assert level(channel.caller_audio, 770) > 100  # the caller did key it in
    assert "This call may be recorded." in [e for e in channel.log[0].prompts_before]


def test_the_announcement_plays_before_recording_starts(store: Store, services: SpeechServices,
                                                        tmp_path: Path) -> None:
    class Tts(FakeTts):
        def synthesize(self, text: str, sample_rate: int) -> bytes:
            return tone(3000, seconds=1.0) if "recorded" in text else super().synthesize(text, sample_rate)

    talking = SpeechServices(asr=FakeAsr(), tts=Tts())
    channel = ReplayChannel([], {}, RATE, max_seconds=60)
    try:
        CallSession(channel, ScriptedFlow([fa.Say("Hi"), fa.Hangup()], []), talking, store=store,
                    config=SessionConfig(vault=AudioVault(tmp_path, store.sealer)),
                    recording=RecordingPolicy("This call is recorded.")).run()
    finally:
        talking.shutdown()
    (row,) = store.get_call(channel.call_id)["recordings"]  # type: ignore[index]
    pcm, _ = read_sealed_audio(row["path"], store.sealer)
    assert level(pcm, 3000) < 2  # the announcement itself is not in the recording
    assert level(channel.bot_audio, 3000) > 100  # but the caller heard it


QUEUES = """
version: 1
agents:
  alice: {uri: "sip:alice@127.0.0.1:5071"}
queues:
  billing:
    overflow: {voicemail: billing, when: [no_agents]}
  support:
    record: {announce: "Calls with our agents are recorded."}
"""


def _acd(auto: dict[str, Any] | None = None) -> Any:
    from ivr.queue.config import parse_queues
    from ivr.queue.engine import Acd
    from ivr.testing.fakes import FakeConnector

    return Acd(parse_queues(QUEUES), FakeConnector(auto=auto or {}))


def test_a_queue_that_records_announces_it_on_joining_and_records_from_the_agents_answer(
        store: Store, services: SpeechServices, tmp_path: Path) -> None:
    from ivr.queue.connector import OfferResult

    acd = _acd({"alice": OfferResult.ANSWERED})
    acd.set_agent_state("alice", "available")
    channel = ReplayChannel([], {}, RATE, max_seconds=4)  # the caller talks to alice, then hangs up
    CallSession(channel, ScriptedFlow([fa.Transfer(queue="support")], []), services, store=store, queues=acd,
                observer=channel, config=SessionConfig(vault=AudioVault(tmp_path, store.sealer))).run()
    assert "Calls with our agents are recorded." in channel.prompts_since_last_step
    (row,) = store.get_call(channel.call_id)["recordings"]  # type: ignore[index]
    assert (row["kind"], row["queue"]) == ("call", "support") and 2 < row["duration"] <= 4


def test_voicemail_is_sealed_and_listed_for_its_queue(store: Store, services: SpeechServices,
                                                      tmp_path: Path) -> None:
    channel = ReplayChannel([CallerStep(line=1, audio="msg")], {"msg": tone(440, seconds=1.5)}, RATE,
                            max_seconds=60)
    flow = ScriptedFlow([fa.Transfer(queue="billing")], [])
    CallSession(channel, flow, services, store=store, observer=channel, queues=_acd(),
                config=SessionConfig(vault=AudioVault(tmp_path / "rec", store.sealer))).run()
    (mail,) = store.list_voicemails()
    assert mail["call_id"] == channel.call_id and mail["queue"] == "billing" and mail["caller"] == "+15550100"
    assert is_sealed_audio(mail["path"]) and Path(mail["path"]).stat().st_mode & 0o777 == 0o600
    pcm, _ = read_sealed_audio(mail["path"], store.sealer)
    assert level(pcm, 440) > 100
    assert store.list_voicemails({"support"}) == []


def test_a_sealed_file_is_not_a_readable_wav_and_decrypts_to_one(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    sealer = Sealer(Fernet.generate_key())
    vault = AudioVault(tmp_path, sealer)
    writer = vault.new_file("c1", "call", RATE)
    pcm = tone(440, seconds=12.0)  # more than two chunks
    writer.write(pcm[:1000])
    writer.write(pcm[1000:])
    writer.close()
    raw = writer.path.read_bytes()
    assert not raw.startswith(b"RIFF") and pcm[:64] not in raw and pcm[8000:8064] not in raw
    with pytest.raises(wave.Error):
        wave.open(str(writer.path)).close()
    out = tmp_path / "out.wav"
    out.write_bytes(vault.wav(writer.path))
    with wave.open(str(out)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (RATE, 1, 2)
        assert wav.readframes(wav.getnframes()) == pcm
    with pytest.raises(DataKeyError, match="IVR_DATA_KEY"):
        AudioVault(tmp_path, Sealer(Fernet.generate_key())).wav(writer.path)


def test_erasing_a_call_deletes_its_sealed_recordings(store: Store, tmp_path: Path) -> None:
    from ivr.store.retention import erase_call

    vault = AudioVault(tmp_path, store.sealer)
    writer = vault.new_file("c1", "call", RATE)
    writer.write(tone(440))
    writer.close()
    store.start_call("c1", "+15550100", "", "f", 1000.0)
    store.add_recording("c1", 1001.0, "call", str(writer.path), writer.duration)
    assert erase_call(store, "c1", everything=False)
    assert not writer.path.exists()
    assert store.get_call("c1")["recordings"] == []  # type: ignore[index]


PAY_FLOW = """
version: 1
name: pay
start: hello
recording: {announce: "This call may be recorded."}
nodes:
  hello:
    say: "Hello."
    next: off
  off:
    recording: pause
    next: card
  card:
    ask: {prompt: "Your card number?", slot: digits, max_digits: 16, sensitive: card}
    next: on
  on:
    recording: resume
    next: bye
  bye:
    hangup: {say: "Thanks."}
"""


def test_a_flow_turns_recording_on_and_pauses_it_with_recording_nodes(tmp_path: Path) -> None:
    from ivr.flow.interpreter import CallInterpreter
    from ivr.flow.loader import load_flow

    path = tmp_path / "pay.yaml"
    path.write_text(PAY_FLOW)
    flow = load_flow(path, classifier_factory=None)
    assert flow.recording is not None and flow.recording.announce == "This call may be recorded."
    actions = CallInterpreter(flow).start()
    assert fa.RecordingControl(pause=True) in actions
    assert actions.index(fa.RecordingControl(pause=True)) < next(
        i for i, a in enumerate(actions) if isinstance(a, fa.Listen))


def test_a_wrong_recording_command_says_what_is_allowed(tmp_path: Path) -> None:
    from ivr.errors import FlowError
    from ivr.flow.loader import load_flow

    path = tmp_path / "pay.yaml"
    path.write_text(PAY_FLOW.replace("recording: pause", "recording: stop"))
    with pytest.raises(FlowError, match=r"pay.yaml:11:16: 'recording' must be 'pause' or 'resume', got 'stop'"):
        load_flow(path, classifier_factory=None)
