"""ACD scenarios with a fake connector and a fake clock, persisted in a real SQLite store."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ivr.errors import ConfigError
from ivr.queue import (
    Acd,
    Announce,
    Connected,
    OfferResult,
    Overflowed,
    QueueError,
    Refused,
    load_queues,
    parse_queues,
)
from ivr.queue.connector import Offer, ReportOffer
from ivr.store import Store, open_store
from ivr.testing.fakes import FakeClock, FakeConnector

ROOT = Path(__file__).resolve().parents[1]

BASIC = """
max_missed_offers: 2
agents:
  ann: {uri: "sip:ann@127.0.0.1", skills: [en]}
  bob: {uri: "sip:bob@127.0.0.1", skills: [en, es]}
  cid: {uri: "sip:cid@127.0.0.1", skills: [en]}
queues:
  support:
    skills: [en]
    ring_timeout: 10
    wrap_up: 5
    priority: {variable: vip, values: {true: 10}}
    announce: {every: 30, text: "You are number {position}. Wait {wait_text}."}
  spanish:
    skills: [es]
    ring_timeout: 10
  all:
    strategy: ring-all
    ring_timeout: 10
  rr:
    strategy: round-robin
    wrap_up: 0
  short:
    max_wait: 60
    overflow: {queue: support, when: [max_wait]}
  lonely:
    agents: [cid]
    overflow: {voicemail: box1, when: [no_agents]}
"""


class Rig:
    def __init__(self, tmp_path: Path, text: str = BASIC) -> None:
        self.clock = FakeClock()
        self.connector = FakeConnector()
        self.store: Store = open_store(tmp_path / "ivr.db")
        self.acd = Acd(parse_queues(text), self.connector, self.store, self.clock)

    def login(self, *names: str) -> None:
        for name in names:
            self.acd.set_agent_state(name, "available")
            self.clock.advance(1)  # distinct idle times: earlier login = longer idle

    def later(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.acd.tick()

    def agent(self, name: str) -> dict[str, object]:
        return dict(self.acd.snapshot()["agents"][name])


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_vip_caller_is_offered_first_and_fifo_otherwise(rig: Rig) -> None:
    rig.acd.set_agent_state("ann", "break", "lunch")  # logged in: the callers wait for her
    rig.acd.enqueue("c1", "support", context={"variables": {"vip": False}})
    rig.clock.advance(1)
    rig.acd.enqueue("c2", "support")
    rig.clock.advance(1)
    ticket = rig.acd.enqueue("c3", "support", context={"variables": {"vip": True}})
    assert ticket.priority == 10 and ticket.position == 1
    assert [e["call_id"] for e in rig.acd.snapshot()["queues"]["support"]] == ["c3", "c1", "c2"]
    rig.login("ann")
    assert [(o.call_id, o.agent) for o in rig.connector.ringing()] == [("c3", "ann")]
    rig.connector.answer("ann")
    assert rig.acd.poll("c3") == [Announce("You are number 1. Wait about 3 minutes."),
                                  Connected("ann", "sip:ann@127.0.0.1", "bridged")]  # fmt: skip
    rig.login("cid")
    assert [o.call_id for o in rig.connector.ringing()] == ["c1"]


def test_only_agents_with_the_skills_are_offered(rig: Rig) -> None:
    rig.login("ann", "cid", "bob")
    rig.acd.enqueue("c1", "spanish")
    assert rig.connector.ringing_agents() == ["bob"]


def test_ring_no_answer_moves_on_and_counts_a_miss(rig: Rig) -> None:
    rig.login("ann", "bob")
    rig.acd.enqueue("c1", "support")
    assert rig.connector.ringing_agents() == ["ann"]  # longest idle
    rig.later(9)
    assert rig.connector.ringing_agents() == ["ann"]
    rig.later(1)
    assert rig.connector.ringing_agents() == ["bob"]
    assert rig.connector.cancelled == [rig.connector.offers[0].offer_id]
    assert rig.agent("ann")["state"] == "available" and rig.agent("ann")["missed"] == 1
    offer = rig.connector.answer("bob")
    assert offer.headers["X-IVR-Call-Id"] == "c1" and offer.headers["X-IVR-Queue"] == "support"
    entry = rig.store.get_call("c1")["queue_entries"][0]  # type: ignore[index]
    assert entry["state"] == "connected" and entry["agent"] == "bob"


def test_agent_missing_n_offers_goes_on_break_with_reason(rig: Rig) -> None:
    rig.login("ann")
    rig.acd.enqueue("c1", "support")
    rig.connector.reject("ann", OfferResult.NO_ANSWER)
    assert rig.connector.ringing_agents() == ["ann"]  # the only agent gets another chance
    rig.later(10)
    state = rig.agent("ann")
    assert state["state"] == "break" and "missed 2 offered calls" in str(state["reason"])
    assert rig.connector.ringing() == []
    assert rig.store.load_agent_states()["ann"]["reason"] == state["reason"]  # supervisors see why
    rig.acd.set_agent_state("ann", "available")
    assert rig.connector.ringing_agents() == ["ann"] and rig.agent("ann")["missed"] == 0


def test_agent_going_offline_mid_offer_passes_the_call_on(rig: Rig) -> None:
    rig.login("ann", "bob")
    rig.acd.enqueue("c1", "support")
    first = rig.connector.ringing()[0]
    rig.acd.set_agent_state("ann", "offline")
    assert first.offer_id in rig.connector.cancelled
    assert rig.connector.ringing_agents() == ["bob"]
    assert rig.agent("ann")["state"] == "offline" and rig.agent("ann")["missed"] == 0


def test_caller_hanging_up_while_waiting_is_counted_abandoned(rig: Rig) -> None:
    rig.login("ann")
    rig.acd.enqueue("c1", "support")
    rig.acd.enqueue("c2", "support")
    rig.later(12)  # ann missed c1 after 10 s; c1 offered again
    rig.acd.abandon("c2")
    rig.acd.abandon("c1")  # hangs up while ann's phone rings
    assert rig.connector.ringing() == [] and rig.agent("ann")["state"] == "available"
    states = {e["call_id"]: (e["state"], e["outcome"]) for e in rig.store.queue_entries_between(0, 2e9)}
    assert states == {"c1": ("abandoned", "abandoned"), "c2": ("abandoned", "abandoned")}
    assert rig.acd.snapshot()["queues"]["support"] == []


def test_max_wait_overflows_to_another_queue(rig: Rig) -> None:
    rig.acd.enqueue("c1", "short")
    rig.later(59)
    assert rig.acd.snapshot()["queues"]["short"][0]["call_id"] == "c1"
    rig.later(1)
    assert rig.acd.snapshot()["queues"]["short"] == []
    assert rig.acd.snapshot()["queues"]["support"][0]["call_id"] == "c1"
    rig.login("ann")
    rig.connector.answer("ann")
    assert Connected("ann", "sip:ann@127.0.0.1", "bridged") in rig.acd.poll("c1")


def test_no_agent_logged_in_overflows_to_voicemail_at_once(rig: Rig) -> None:
    ticket = rig.acd.enqueue("c1", "lonely")
    assert ticket.queue == "lonely"
    assert rig.acd.poll("c1") == [Overflowed("voicemail", "box1", "no_agents")]
    assert rig.acd.poll("c1") == []
    rig.login("cid")
    rig.acd.enqueue("c2", "lonely")
    assert rig.connector.ringing_agents() == ["cid"]


def test_ring_all_rings_everyone_and_first_answer_wins(rig: Rig) -> None:
    rig.login("ann", "bob", "cid")
    rig.acd.enqueue("c1", "all")
    assert sorted(rig.connector.ringing_agents()) == ["ann", "bob", "cid"]
    rig.connector.answer("bob")
    assert rig.connector.ringing() == []
    agents = rig.acd.snapshot()["agents"]
    assert (agents["bob"]["state"], agents["ann"]["state"], agents["ann"]["missed"]) == ("on_call", "available", 0)


def test_round_robin_rotates(rig: Rig) -> None:
    rig.login("cid", "bob", "ann")
    served = []
    for i in range(4):
        rig.acd.enqueue(f"c{i}", "rr")
        offer = rig.connector.ringing()[0]
        rig.connector.answer(offer.agent)
        rig.acd.call_finished(offer.call_id)  # wrap_up 0: available at once
        served.append(offer.agent)
    assert served == ["ann", "bob", "cid", "ann"]


def test_wrap_up_then_next_call(rig: Rig) -> None:
    rig.login("ann")
    rig.acd.enqueue("c1", "support")
    rig.acd.enqueue("c2", "support")
    rig.connector.answer("ann")
    rig.acd.call_finished("c1")
    assert rig.agent("ann")["state"] == "wrap_up" and rig.connector.ringing() == []
    rig.later(5)
    assert rig.connector.ringing_agents() == ["ann"] and rig.connector.ringing()[0].call_id == "c2"


def test_announcements_repeat_with_position(rig: Rig) -> None:
    rig.acd.set_agent_state("ann", "break", "lunch")
    rig.acd.enqueue("c1", "support")
    rig.acd.enqueue("c2", "support")
    assert rig.acd.poll("c2") == [Announce("You are number 2. Wait about 6 minutes.")]  # 2 x 180 s / 1 staffed
    rig.later(29)
    assert rig.acd.poll("c2") == []
    rig.acd.abandon("c1")
    rig.later(1)
    assert rig.acd.poll("c2") == [Announce("You are number 1. Wait about 3 minutes.")]


def test_agent_states_survive_a_restart_and_waiting_callers_resume(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.acd.set_agent_state("ann", "break", "training")
    rig.acd.enqueue("c1", "spanish")
    second = Acd(parse_queues(BASIC), rig.connector, open_store(tmp_path / "ivr.db"), rig.clock, resume_waiting=True)
    snap = second.snapshot()
    assert snap["agents"]["ann"]["state"] == "break" and snap["agents"]["ann"]["reason"] == "training"
    assert [e["call_id"] for e in snap["queues"]["spanish"]] == ["c1"]
    second.set_agent_state("bob", "available")
    assert rig.connector.ringing()[-1].agent == "bob"


def test_unknown_queue_and_state_are_clear_errors(rig: Rig) -> None:
    with pytest.raises(QueueError, match="unknown queue 'nope'"):
        rig.acd.enqueue("c1", "nope")
    with pytest.raises(QueueError, match="can be set"):
        rig.acd.set_agent_state("ann", "on_call")
    with pytest.raises(QueueError, match="unknown agent"):
        rig.acd.set_agent_state("zed", "available")


def test_context_headers_are_masked_and_ascii(rig: Rig) -> None:
    rig.login("ann")
    rig.acd.enqueue(
        "c1",
        "support",
        context={
            "caller": "+15550100",
            "intent": "billing",
            "confidence": 0.87,
            "slots": {"card": "4111 1111 1111 1234", "name": "Zoë\r\nX-Evil: 1"},
        },
    )
    headers = rig.connector.ringing()[0].headers
    assert headers["X-IVR-Caller"] == "+15550100" and headers["X-IVR-Intent"] == "billing"
    assert headers["X-IVR-Confidence"] == "0.87"
    assert "**** **** **** 1234" in headers["X-IVR-Slots"] and "4111" not in headers["X-IVR-Slots"]
    assert all(v.isascii() and "\n" not in v and "\r" not in v for v in headers.values())


def test_config_errors_have_positions(tmp_path: Path) -> None:
    path = tmp_path / "queues.yaml"
    path.write_text("agents:\n  ann: {uri: ann@x}\nqueues:\n  q:\n    strategy: fastest\n    overflow: {queue: nope}\n")
    with pytest.raises(ConfigError) as info:
        load_queues(path)
    lines = str(info.value).splitlines()
    assert lines[0].startswith(f"{path}:2:") and "needs a SIP URI" in lines[0]
    assert lines[1].startswith(f"{path}:5:15: strategy must be one of")
    assert "overflow queue 'nope' is not defined" in lines[2]
    with pytest.raises(ConfigError, match=r"x.yaml:1:\d+: YAML syntax error"):
        parse_queues("queues: [unclosed", "x.yaml")


def test_shipped_example_config_loads() -> None:
    config = load_queues(ROOT / "config" / "queues.yaml")
    assert set(config.queues) == {"support", "orders", "spanish", "billing", "support_ko"}


def test_queue_benchmark_runs_small(tmp_path: Path) -> None:
    from ivr.bench.queue import bench_queue_view_api, bench_transfer_to_offer

    offer = bench_transfer_to_offer(open_store(tmp_path / "a.db"), callers=10, queues=2)
    assert offer["callers"] == 10 and offer["median_ms"] > 0
    view = bench_queue_view_api(open_store(tmp_path / "b.db"), stored_calls=300, requests=3)
    assert view["stored_calls"] == 350 and view["waiting"] == 50


def test_break_asked_during_a_call_starts_after_wrap_up(rig: Rig) -> None:
    rig.login("ann")
    rig.acd.enqueue("c1", "support")
    rig.connector.answer("ann")
    rig.acd.set_agent_state("ann", "break", "lunch")
    assert rig.agent("ann")["state"] == "on_call"
    rig.acd.call_finished("c1")
    rig.acd.enqueue("c2", "support")
    rig.later(5)
    assert (rig.agent("ann")["state"], rig.agent("ann")["reason"]) == ("break", "lunch")
    assert rig.connector.ringing() == []
    rig.acd.set_agent_state("ann", "available")
    rig.connector.answer("ann")
    rig.acd.call_finished("c2")
    rig.later(5)
    assert rig.agent("ann")["state"] == "available"  # no stale break after the next call


def test_no_wait_is_quoted_while_an_agents_phone_rings_for_the_caller(rig: Rig) -> None:
    rig.login("ann")
    ticket = rig.acd.enqueue("c1", "support")
    assert rig.connector.ringing_agents() == ["ann"]
    assert ticket.estimated_wait == 0.0
    [announce] = rig.acd.poll("c1")
    assert announce == Announce("You are number 1. Wait less than a minute.") and announce.wait == 0.0
    rig.acd.enqueue("c2", "support")  # next in line: one handle time (180 s), not two
    assert rig.acd.poll("c2") == [Announce("You are number 2. Wait about 3 minutes.")]


class _SlowStore:
    """The real store behind writes that take 0.3 s each (a busy database); records what was written."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes: list[str] = []
        self.writing = threading.Event()

    def __getattr__(self, name: str) -> object:
        method = getattr(self.store, name)
        if name not in ("add_queue_entry", "update_queue_entry", "save_agent_state"):
            return method

        def slow(*args: object, **fields: object) -> object:
            self.writing.set()
            time.sleep(0.3)
            self.writes.append(f"{name} {fields.get('state') or args[1]}")
            return method(*args, **fields)

        return slow


class _LoggingConnector(FakeConnector):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def offer(self, offer: Offer, report: ReportOffer) -> None:
        self.log.append(f"offer {offer.agent}")
        super().offer(offer, report)


def test_the_acd_lock_is_never_held_across_store_writes_or_offers(tmp_path: Path) -> None:
    slow = _SlowStore(open_store(tmp_path / "ivr.db"))
    connector = _LoggingConnector(slow.writes)
    acd = Acd(parse_queues(BASIC), connector, slow, FakeClock())  # type: ignore[arg-type]
    slow.writes.clear()
    busy = threading.Thread(target=lambda: (acd.set_agent_state("ann", "available"), acd.enqueue("c1", "support")))
    busy.start()
    assert slow.writing.wait(2)
    started = time.perf_counter()
    acd.snapshot()
    acd.poll("c2")
    assert time.perf_counter() - started < 0.05  # the console and other calls' sessions are not kept waiting
    busy.join(10)
    # the writes and the offer happen in the order of the changes
    assert slow.writes == ["save_agent_state available", "add_queue_entry support", "update_queue_entry offering",
                           "save_agent_state ringing", "offer ann"]
    assert connector.ringing_agents() == ["ann"]
    assert slow.store.open_queue_entries()[0]["state"] == "offering"


def test_a_cluster_leader_offers_before_its_bookkeeping_but_never_before_a_cancel(tmp_path: Path) -> None:
    log: list[str] = []

    class Logging(_LoggingConnector):
        def cancel(self, offer_id: str) -> None:
            log.append(f"cancel {offer_id.split('#')[0]}")
            super().cancel(offer_id)

    slow = _SlowStore(open_store(tmp_path / "ivr.db"))
    slow.writes = log
    acd = Acd(parse_queues(BASIC), Logging(log), slow, FakeClock(), offers_first=True)  # type: ignore[arg-type]
    acd.set_agent_state("ann", "available")
    log.clear()
    acd.enqueue("c1", "support")
    assert log[0] == "offer ann" and "add_queue_entry support" in log  # the writes follow the offer
    acd.enqueue("c2", "support")  # waits: ann's phone rings for c1
    log.clear()
    acd.abandon("c1")  # one change: c1's offer cancelled, c2 offered to ann
    assert log.index("cancel c1") < log.index("offer ann")  # ann's phone stops ringing before it rings again


# ------------------------------------------------------------------ a caller is never held forever (issue 11)

NEVER_FOREVER = """
agents:
  ann: {uri: "sip:ann@127.0.0.1", skills: [en]}
  bob: {uri: "sip:bob@127.0.0.1", skills: [en, es]}
queues:
  plain:                      # no overflow, no max_wait: the defaults hold
    skills: [en]
    announce: {every: 30, text: "You are number {position}. Wait {wait_text}."}
  patient:
    skills: [en]
    no_agents_grace: 30
    max_wait: 120
    handle_time: 600
    announce: {every: 30, text: "You are number {position}. Wait {wait_text}."}
  spanish:
    skills: [es]
  night:                      # overflow only when nobody is logged in
    skills: [en]
    overflow: {node: goodbye, when: [no_agents]}
  mailbox:                    # overflow covers max_wait, but the queue sets none
    skills: [en]
    overflow: {voicemail: box1}
"""


@pytest.fixture
def never(tmp_path: Path) -> Rig:
    return Rig(tmp_path, NEVER_FOREVER)


def _state(rig: Rig, call_id: str) -> tuple[str, str]:
    [entry] = [e for e in rig.store.queue_entries_between(0, 2e9) if e["call_id"] == call_id]
    return entry["state"], entry["outcome"]


def test_queue_without_overflow_gives_the_call_back_when_nobody_is_logged_in(never: Rig) -> None:
    never.acd.enqueue("c1", "plain")
    never.later(4.9)
    assert never.acd.poll("c1") == []  # no wait is promised to a caller nobody can take
    assert [e["call_id"] for e in never.acd.snapshot()["queues"]["plain"]] == ["c1"]
    never.later(0.1)  # default no_agents_grace: 5 s
    assert never.acd.poll("c1") == [Refused("plain", "no_agents", "no agent who can take its calls is logged in")]
    assert never.acd.snapshot()["queues"]["plain"] == []
    assert _state(never, "c1") == ("refused", "refused:no_agents")


def test_an_agent_logging_in_during_the_grace_takes_the_call(never: Rig) -> None:
    never.acd.enqueue("c1", "plain")
    never.later(3)
    never.login("ann")
    never.later(10)
    assert never.connector.ringing_agents() == ["ann"]
    assert never.acd.poll("c1") == [Announce("You are number 1. Wait less than a minute.")]  # ann's phone rings for it
    never.connector.answer("ann")
    assert never.acd.poll("c1") == [Connected("ann", "sip:ann@127.0.0.1", "bridged")]


def test_the_last_agent_logging_out_starts_the_grace(never: Rig) -> None:
    never.acd.set_agent_state("ann", "break", "lunch")
    never.acd.enqueue("c1", "plain")
    never.later(100)
    assert [e["call_id"] for e in never.acd.snapshot()["queues"]["plain"]] == ["c1"]
    never.acd.set_agent_state("ann", "offline")
    never.later(4)
    assert [e["call_id"] for e in never.acd.snapshot()["queues"]["plain"]] == ["c1"]
    never.later(1)
    assert Refused("plain", "no_agents", "no agent who can take its calls is logged in") in never.acd.poll("c1")


def test_agents_without_the_skills_do_not_count(never: Rig) -> None:
    never.login("ann")  # english only
    never.acd.enqueue("c1", "spanish")
    never.later(5)
    assert never.acd.poll("c1") == [Refused("spanish", "no_agents", "no agent who can take its calls is logged in")]
    assert never.connector.offers == []


def test_no_agents_grace_is_configurable(never: Rig) -> None:
    assert never.acd.config.queues["plain"].no_agents_grace == 5.0
    never.acd.enqueue("c1", "patient")
    never.later(29)
    assert never.acd.poll("c1") == []
    never.later(1)
    assert [u.reason for u in never.acd.poll("c1") if isinstance(u, Refused)] == ["no_agents"]


def test_default_max_wait_gives_the_call_back_after_ten_minutes(never: Rig) -> None:
    assert never.acd.config.queues["plain"].max_wait == 600.0
    never.acd.set_agent_state("ann", "break", "meeting")  # logged in, never free
    never.acd.enqueue("c1", "plain")
    never.later(599)
    assert not [u for u in never.acd.poll("c1") if isinstance(u, Refused)]
    never.later(1)
    assert never.acd.poll("c1") == [
        Refused("plain", "max_wait", "nobody took the call within the maximum wait of 600 s")
    ]
    assert _state(never, "c1") == ("refused", "refused:max_wait")


def test_max_wait_is_configurable_per_queue(never: Rig) -> None:
    never.acd.set_agent_state("ann", "break", "meeting")
    never.acd.enqueue("c1", "patient")
    never.later(119)
    assert never.acd.snapshot()["queues"]["patient"][0]["call_id"] == "c1"
    never.later(1)
    assert [u.reason for u in never.acd.poll("c1") if isinstance(u, Refused)] == ["max_wait"]


def test_offers_nobody_answers_do_not_stretch_the_maximum_wait(tmp_path: Path) -> None:
    rig = Rig(tmp_path, NEVER_FOREVER.replace("agents:", "max_missed_offers: 100\nagents:", 1))
    rig.login("ann", "bob")  # logged in, free, and never answering this caller
    rig.acd.enqueue("c1", "patient")  # max_wait 120 s, ring timeout 15 s: always ringing someone
    for _ in range(8):
        rig.later(15)
    assert [u.reason for u in rig.acd.poll("c1") if isinstance(u, Refused)] == ["max_wait"]
    assert rig.connector.ringing() == []


def test_overflow_that_does_not_cover_the_wait_still_ends_at_max_wait(never: Rig) -> None:
    never.acd.set_agent_state("ann", "break", "meeting")
    never.acd.enqueue("c1", "night")
    never.later(600)
    assert [u.reason for u in never.acd.poll("c1") if isinstance(u, Refused)] == ["max_wait"]


def test_overflow_on_max_wait_uses_the_default_max_wait(never: Rig) -> None:
    never.acd.set_agent_state("ann", "break", "meeting")
    never.acd.enqueue("c1", "mailbox")
    never.later(600)
    assert never.acd.poll("c1") == [Overflowed("voicemail", "box1", "max_wait")]


def test_announced_wait_never_goes_past_the_maximum_wait(never: Rig) -> None:
    never.acd.set_agent_state("ann", "break", "meeting")
    ticket = never.acd.enqueue("c1", "patient")  # handle_time 600 s, but max_wait 120 s
    assert ticket.estimated_wait == 120.0
    assert never.acd.poll("c1") == [Announce("You are number 1. Wait about 2 minutes.")]
    never.later(90)
    assert never.acd.poll("c1")[-1] == Announce("You are number 1. Wait less than a minute.")


def test_no_agents_grace_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no_agents_grace must be a number of seconds >= 0"):
        parse_queues("agents: {}\nqueues:\n  q: {no_agents_grace: -1}\n")
