"""One ACD for several ivr nodes sharing a PostgreSQL database.

Every node runs a :class:`ClusterAcd`. The node holding the leader's advisory lock runs the real
:class:`~ivr.queue.engine.Acd` for the whole cluster, so queue order, skills, ring timeouts, wrap-up and
overflow behave exactly as on one node, and an agent is offered one call at a time cluster-wide. The other
nodes block on that lock; PostgreSQL grants it to one of them the moment the leader's connection ends
(a leader killed with -9 included), and the new leader rebuilds the ACD from the store.

Calls stay on the node that answered them: that node dials the agent and bridges, as on one node. The
leader routes each offer and cancel to the caller's node, and each queue update (announcement, connected,
overflowed, refused) back to it (``ivr.queue.cluster_bus``: mailbox rows woken by NOTIFY, no polling).
Requests a node makes (join a queue, hang up, an offer's result, an agent's new state) go the other way.

The leader watches the nodes: one whose process no longer holds its lock, or whose heartbeat is older
than ``dead_after``, is down: its waiting callers are closed as ``interrupted``, offers for them withdrawn
(their agents are free again), its open call records closed, and nothing is routed to it again until it
starts anew.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

from ivr.queue.callbacks import CallbackDialer
from ivr.queue.cluster_bus import (
    EVENTS_CHANNEL,
    LEADER_CHANNEL,
    LEADER_OBJECT,
    LOCK_CLASS,
    ClusterBus,
    node_channel,
    node_lock,
)
from ivr.queue.config import AcdConfig
from ivr.queue.connector import AgentConnector, Offer, OfferResult
from ivr.queue.engine import (
    CALLBACK_STATES,
    SETTABLE_STATES,
    Acd,
    Announce,
    CallbackOffer,
    Connected,
    Overflowed,
    QueueError,
    QueueUpdate,
    Refused,
    Ticket,
)
from ivr.store import Store

log = logging.getLogger(__name__)

REPLY_TIMEOUT = 5.0
CLOSING_EVENTS = ("completed", "abandoned", "interrupted")
_UPDATE_TYPES: dict[str, type[Any]] = {c.__name__: c for c in (Announce, Connected, Overflowed, Refused,
                                                                      CallbackOffer)}


def _encode_update(update: QueueUpdate) -> dict[str, Any]:
    return {"type": type(update).__name__, **dataclasses.asdict(update)}


def _decode_update(data: Mapping[str, Any]) -> QueueUpdate:
    fields = dict(data)
    cls = _UPDATE_TYPES[fields.pop("type")]
    update: QueueUpdate = cls(**fields)
    return update


class ClusterAcd:
    """The cluster's ACD as one node uses it: the same calls as :class:`Acd` for call sessions and the console."""

    def __init__(
        self,
        config: AcdConfig,
        connector: AgentConnector,
        store: Store,
        node: str,
        clock: Callable[[], float] = time.time,
        *,
        context_url: Callable[[str], str] | None = None,
        heartbeat: float = 1.0,
        dead_after: float = 6.0,
        dialer: CallbackDialer | None = None,
    ) -> None:
        self.config = config
        self.connector = connector
        self.store = store
        self.node = node
        self.clock = clock
        self.heartbeat = heartbeat
        self.dead_after = dead_after
        self.dialer = dialer
        """This node's callback dialer: the leader's places the cluster's callbacks."""
        self._context_url = context_url
        self.bus = ClusterBus(store, node)
        self.state = "up"
        self._lock = threading.Lock()
        self._updates: dict[str, list[QueueUpdate]] = {}
        self._queued: dict[str, str] = {}  # this node's callers in a queue, and which
        self._replies: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._ringing: set[str] = set()  # offers this node's connector is ringing
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._node_conn: psycopg.Connection[Any] | None = None
        self._leader_conn: psycopg.Connection[Any] | None = None
        self.leader: _Leadership | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Join the cluster: take this node's lock (an error if another process runs as this node), listen
        for messages, and stand for leader."""
        self._node_conn = self._join()
        self.bus.take_messages()  # left over from an earlier run of this node: its calls are gone
        self.bus.heartbeat(self.state)
        self.bus.command("node_started", {}, self.clock())  # the leader closes what an earlier run left open
        for name, target in (("acd-node", self._node_loop), ("acd-leader", self._leader_loop)):
            thread = threading.Thread(target=target, name=f"{name}-{self.node}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _join(self) -> psycopg.Connection[Any]:
        """A connection holding this node's lock and listening for its messages and the cluster's events."""
        conn = self.bus.connect()
        locked = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, node_lock(self.node))).fetchone()
        if not locked or not locked[0]:
            conn.close()
            raise QueueError(f"another process runs as node {self.node!r}: give each node its own --node name")
        conn.execute(f"LISTEN {node_channel(self.node)}")
        conn.execute(f"LISTEN {EVENTS_CHANNEL}")
        return conn

    def drain(self) -> None:
        """The node is stopping: it keeps its calls, the console shows it draining."""
        self.state = "draining"
        with contextlib.suppress(Exception):
            self.bus.heartbeat(self.state)

    def stop(self) -> None:
        """Leave the cluster (another node takes over leadership at once)."""
        self._stop.set()
        for conn in (self._leader_conn, self._node_conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.cancel_safe(timeout=2)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        self._abdicate()
        if self._node_conn is not None:
            with contextlib.suppress(Exception):
                self._node_conn.close()

    # ----------------------------------------------------------------- calls (the QueueService protocol)
    def has_queue(self, name: str) -> bool:
        """Whether ``name`` is a configured queue."""
        return name in self.config.queues

    def enqueue(self, call_id: str, queue: str, priority: int | None = None,
                context: Mapping[str, Any] | None = None) -> Ticket:
        """A caller of this node joins ``queue`` (the leader decides its place)."""
        if queue not in self.config.queues:
            raise QueueError(f"unknown queue {queue!r}; queues: {', '.join(self.config.queues)}")
        with self._lock:
            self._updates.setdefault(call_id, [])
            self._queued[call_id] = queue
        reply = self._ask("enqueue", {"call_id": call_id, "queue": queue, "priority": priority,
                                      "context": dict(context or {})})
        return Ticket(**reply["ticket"])

    def poll(self, call_id: str) -> list[QueueUpdate]:
        """Updates the leader sent for this node's caller since the last poll."""
        with self._lock:
            updates = self._updates.get(call_id)
            if not updates:
                return []
            self._updates[call_id] = []
            return updates

    def request_callback(self, call_id: str, number: str) -> bool:
        """This node's waiting caller chose a callback (the leader's node will place it)."""
        reply = self._ask("request_callback", {"call_id": call_id, "number": number})
        if reply["accepted"]:
            self._forget(call_id)
        return bool(reply["accepted"])

    def add_callback(self, call_id: str, queue: str, number: str, context: Mapping[str, Any] | None = None) -> None:
        """A callback asked for from outside a call (the API)."""
        self._ask("add_callback", {"call_id": call_id, "queue": queue, "number": number,
                                   "context": dict(context or {})})

    def abandon(self, call_id: str) -> None:
        """The caller hung up."""
        self._forget(call_id)
        self.bus.command("abandon", {"call_id": call_id}, self.clock())

    def call_finished(self, call_id: str) -> None:
        """The connected agent call ended."""
        self._forget(call_id)
        self.bus.command("call_finished", {"call_id": call_id}, self.clock())

    # ----------------------------------------------------------------- agents and the console
    def set_agent_state(self, name: str, state: str, reason: str = "") -> None:
        """Log an agent in or out or on break (wherever their calls arrive)."""
        if state not in SETTABLE_STATES:
            raise QueueError(f"an agent can be set {', '.join(SETTABLE_STATES)}, not {state!r}")
        if name not in self.config.agents:
            raise QueueError(f"unknown agent {name!r}; add it to the queue configuration")
        self._ask("agent_state", {"name": name, "state": state, "reason": reason})

    def agent_names(self) -> list[str]:
        """Configured agent names."""
        return list(self.config.agents)

    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener(event)`` on every change anywhere in the cluster (keep it quick)."""
        with self._lock:
            self._listeners.append(listener)

    def snapshot(self) -> dict[str, Any]:
        """Live view from the store: per queue, the waiting callers in order; every agent's state."""
        now = self.clock()
        queues: dict[str, list[dict[str, Any]]] = {name: [] for name in self.config.queues}
        rows = sorted(self.store.open_queue_entries(), key=lambda r: (-r["priority"], r["enqueued_at"], r["id"]))
        for row in rows:
            queues.setdefault(row["queue"], []).append({
                "call_id": row["call_id"], "state": row["state"], "priority": row["priority"],
                "wait": round(now - row["enqueued_at"], 1), "agent": row["agent"], "node": row["node"]})
        agents = {name: {"state": row["state"], "reason": row["reason"], "since": row["state_since"],
                         "call_id": row["call_id"], "missed": row["missed_offers"]}
                  for name, row in self.store.load_agent_states().items() if name in self.config.agents}
        return {"queues": queues, "agents": agents, "at": now, "nodes": self.bus.nodes()}

    # ----------------------------------------------------------------- requests and replies
    def _ask(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        request = secrets.token_hex(8)
        done = threading.Event()
        box: list[dict[str, Any]] = []
        with self._lock:
            self._replies[request] = (done, box)
        try:
            self.bus.command(kind, {**payload, "request": request}, self.clock())
            if not done.wait(REPLY_TIMEOUT):
                raise QueueError(f"the cluster's ACD did not answer within {REPLY_TIMEOUT:g} s (is the database up?)")
        finally:
            with self._lock:
                self._replies.pop(request, None)
        reply = box[0]
        if not reply["ok"]:
            raise QueueError(reply["error"])
        return reply

    def _forget(self, call_id: str) -> None:
        with self._lock:
            self._updates.pop(call_id, None)
            self._queued.pop(call_id, None)

    def _give_back_callers(self) -> None:
        """The cluster took this node for dead (cut off from the database for too long) and closed its
        callers' entries: hand each caller still waiting back to its session (fallback, voicemail)."""
        with self._lock:
            for call_id, queue in self._queued.items():
                detail = "this node lost the cluster's ACD for a while"
                self._updates.setdefault(call_id, []).append(Refused(queue, "node_down", detail))
            self._queued.clear()

    # ----------------------------------------------------------------- this node's loop
    def _node_loop(self) -> None:
        next_beat = 0.0
        while not self._stop.is_set():
            try:
                if self._node_conn is None or self._node_conn.closed:
                    self._node_conn = self._join()
                self._deliver()
                if time.monotonic() >= next_beat:
                    if self.bus.heartbeat(self.state) == "down":
                        log.error("node %s was taken for dead by the cluster: its waiting callers are given back",
                                  self.node)
                        self._give_back_callers()
                    next_beat = time.monotonic() + self.heartbeat
                for note in self._node_conn.notifies(timeout=self.heartbeat, stop_after=1):
                    if note.channel == EVENTS_CHANNEL and note.payload:
                        self._tell(json.loads(note.payload))
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("cluster node %s: lost the database; reconnecting", self.node)
                if self._node_conn is not None:
                    with contextlib.suppress(Exception):
                        self._node_conn.close()
                self._stop.wait(1.0)

    def _deliver(self) -> None:
        for kind, payload in self.bus.take_messages():
            try:
                self._on_message(kind, payload)
            except Exception:
                log.exception("cluster node %s: message %s failed", self.node, kind)

    def _on_message(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "reply":
            with self._lock:
                waiting = self._replies.get(payload["request"])
            if waiting is not None:
                waiting[1].append(payload)
                waiting[0].set()
        elif kind == "updates":
            updates = [_decode_update(u) for u in payload["updates"]]
            with self._lock:
                self._updates.setdefault(payload["call_id"], []).extend(updates)
        elif kind == "offer":
            offer = Offer(**payload["offer"])
            with self._lock:
                self._ringing.add(offer.offer_id)
            self.connector.offer(offer, self._report)
        elif kind == "cancel":
            with self._lock:
                self._ringing.discard(payload["offer_id"])
            self.connector.cancel(payload["offer_id"])
        elif kind == "cancel_all":  # a new leader: the old one's offers are void
            with self._lock:
                ringing, self._ringing = self._ringing, set()
            for offer_id in ringing:
                self.connector.cancel(offer_id)

    def _report(self, offer_id: str, result: OfferResult) -> None:
        with self._lock:
            self._ringing.discard(offer_id)
        self.bus.command("offer_result", {"offer_id": offer_id, "result": result.value}, self.clock())

    def _tell(self, event: dict[str, Any]) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("ACD listener failed")

    # ----------------------------------------------------------------- standing for leader
    def _leader_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._leader_conn = conn = self.bus.connect()
                conn.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, LEADER_OBJECT))  # waits its turn
                if self._stop.is_set():
                    return
                conn.execute(f"LISTEN {LEADER_CHANNEL}")
                log.info("node %s leads the cluster's ACD", self.node)
                self.leader = _Leadership(self)
                self._lead(conn, self.leader)
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("cluster node %s: lost the ACD leader's connection; standing again", self.node)
            finally:
                self._abdicate()
            self._stop.wait(1.0)

    def _lead(self, conn: psycopg.Connection[Any], leader: _Leadership) -> None:
        """Apply commands as they come and watch the nodes, until stopped or the connection (and with it the
        leader's lock) is lost."""
        next_check = 0.0
        while not self._stop.is_set():
            leader.handle_commands()
            if time.monotonic() >= next_check:
                leader.check_nodes()
                next_check = time.monotonic() + self.heartbeat
            for _ in conn.notifies(timeout=self.heartbeat, stop_after=1):
                pass

    def _abdicate(self) -> None:
        """Stop deciding (the lock is gone or the node stops); another node's ACD takes over from the store."""
        leader, self.leader = self.leader, None
        if leader is not None:
            leader.close()
        if self._leader_conn is not None:
            with contextlib.suppress(Exception):
                self._leader_conn.close()


class _Leadership:
    """The leader's side: the real ACD for every node, fed by commands, routing offers and updates to nodes."""

    def __init__(self, cluster: ClusterAcd) -> None:
        self.cluster = cluster
        self.bus = cluster.bus
        self.clock = cluster.clock
        self.down: set[str] = set()
        nodes = self.bus.nodes()
        for node, info in nodes.items():
            if info["state"] != "down":  # offers of the previous leader are void
                self.bus.message(node, "cancel_all", {}, self.clock())
        self.acd = Acd(cluster.config, _RoutingConnector(self), cluster.store, self.clock, resume_waiting=True,
                       resume_connected=True, context_url=cluster._context_url, offer_tag=secrets.token_hex(3) + "-",
                       dialer=cluster.dialer, offers_first=True)
        self._owners_lock = threading.Lock()
        # callers on a node's line (a callback's caller has hung up: their entry is the cluster's own)
        self.owners = {row["call_id"]: row["node"] for row in cluster.store.open_queue_entries()
                       if row["state"] not in CALLBACK_STATES}
        self._broadcasts: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._broadcaster = threading.Thread(target=self._broadcast, name="acd-events", daemon=True)
        self._broadcaster.start()
        self.acd.subscribe(self._on_event)
        self.acd.start()

    def close(self) -> None:
        """Stop deciding and broadcasting."""
        self.acd.stop()
        self._broadcasts.put(None)
        self._broadcaster.join(timeout=2)

    def handle_commands(self) -> None:
        """Apply every waiting command, oldest first."""
        for node, kind, payload in self.bus.take_commands():
            request = payload.pop("request", None)
            try:
                result = self._apply(node, kind, payload)
                reply = {"ok": True, **result}
            except QueueError as exc:
                reply = {"ok": False, "error": str(exc)}
            except Exception as exc:  # one bad command must not stop the ACD
                log.exception("cluster ACD: command %s from %s failed", kind, node)
                reply = {"ok": False, "error": f"the cluster's ACD failed: {exc}"}
            if request is not None:
                self.bus.message(node, "reply", {"request": request, **reply}, self.clock())

    def _apply(self, node: str, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        acd = self.acd
        if kind == "enqueue":
            self.down.discard(node)
            self._set_owner(payload["call_id"], node)
            ticket = acd.enqueue(payload["call_id"], payload["queue"], payload["priority"], payload["context"])
            return {"ticket": dataclasses.asdict(ticket)}
        if kind == "request_callback":
            accepted = acd.request_callback(payload["call_id"], payload["number"])
            if accepted:  # the caller hangs up; the entry no longer belongs to their node
                self._set_owner(payload["call_id"], None)
            return {"accepted": accepted}
        if kind == "add_callback":
            acd.add_callback(payload["call_id"], payload["queue"], payload["number"], payload["context"])
        elif kind == "abandon":
            acd.abandon(payload["call_id"])
        elif kind == "call_finished":
            acd.call_finished(payload["call_id"])
        elif kind == "offer_result":
            acd.offer_result(payload["offer_id"], OfferResult(payload["result"]))
        elif kind == "agent_state":
            acd.set_agent_state(payload["name"], payload["state"], payload["reason"])
        elif kind == "node_started":  # what an earlier run of the node left open died with it
            self.down.discard(node)
            self._interrupt_calls_of(node)
        else:
            raise QueueError(f"unknown cluster command {kind!r}")
        return {}

    def check_nodes(self) -> None:
        """Take down nodes whose process is gone (lock released) or silent for ``dead_after`` seconds."""
        now = self.clock()
        for node, info in self.bus.nodes().items():
            if info["state"] == "down" or node == self.cluster.node:
                continue
            if not info["locked"] or info["silent"] > self.cluster.dead_after:
                why = "its process ended" if not info["locked"] else f"silent for {info['silent']:.1f} s"
                log.warning("cluster node %s is down (%s): closing its calls", node, why)
                self.bus.set_down(node)
                self.down.add(node)
                self._interrupt_calls_of(node)
                self.bus.drop_messages(node)
                closed = self.cluster.store.close_unfinished_calls(now, node=node)
                log.warning("node %s: %d call record(s) closed as interrupted", node, len(closed))

    def _interrupt_calls_of(self, node: str) -> None:
        with self._owners_lock:
            calls = [call_id for call_id, owner in self.owners.items() if owner == node]
        self.acd.interrupt(calls)
        for call_id in calls:
            self._set_owner(call_id, None)

    def owner(self, call_id: str) -> str | None:
        """The node holding ``call_id`` while it is queued (None once its entry closed or its node died)."""
        with self._owners_lock:
            return self.owners.get(call_id)

    def _set_owner(self, call_id: str, node: str | None) -> None:
        with self._owners_lock:
            if node is None:
                self.owners.pop(call_id, None)
            else:
                self.owners[call_id] = node

    def _on_event(self, event: dict[str, Any]) -> None:
        """Forward the caller's updates to its node; broadcast the event to every node's live views."""
        call_id = event.get("call_id")
        node = self.owner(call_id) if call_id else None
        if call_id and node is not None:
            updates = self.acd.poll(call_id)
            if updates:
                self.bus.message(node, "updates", {"call_id": call_id, "updates": [_encode_update(u) for u in updates]},
                                 self.clock())
            if event["type"] in CLOSING_EVENTS:
                self._set_owner(call_id, None)
        self._broadcasts.put(event)  # for live views: not on the way of the next offer

    def _broadcast(self) -> None:
        while (event := self._broadcasts.get()) is not None:
            try:
                self.bus.event(event)
            except Exception:  # a live view missing an event catches up from the store
                log.exception("cluster ACD: broadcasting %s failed", event.get("type"))


class _RoutingConnector:
    """The leader ACD's connector: rings agents through the node that holds the caller."""

    def __init__(self, leadership: _Leadership) -> None:
        self.leadership = leadership

    def offer(self, offer: Offer, report: Callable[[str, OfferResult], None]) -> None:
        node = self.leadership.owner(offer.call_id)
        if node is None or node in self.leadership.down:
            report(offer.offer_id, OfferResult.FAILED)
            return
        self.leadership.bus.message(node, "offer", {"offer": dataclasses.asdict(offer)}, self.leadership.clock())

    def cancel(self, offer_id: str) -> None:
        node = self.leadership.owner(offer_id.rsplit("#", 1)[0])
        if node is not None and node not in self.leadership.down:
            self.leadership.bus.message(node, "cancel", {"offer_id": offer_id}, self.leadership.clock())
