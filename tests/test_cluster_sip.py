"""A cluster over real SIP: three ``ivr serve --node`` processes sharing one PostgreSQL, one Kamailio in front
(configured by ``ivr edge config``), SIPp and pjsua2 callers, pjsua2 agent phones (``ivr.testing.cluster``).

- 30 callers spread over the nodes, none failed;
- an agent logged in through node a's API is offered a caller that node b or c answered;
- kill -9 of a node with calls on every node: the other nodes keep theirs, the dead node's records are closed
  ``interrupted``, Kamailio stops routing to it and new calls all succeed; restarted, it takes calls again.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ivr.bench.sipp import SippResult, run_sipp_callers
from ivr.sip.edge import find_kamailio
from ivr.testing.cluster import SiteCluster
from ivr.testing.postgres import TempPostgres
from ivr.testing.sip_agent import AgentPhone
from ivr.testing.sip_caller import place_call
from ivr.testing.waiting import wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(find_kamailio() is None, reason="needs Kamailio (apt-get install kamailio)")]

CALLERS = "127.0.0.61"
MORE_CALLERS = "127.0.0.63"  # a second SIPp at the same time needs its own address (its media port is fixed)


@pytest.fixture(scope="module")
def phones() -> Iterator[dict[str, AgentPhone]]:
    started = {name: AgentPhone() for name in ("ann", "bob")}
    yield started
    for phone in started.values():
        phone.close()


@pytest.fixture(scope="module")
def cluster(postgres_server: TempPostgres, phones: dict[str, AgentPhone],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteCluster]:
    site = SiteCluster(postgres_server.new_database(), {name: p.uri(name) for name, p in phones.items()},
                       work=tmp_path_factory.mktemp("cluster"))
    site.start()
    yield site
    site.stop()


@pytest.fixture(scope="module")
def store(cluster: SiteCluster) -> Any:
    return cluster.open_store()


def calls_since(store: Any, since: float, number: str | None = None) -> list[dict[str, Any]]:
    calls = store.list_calls(since=since, limit=1000)
    return [c for c in calls if number is None or c["called"] == number]


def all_ended(store: Any, since: float, count: int) -> bool:
    calls = calls_since(store, since)
    return len(calls) >= count and all(c["ended_at"] for c in calls)


def sipp(cluster: SiteCluster, work: Path, calls: int, seconds: float, bind: str = CALLERS,
         stagger: float = 0.2) -> SippResult:
    return run_sipp_callers(f"127.0.0.1:{cluster.sip_port}", "100", f"wait {seconds}", calls, stagger, work, bind,
                            timeout=seconds + 60)


def test_thirty_calls_spread_over_the_nodes_none_failed(cluster: SiteCluster, store: Any, tmp_path: Path) -> None:
    since = time.time()
    result = sipp(cluster, tmp_path, 30, 3, stagger=0.15)
    assert (result.successful, result.failed) == (30, 0), result.errors
    assert wait_for(lambda: all_ended(store, since, 30), 15)
    calls = calls_since(store, since)
    per_node = Counter(c["node"] for c in calls)
    assert len(calls) == 30 and set(per_node) == {"a", "b", "c"}, per_node
    assert min(per_node.values()) >= 5, per_node  # Kamailio spreads them over every node's workers
    assert {c["outcome"] for c in calls} == {"abandoned"}  # each waited in the hold queue until it hung up


def test_agent_logged_in_on_one_node_is_offered_a_call_of_another(cluster: SiteCluster, store: Any,
                                                                   phones: dict[str, AgentPhone]) -> None:
    from ivr.web.auth import add_user, new_token

    add_user(store, "ann", "ann-password", "agent")
    token = new_token(store, "ann", "cluster test")
    api = f"http://127.0.0.1:{cluster.nodes['a'].web_port}/api/agents/ann/state"
    ann = phones["ann"]
    ann.clear()
    ann.set_mode("answer", after=0.3, hangup_after=1.0)
    reply = requests.post(api, json={"state": "available"}, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert reply.status_code == 200 and reply.json()["state"] == "available", reply.text
    try:
        for attempt in range(1, 6):  # until Kamailio hands an "agent" call to a node other than a
            since = time.time()
            result = place_call(cluster.uri("agent"), "wait 5", timeout=30)
            assert result.connected, result
            incoming = ann.wait_for("incoming", timeout=10, count=attempt)
            assert incoming is not None, f"ann was not offered call {attempt}"
            assert wait_for(lambda: all_ended(store, since, 1), 10)  # noqa: B023
            [call] = calls_since(store, since, "agent")
            assert incoming["headers"]["X-IVR-Call-Id"] == call["id"]
            assert call["outcome"] == "transferred" and call["agent"] == "ann", call
            if call["node"] != "a":
                break
            assert wait_for(lambda: ann.seen("ended") and len(ann.seen("ended")) >= attempt, 10)  # noqa: B023
        assert call["node"] in ("b", "c"), "every call landed on node a"
    finally:
        requests.post(api, json={"state": "offline"}, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_killed_node_loses_only_its_calls_and_rejoins_after_a_restart(cluster: SiteCluster, store: Any,
                                                                      tmp_path: Path) -> None:
    since = time.time()
    first: list[SippResult] = []
    load = threading.Thread(target=lambda: first.append(sipp(cluster, tmp_path / "first", 9, 20, stagger=0.3)))
    load.start()

    def open_on_every_node() -> bool:  # and every caller waiting in the queue
        calls = calls_since(store, since)
        return (len(calls) == 9 and {c["node"] for c in calls if not c["ended_at"]} == {"a", "b", "c"}
                and all(store.get_call(c["id"])["queue_entries"] for c in calls))

    assert wait_for(open_on_every_node, 15)
    doomed = {c["id"] for c in calls_since(store, since) if c["node"] == "b"}
    killed = cluster.kill("b")
    assert wait_for(lambda: cluster.node_states()["b"]["state"] == "down", 10)
    detected = time.time() - killed
    assert detected < 8, detected
    assert wait_for(lambda: all(store.get_call(i)["ended_at"] for i in doomed), 5)
    for call_id in doomed:
        call = store.get_call(call_id)
        assert call["outcome"] == "interrupted", call
        assert call["queue_entries"][-1]["outcome"] == "interrupted", call["queue_entries"]
    assert wait_for(lambda: cluster.unrouted("b"), 15), cluster.active_workers()

    after = time.time()
    more = sipp(cluster, tmp_path / "after", 6, 2, bind=MORE_CALLERS)
    assert (more.successful, more.failed) == (6, 0), more.errors
    assert {c["node"] for c in calls_since(store, after, "100")} <= {"a", "c"}

    load.join(60)
    [result] = first
    assert result.successful >= 9 - len(doomed), result.errors  # the survivors' calls ran to their end
    survivors = [c for c in calls_since(store, since) if c["id"] not in doomed and c["started_at"] < after]
    assert len(survivors) == 9 - len(doomed)
    assert all(c["outcome"] == "abandoned" and c["ended_at"] - c["started_at"] > 18 for c in survivors), survivors

    cluster.start_node("b")  # waits until it serves and Kamailio routes to it again
    assert cluster.node_states()["b"]["state"] == "up"
    again = time.time()
    rejoined = sipp(cluster, tmp_path / "rejoined", 6, 2)
    assert (rejoined.successful, rejoined.failed) == (6, 0), rejoined.errors
    assert "b" in {c["node"] for c in calls_since(store, again, "100")}
