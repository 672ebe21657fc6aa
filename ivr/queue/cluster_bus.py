"""PostgreSQL plumbing of the cluster ACD: mailboxes woken by LISTEN/NOTIFY, advisory locks, heartbeats.

Two mailbox tables carry the traffic (``acd_commands``: any node → the leader; ``acd_messages``: the leader →
one node). A row is written and its ``pg_notify`` sent in one transaction, so a reader woken by the
notification finds the row, and a reader that was not listening (a leader taking over) finds every row
still there. Payloads are sealed with the store's data key: they carry callers' contexts.

Locks are session-level advisory locks in the application's own namespace (``LOCK_CLASS``): the leader's
(object 0) and one per running node (its name's hash). PostgreSQL releases them when the holder's
connection ends, so a node killed with -9 loses them at once and its death is seen without waiting for a
heartbeat to go stale; the heartbeat covers a machine that vanished without closing its connections.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import psycopg
import sqlalchemy as sa

from ivr.store import Store
from ivr.store import schema as t

LOCK_CLASS = 0x1A7D
LEADER_OBJECT = 0
LEADER_CHANNEL = "ivr_acd"
EVENTS_CHANNEL = "ivr_acd_events"
MAX_NOTIFY_BYTES = 7900  # PostgreSQL's payload limit is 8000
_DB_NOW = sa.cast(sa.func.extract("epoch", sa.func.clock_timestamp()), sa.Float)


def node_lock(node: str) -> int:
    """The advisory lock object a running ``node`` holds (never the leader's)."""
    return int(hashlib.sha1(node.encode()).hexdigest()[:7], 16) + 1


def node_channel(node: str) -> str:
    """The NOTIFY channel that wakes ``node`` for its messages."""
    return "ivr_node_" + hashlib.sha1(node.encode()).hexdigest()[:16]


class ClusterBus:
    """One node's access to the cluster tables and notifications (thread-safe: pooled SQLAlchemy connections
    for writes, a psycopg connection per listening thread)."""

    def __init__(self, store: Store, node: str) -> None:
        if store.is_sqlite:
            raise ValueError("a cluster needs PostgreSQL")
        self.store = store
        self.node = node
        self.dsn = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection (for LISTEN and session locks; the caller closes it)."""
        return psycopg.connect(self.dsn, autocommit=True)

    # ------------------------------------------------------------------ mailboxes
    def command(self, kind: str, payload: dict[str, Any], at: float) -> None:
        """Post a request to the leader (kept until a leader takes it)."""
        self._post(t.acd_commands, self.node, kind, payload, at, LEADER_CHANNEL)

    def message(self, node: str, kind: str, payload: dict[str, Any], at: float) -> None:
        """Post a message to ``node``."""
        self._post(t.acd_messages, node, kind, payload, at, node_channel(node))

    def _post(self, table: sa.Table, node: str, kind: str, payload: dict[str, Any], at: float, channel: str) -> None:
        sealed = self.store.sealer.seal_text(json.dumps(payload))
        with self.store.engine.begin() as conn:
            conn.execute(table.insert().values(node=node, kind=kind, payload=sealed, at=at))
            conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": channel})

    def take_commands(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Every waiting command, oldest first, as (node, kind, payload); they leave the table."""
        return [(node, kind, payload) for node, kind, payload in self._take(t.acd_commands, None)]

    def take_messages(self) -> list[tuple[str, dict[str, Any]]]:
        """This node's waiting messages, oldest first, as (kind, payload); they leave the table."""
        return [(kind, payload) for _, kind, payload in self._take(t.acd_messages, self.node)]

    def _take(self, table: sa.Table, node: str | None) -> list[tuple[str, str, dict[str, Any]]]:
        delete = table.delete().returning(table.c.id, table.c.node, table.c.kind, table.c.payload)
        if node is not None:
            delete = delete.where(table.c.node == node)
        with self.store.engine.begin() as conn:
            rows = sorted(conn.execute(delete).all())
        return [(r.node, r.kind, json.loads(self.store.sealer.open_text(r.payload))) for r in rows]

    def drop_messages(self, node: str) -> None:
        """Forget the messages of a node that died (nobody will read them)."""
        with self.store.engine.begin() as conn:
            conn.execute(t.acd_messages.delete().where(t.acd_messages.c.node == node))

    def event(self, event: dict[str, Any]) -> None:
        """Broadcast a live-view event (no caller data) to every node's listeners."""
        text = json.dumps(event, default=str)
        if len(text.encode()) > MAX_NOTIFY_BYTES:
            text = json.dumps({k: event[k] for k in ("type", "at", "call_id", "queue", "agent") if k in event})
        with self.store.engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_notify(:channel, :text)"), {"channel": EVENTS_CHANNEL, "text": text})

    # ------------------------------------------------------------------ nodes
    def heartbeat(self, state: str) -> str | None:
        """Say this node is alive (``up`` or ``draining``), on the database's clock (nodes' clocks may differ);
        returns the state the cluster had recorded (``down``: it took this node for dead)."""
        nodes = t.nodes
        with self.store.engine.begin() as conn:
            now = conn.execute(sa.select(_DB_NOW)).scalar_one()
            before = conn.execute(sa.select(nodes.c.state).where(nodes.c.name == self.node).with_for_update()).first()
            if before is None:
                conn.execute(nodes.insert().values(name=self.node, state=state, started_at=now, seen_at=now))
                return None
            values = {"state": state, "seen_at": now}
            if before.state == "down":
                values["started_at"] = now
            conn.execute(nodes.update().where(nodes.c.name == self.node).values(**values))
            return str(before.state)

    def set_down(self, node: str) -> None:
        """Record that ``node`` is gone."""
        with self.store.engine.begin() as conn:
            conn.execute(t.nodes.update().where(t.nodes.c.name == node).values(state="down"))

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Every node ever seen: name → state, started_at, seen_at, silent (seconds since its last heartbeat,
        on the database's clock), locked (its process holds its lock now)."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.select(t.nodes, (_DB_NOW - t.nodes.c.seen_at).label("silent"))).all()
            held = {r[0] for r in conn.execute(
                sa.text("SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
                        "AND classid = :cls"), {"cls": LOCK_CLASS})}
        return {r.name: {"state": r.state, "started_at": r.started_at, "seen_at": r.seen_at, "silent": r.silent,
                         "locked": node_lock(r.name) in held} for r in rows}
