"""``/metrics`` for the ACD: waiting callers, longest wait, agents by state, service level, opening hours."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ivr.metrics import Metrics
from ivr.queue import Acd, parse_queues
from ivr.store import open_store
from ivr.testing.fakes import FakeClock, FakeConnector

QUEUES = """
service_level_seconds: 20
agents:
  ann: {uri: "sip:ann@127.0.0.1", skills: [en]}
  bob: {uri: "sip:bob@127.0.0.1", skills: [en, es]}
  cid: {uri: "sip:cid@127.0.0.1", skills: [es]}
queues:
  support:
    skills: [en]
    wrap_up: 0
  spanish:
    skills: [es]
    hours: {timezone: UTC, weekly: {mon: "08:00-09:00"}}
"""


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the text exposition, by name and labels."""
    text = metrics.render().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_show_waiting_callers_agents_and_service_level(tmp_path: Path) -> None:
    clock = FakeClock(1767690000.0)  # Tuesday 2026-01-06 09:00 UTC: the spanish queue is closed
    connector = FakeConnector()
    store = open_store(tmp_path / "ivr.db")
    config = parse_queues(QUEUES)
    acd = Acd(config, connector, store, clock)
    metrics = Metrics()
    metrics.watch_queues(store, config, clock)
    acd.set_agent_state("bob", "break", "lunch")
    acd.set_agent_state("ann", "available")
    acd.enqueue("c1", "support")
    clock.advance(5)
    connector.answer("ann")  # answered after 5 s: within the service level
    clock.advance(1)
    acd.enqueue("c2", "support")
    clock.advance(10)
    acd.enqueue("c3", "support")
    clock.advance(20)
    acd.abandon("c3")  # abandoned after 20 s
    clock.advance(4)

    samples = scrape(metrics)
    assert samples[("ivr_queue_waiting", (("queue", "support"),))] == 1
    assert samples[("ivr_queue_longest_wait_seconds", (("queue", "support"),))] == 34
    assert samples[("ivr_queue_waiting", (("queue", "spanish"),))] == 0
    assert samples[("ivr_queue_longest_wait_seconds", (("queue", "spanish"),))] == 0
    assert samples[("ivr_agents", (("state", "on_call"),))] == 1
    assert samples[("ivr_agents", (("state", "break"),))] == 1
    assert samples[("ivr_agents", (("state", "offline"),))] == 1  # cid never logged in
    assert samples[("ivr_agents", (("state", "available"),))] == 0
    assert samples[("ivr_queue_agents", (("queue", "support"), ("state", "on_call")))] == 1
    assert samples[("ivr_queue_agents", (("queue", "spanish"), ("state", "break")))] == 1
    assert samples[("ivr_queue_agents", (("queue", "spanish"), ("state", "offline")))] == 1
    assert samples[("ivr_queue_service_level", (("queue", "support"),))] == 0.5  # 1 in time of 1 answered + 1 lost
    assert ("ivr_queue_service_level", (("queue", "spanish"),)) not in samples  # nobody answered or abandoned
    assert samples[("ivr_queue_open", (("queue", "support"),))] == 1
    assert samples[("ivr_queue_open", (("queue", "spanish"),))] == 0

    clock.advance(3600)  # the service level covers a rolling hour
    samples = scrape(metrics)
    assert ("ivr_queue_service_level", (("queue", "support"),)) not in samples
    assert samples[("ivr_queue_longest_wait_seconds", (("queue", "support"),))] == 3634


CALLBACK_QUEUES = """
agents:
  ann: {uri: "sip:ann@127.0.0.1"}
queues:
  support:
    wrap_up: 0
    callback: {offer_after: 60, key: "1"}
"""


def test_callers_waiting_for_a_callback_are_counted_with_their_wait(tmp_path: Path) -> None:
    from ivr.queue import OfferResult
    from ivr.queue import callbacks as cb
    from ivr.testing.fakes import FakeDialer

    clock = FakeClock(1767690000.0)
    connector, dialer = FakeConnector(), FakeDialer()
    store = open_store(tmp_path / "ivr.db")
    config = parse_queues(CALLBACK_QUEUES)
    acd = Acd(config, connector, store, clock, dialer=dialer)
    metrics = Metrics()
    metrics.watch_queues(store, config, clock)
    acd.set_agent_state("ann", "available")
    acd.enqueue("c0", "support", context={"caller": "sip:zed@127.0.0.1"})
    connector.report(connector.offers[-1].offer_id, OfferResult.ANSWERED)  # ann is busy with c0
    acd.enqueue("c1", "support", context={"caller": "sip:amy@127.0.0.1"})
    clock.advance(100)
    acd.enqueue("c2", "support", context={"caller": "sip:bea@127.0.0.1"})
    assert acd.request_callback("c1", "sip:amy@127.0.0.1")  # amy hangs up and keeps her place
    clock.advance(30)

    names = ("ivr_queue_waiting", "ivr_queue_callbacks_waiting", "ivr_queue_longest_wait_seconds",
             "ivr_queue_callbacks_longest_wait_seconds")

    def gauges() -> list[float]:
        samples = scrape(metrics)
        return [samples[(name, (("queue", "support"),))] for name in names]

    assert gauges() == [1, 1, 130, 130]  # bea on the line 30 s; amy's place held 130 s since she joined
    acd.call_finished("c0")  # ann is reserved and amy is being called back: still waiting for an agent
    assert dialer.attempts[-1].call_id == "c1"
    assert gauges() == [1, 1, 130, 130]
    dialer.report(cb.ANSWERED)  # amy and ann are joined
    assert gauges() == [1, 0, 30, 0]
    acd.stop()
