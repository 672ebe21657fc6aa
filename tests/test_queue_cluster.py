"""One ACD across several nodes on a real PostgreSQL server (nodes here are ClusterAcd instances in one
process, each with its own connections and a fake agent connector; tests/test_cluster_sip.py runs real
node processes behind Kamailio)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ivr.queue import Announce, Connected, OfferResult, Overflowed, QueueError, parse_queues
from ivr.queue.cluster import ClusterAcd
from ivr.queue.connector import Offer, ReportOffer
from ivr.store import Store, open_store
from ivr.testing.fakes import FakeConnector, FakeDialer

pytestmark = pytest.mark.slow

CONFIG = """
agents:
  ann: {uri: "sip:ann@127.0.0.1"}
  bob: {uri: "sip:bob@127.0.0.1"}
  cid: {uri: "sip:cid@127.0.0.1"}
  dan: {uri: "sip:dan@127.0.0.1"}
  eve: {uri: "sip:eve@127.0.0.1"}
queues:
  support:
    agents: [ann, bob, cid]
    ring_timeout: 30
    wrap_up: 0
    priority: {variable: vip, values: {true: 10}}
  sales:
    agents: [cid, dan, eve]
    ring_timeout: 30
    wrap_up: 0
  later:
    agents: [dan]
    callback: {offer_after: 0, retries: 1}
  brief:
    agents: [eve]
    announce: {every: 5, first_after: 0.2}
    max_wait: 2
    overflow: {voicemail: box1, when: [max_wait]}
"""


def wait_for(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Node:
    """One cluster node: its store connection pool, ACD view and fake agent phones."""

    def __init__(self, url: str, name: str, connector: Any = None) -> None:
        self.name = name
        self.store: Store = open_store(url)
        self.store.node = name
        self.connector = connector or FakeConnector()
        self.dialer = FakeDialer()
        self.acd = ClusterAcd(parse_queues(CONFIG), self.connector, self.store, name, heartbeat=0.2, dead_after=1.5,
                              dialer=self.dialer)
        self.acd.start()

    def call(self, call_id: str, queue: str = "support", **context: Any) -> None:
        self.store.start_call(call_id, "+15550100", "100", "hotline", time.time())
        self.acd.enqueue(call_id, queue, context=context)

    def leads(self) -> bool:
        return self.acd.leader is not None

    def crash(self) -> None:
        """As kill -9 looks to the others: the connections end, nothing is cleaned up."""
        self.acd._stop.set()
        for conn in (self.acd._leader_conn, self.acd._node_conn):
            if conn is not None:
                conn.close()
        if self.acd.leader is not None:
            self.acd.leader.acd.stop()
        self.store.close()

    def stop(self) -> None:
        self.acd.stop()
        self.store.close()


@pytest.fixture
def cluster(postgres_url: str) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def start(name: str, connector: Any = None) -> Node:
        node = Node(postgres_url, name, connector)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        if not node.acd._stop.is_set():
            node.stop()


def agent_state(node: Node, name: str) -> str:
    return str(node.store.load_agent_states().get(name, {}).get("state", "offline"))


def test_a_caller_on_one_node_reaches_an_agent_logged_in_on_another(cluster: Callable[..., Node]) -> None:
    a, b, c = cluster("a"), cluster("b"), cluster("c")
    wait_for(lambda: a.leads() or b.leads() or c.leads(), what="a leader")
    c.acd.set_agent_state("ann", "available")  # ann's console is on node c
    b.call("b-1", vip=False)
    offer = wait_for(lambda: b.connector.ringing(), what="node b ringing ann")[0]
    assert offer.agent == "ann" and offer.call_id == "b-1" and not a.connector.offers and not c.connector.offers
    b.connector.answer("ann")
    updates = wait_for(lambda: b.acd.poll("b-1"), what="the update on node b")
    assert isinstance(updates[0], Connected) and updates[0].agent == "ann"
    assert wait_for(lambda: agent_state(a, "ann") == "on_call")
    b.acd.call_finished("b-1")
    assert wait_for(lambda: agent_state(c, "ann") == "available")
    snapshot = a.acd.snapshot()
    assert snapshot["agents"]["ann"]["state"] == "available" and set(snapshot["nodes"]) == {"a", "b", "c"}


def test_priority_then_arrival_order_holds_across_nodes(cluster: Callable[..., Node]) -> None:
    a, b, c = cluster("a"), cluster("b"), cluster("c")
    b.call("first")
    c.call("second")
    a.call("vip", vip=True)
    c.call("third")
    served: list[str] = []
    a.acd.set_agent_state("ann", "available")
    for _ in range(4):
        ringing = wait_for(lambda: [o for n in (a, b, c) for o in n.connector.ringing()], what="an offer")
        assert len(ringing) == 1
        offer = ringing[0]
        owner = next(n for n in (a, b, c) if offer in n.connector.ringing())
        owner.connector.answer("ann")
        served.append(offer.call_id)
        wait_for(lambda: owner.acd.poll(offer.call_id), what="connected")  # noqa: B023
        owner.acd.call_finished(offer.call_id)
    assert served == ["vip", "first", "second", "third"]


class Phones:
    """Agent phones shared by every node's connector: answer after a short ring, talk a little, hang up;
    and check that no agent ever has two calls offered or connected at once."""

    def __init__(self) -> None:
        self.busy: dict[str, str] = {}
        self.overlaps: list[str] = []
        self.answered: list[str] = []
        self.lock = threading.Lock()
        self.rng = random.Random(13)
        self.nodes: dict[str, Node] = {}

    def connector(self, node: str) -> Any:
        phones = self

        class Connector:
            def offer(self, offer: Offer, report: ReportOffer) -> None:
                phones.ring(node, offer, report)

            def cancel(self, offer_id: str) -> None:
                phones.hang_up(offer_id.rsplit("#", 1)[0])

        return Connector()

    def ring(self, node: str, offer: Offer, report: ReportOffer) -> None:
        with self.lock:
            if offer.agent in self.busy:
                self.overlaps.append(f"{offer.agent}: {self.busy[offer.agent]} and {offer.call_id}")
            self.busy[offer.agent] = offer.call_id
            ring, talk = self.rng.uniform(0.01, 0.1), self.rng.uniform(0.05, 0.3)
            missed = self.rng.random() < 0.15

        def pick_up() -> None:
            if missed:
                self.hang_up(offer.call_id)
                report(offer.offer_id, OfferResult.REJECTED)
                return
            with self.lock:
                if self.busy.get(offer.agent) != offer.call_id:
                    return  # cancelled meanwhile
                self.answered.append(offer.call_id)
            report(offer.offer_id, OfferResult.ANSWERED)
            time.sleep(talk)
            self.hang_up(offer.call_id)
            self.nodes[node].acd.call_finished(offer.call_id)

        threading.Timer(ring, pick_up).start()

    def hang_up(self, call_id: str) -> None:
        with self.lock:
            for agent, current in list(self.busy.items()):
                if current == call_id:
                    del self.busy[agent]


def test_forty_callers_on_three_nodes_never_give_an_agent_two_calls(cluster: Callable[..., Node]) -> None:
    phones = Phones()
    nodes = [cluster(name, phones.connector(name)) for name in ("a", "b", "c")]
    phones.nodes = {n.name: n for n in nodes}
    for agent in ("ann", "bob", "cid", "dan", "eve"):
        nodes[hash(agent) % 3].acd.set_agent_state(agent, "available")
    calls = []
    for i in range(40):
        node = nodes[i % 3]
        call_id = f"{node.name}-{i}"
        node.call(call_id, "support" if i % 2 else "sales")
        calls.append(call_id)
    wait_for(lambda: len(set(phones.answered)) == 40, timeout=60, what="every caller answered")
    assert phones.overlaps == []  # as the phones saw it
    store = nodes[0].store
    wait_for(lambda: all(store.get_call(c)["queue_entries"][-1]["outcome"] == "completed"  # type: ignore[index]
                         for c in calls), what="every entry completed")
    # and as the store's history has it: each agent reserved for one call at a time, freed before the next
    history = sorted((e["id"], e["kind"], e["data"]["agent"], call) for call in calls
                     for e in store.get_call(call)["events"]  # type: ignore[index]
                     if e["kind"] in ("agent_reserved", "agent_freed"))
    holding: dict[str, str] = {}
    for _, kind, agent, call in history:
        if kind == "agent_reserved":
            assert agent not in holding, f"{agent} reserved for {call} while still on {holding[agent]}"
            holding[agent] = call
        else:
            assert holding.pop(agent, None) == call
    assert holding == {} and sum(kind == "agent_reserved" for _, kind, _, _ in history) >= 40


def test_a_new_leader_takes_over_and_waiting_callers_are_served(cluster: Callable[..., Node]) -> None:
    a = cluster("a")
    wait_for(a.leads, what="a leading")
    b, c = cluster("b"), cluster("c")
    b.call("b-1")
    a.crash()
    wait_for(lambda: b.leads() or c.leads(), timeout=5, what="a new leader")
    c.acd.set_agent_state("bob", "available")
    offer = wait_for(lambda: b.connector.ringing(), what="b's caller offered by the new leader")[0]
    assert offer.agent == "bob"


def test_a_dead_node_is_noticed_its_callers_closed_and_it_rejoins(cluster: Callable[..., Node],
                                                                   postgres_url: str) -> None:
    a = cluster("a")
    wait_for(a.leads, what="a leading")
    b, c = cluster("b"), cluster("c")
    a.acd.set_agent_state("ann", "available")
    c.call("c-1")  # ann's phone rings for c's caller
    wait_for(lambda: c.connector.ringing(), what="ann ringing for c-1")
    c.call("c-2")
    b.call("b-1")
    died = time.monotonic()
    c.crash()
    offer = wait_for(lambda: b.connector.ringing(), timeout=10, what="ann freed and offered b's caller")[0]
    detected = time.monotonic() - died
    assert offer.agent == "ann" and detected < 10
    for call_id in ("c-1", "c-2"):  # the leader closes the records just after freeing the agents
        call = wait_for(lambda: (c := a.store.get_call(call_id)) and c["outcome"] and c,  # noqa: B023
                        what=f"{call_id} closed")
        assert call["outcome"] == "interrupted" and call["queue_entries"][-1]["outcome"] == "interrupted"
    assert a.acd.bus.nodes()["c"]["state"] == "down"
    again = cluster("c")  # restarted: rejoins and takes calls
    wait_for(lambda: a.acd.bus.nodes()["c"]["state"] == "up", what="c up again")
    b.connector.answer("ann")
    a.acd.set_agent_state("bob", "available")
    again.call("c-3")
    assert wait_for(lambda: again.connector.ringing(), what="c-3 offered")[0].agent == "bob"


def test_a_second_process_with_the_same_node_name_is_refused(cluster: Callable[..., Node],
                                                             postgres_url: str) -> None:
    cluster("a")
    with pytest.raises(QueueError, match="another process runs as node 'a'"):
        Node(postgres_url, "a")


def test_cluster_queue_benchmark_runs_small(postgres_url: str) -> None:
    from ivr.bench.queue import bench_cluster_transfer_to_offer

    result = bench_cluster_transfer_to_offer(postgres_url, nodes=2, waiting=6, transfers=4)
    assert result["transfers"] == 4 and 0 < result["median_ms"] < 5000


def test_any_nodes_console_shows_every_nodes_callers_and_logs_agents_in_cluster_wide(
        cluster: Callable[..., Node]) -> None:
    import re

    from werkzeug.security import generate_password_hash

    from ivr.web import create_app

    a, b = cluster("a"), cluster("b")
    a.store.add_user("ann", generate_password_hash("ann-password", "pbkdf2:sha256:1000"), "supervisor", 0.0)
    client = create_app(a.store, a.acd, {"secret_key": "test"}).test_client()
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/login").get_data(as_text=True))
    assert token is not None
    client.post("/login", data={"name": "ann", "password": "ann-password", "csrf_token": token.group(1)})
    b.call("b-1")
    live = client.get("/supervisor/live").get_data(as_text=True)
    assert 'data-node="a"' in live and 'data-node="b"' in live and "<td>b</td>" in live  # b's caller, on node a
    page = client.get("/supervisor").get_data(as_text=True)
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert csrf is not None
    client.post("/supervisor/agents/bob/state", data={"state": "available", "csrf_token": csrf.group(1)})
    assert wait_for(lambda: b.connector.ringing(), what="bob rung for b's caller")[0].agent == "bob"


def _cut_off(node: Node, conn: Any) -> None:
    """Kill one of the node's database sessions from the server side (a network cut, a DBA's kill)."""
    import psycopg

    with psycopg.connect(node.acd.bus.dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))


def test_a_leader_cut_off_from_the_database_stops_deciding_and_another_takes_over(
        cluster: Callable[..., Node]) -> None:
    a = cluster("a")
    wait_for(a.leads, what="a leading")
    b = cluster("b")
    _cut_off(a, a.acd._leader_conn)
    wait_for(lambda: b.leads() and not a.leads(), what="b leading, a not")
    b.call("b-1")
    a.acd.set_agent_state("ann", "available")  # a's console still works: its node connection is fine
    assert wait_for(lambda: b.connector.ringing(), what="b-1 offered")[0].agent == "ann"
    assert len(b.connector.offers) == 1


def test_a_node_taken_for_dead_gives_its_waiting_callers_back_when_it_returns(cluster: Callable[..., Node]) -> None:
    a = cluster("a")
    wait_for(a.leads, what="a leading")
    b = cluster("b")
    b.call("b-1")
    _cut_off(b, b.acd._node_conn)  # its lock goes with the session: the leader takes b for dead
    updates = wait_for(lambda: b.acd.poll("b-1"), what="b-1 given back")
    assert updates[0].reason == "node_down"  # type: ignore[union-attr]
    assert wait_for(lambda: a.acd.bus.nodes()["b"]["state"] == "up", what="b up again")
    assert a.store.get_call("b-1")["queue_entries"][-1]["outcome"] == "interrupted"  # type: ignore[index]


def test_announcements_and_overflow_reach_the_callers_node(cluster: Callable[..., Node]) -> None:
    a = cluster("a")
    wait_for(a.leads, what="a leading")
    b = cluster("b")
    a.acd.set_agent_state("eve", "break")  # logged in, busy: the caller waits, hears announcements, overflows
    b.call("b-1", "brief")
    heard: list[Any] = []
    wait_for(lambda: heard.extend(b.acd.poll("b-1")) or any(isinstance(u, Overflowed) for u in heard), timeout=6,
             what="the overflow")
    assert isinstance(heard[0], Announce) and heard[0].position == 1
    assert heard[-1] == Overflowed("voicemail", "box1", "max_wait")


def test_a_callback_outlives_the_node_its_caller_rang_and_a_change_of_leader(cluster: Callable[..., Node]) -> None:
    a = cluster("a")
    wait_for(a.leads, what="a leading")
    b, c = cluster("b"), cluster("c")
    a.acd.set_agent_state("dan", "break")  # logged in, busy: the caller waits and asks to be called back
    c.call("c-1", "later")
    assert c.acd.request_callback("c-1", "sip:+15550100@127.0.0.1")
    a.crash()
    wait_for(b.leads, what="b leading")  # rebuilt from the store: the callback is the cluster's, not c's
    c.crash()
    wait_for(lambda: b.acd.bus.nodes()["c"]["state"] == "down", what="c down")
    b.acd.set_agent_state("dan", "available")
    attempt = wait_for(lambda: b.dialer.attempts, what="the leader's node calling back")[0]
    assert attempt.number == "sip:+15550100@127.0.0.1" and attempt.agent == "dan"
