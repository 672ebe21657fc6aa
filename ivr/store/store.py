"""Call records, transcripts, users, agents and queue state in one SQL database.

SQLite (WAL, foreign keys on) by default, PostgreSQL by URL. Every write is its own committed
transaction, so a crash of the process loses nothing already written, and a second connection (the
console in another process) sees it at once. All methods are thread-safe.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.pool import StaticPool

from ivr.errors import IvrError
from ivr.store import schema as t
from ivr.store.crypto import Sealer, load_data_key
from ivr.store.migrate import upgrade
from ivr.store.survey import CSAT_RANGE, NPS_RANGE, survey_scores

log = logging.getLogger(__name__)

SPEAKERS = ("caller", "bot", "agent")
OPEN_ENTRY_STATES = ("waiting", "offering", "connected", "callback", "calling_back")


class StoreError(IvrError):
    """The database could not be opened or a record was not valid."""


def _json_dumps(value: object) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def _postgresql_settings(dbapi_conn: Any, _record: Any) -> None:
    # Like SQLite's synchronous=NORMAL: a commit does not wait for the disk. Durable against a crash of any
    # ivr process; a crash of the database server may lose its last fraction of a second (never corrupts).
    # Waiting for the disk three times per offer took most of the cluster ACD's transfer → offer time.
    cur = dbapi_conn.cursor()
    cur.execute("SET synchronous_commit TO OFF")
    cur.close()
    dbapi_conn.commit()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    # NORMAL in WAL mode is durable against a crash of the process (only power loss can drop the
    # last transactions), and keeps each committed write well under a millisecond.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def searchable_text(text: str) -> str:
    """What a turn's plain ``text`` column keeps for search (the whole turn is in ``sealed``): its words,
    with every digit starred, so no number the caller gave is readable in the database."""
    return re.sub(r"\d", "*", text)


def database_url(url_or_path: str | Path) -> str:
    """A SQLAlchemy URL for a URL or a file path (a plain path means a SQLite file)."""
    text = str(url_or_path)
    if "://" in text:
        return text
    if text == ":memory:":
        return "sqlite://"
    path = Path(text).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def open_store(url_or_path: str | Path, data_key: bytes | None = None) -> Store:
    """Open (creating and migrating as needed) the store at a SQLite path or a database URL.

    ``postgresql+psycopg://user:pass@host/db`` selects PostgreSQL (install the ``postgres`` extra).
    Transcripts, contexts, events and notes are encrypted with ``data_key`` (default: see
    :func:`ivr.store.crypto.load_data_key`).
    """
    try:
        url = database_url(url_or_path)
        if url.startswith("sqlite"):
            kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
            if url == "sqlite://":
                kwargs["poolclass"] = StaticPool
            engine = sa.create_engine(url, json_serializer=_json_dumps, **kwargs)
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = sa.create_engine(url, json_serializer=_json_dumps, pool_pre_ping=True)
            sa.event.listen(engine, "connect", _postgresql_settings)
        upgrade(engine)
        key = data_key or load_data_key(url)
    except (sa.exc.SQLAlchemyError, ImportError, OSError) as exc:
        raise StoreError(
            f"cannot open the store at {url_or_path}: {exc}. Check the path is writable, or the database URL, "
            "server and credentials (PostgreSQL needs: pip install 'ivr[postgres]')."
        ) from exc
    return Store(engine, Sealer(key))


def _row(row: sa.Row[Any] | None) -> dict[str, Any] | None:
    return dict(row._mapping) if row is not None else None


class Store:
    """Thread-safe access to the ivr database; create with :func:`open_store`."""

    def __init__(self, engine: sa.Engine, sealer: Sealer | None = None) -> None:
        self.engine = engine
        self.sealer = sealer or Sealer(Fernet.generate_key())
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.node = ""
        """The node this process serves as (``ivr serve --node``): calls it starts are recorded as its own."""
        # SQLite has one writer at a time: serialise writers here instead of spinning on busy errors.
        self._write_lock = threading.RLock()

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    # ----------------------------------------------------------------- calls
    def start_call(self, call_id: str, caller: str, called: str, flow: str, started_at: float) -> None:
        """Record a new call (idempotent: a second start of the same id updates its fields)."""
        with self._write() as conn:
            exists = conn.execute(sa.select(t.calls.c.id).where(t.calls.c.id == call_id)).first()
            values = {"caller": caller, "called": called, "flow": flow, "started_at": started_at, "node": self.node}
            if exists:
                conn.execute(t.calls.update().where(t.calls.c.id == call_id).values(**values))
            else:
                conn.execute(t.calls.insert().values(id=call_id, context={}, **values))

    def _ensure_call(self, conn: sa.Connection, call_id: str, at: float) -> None:
        if conn.execute(sa.select(t.calls.c.id).where(t.calls.c.id == call_id)).first() is None:
            conn.execute(t.calls.insert().values(id=call_id, started_at=at, context={}))

    def mark_answered(self, call_id: str, at: float) -> None:
        """Record when the call was answered."""
        with self._write() as conn:
            self._ensure_call(conn, call_id, at)
            conn.execute(t.calls.update().where(t.calls.c.id == call_id).values(answered_at=at))

    def add_turn(
        self,
        call_id: str,
        at: float,
        speaker: str,
        text: str,
        intent: str | None = None,
        confidence: float | None = None,
    ) -> None:
        """Append one thing said: ``speaker`` is 'caller', 'bot' or 'agent'."""
        if speaker not in SPEAKERS:
            raise StoreError(f"speaker must be one of {', '.join(SPEAKERS)}, not {speaker!r}")
        with self._write() as conn:
            self._ensure_call(conn, call_id, at)
            conn.execute(
                t.turns.insert().values(
                    call_id=call_id, at=at, speaker=speaker, text=searchable_text(text), intent=intent,
                    confidence=confidence, sealed=self.sealer.seal_text(text),
                )
            )
            if speaker == "caller" and intent:
                conn.execute(t.calls.update().where(t.calls.c.id == call_id).values(intent=intent))

    def add_event(self, call_id: str, at: float, kind: str, data: dict[str, Any]) -> None:
        """Append one event of the call (transfer, dtmf, error, queue...) with JSON-able data."""
        with self._write() as conn:
            self._ensure_call(conn, call_id, at)
            conn.execute(t.events.insert().values(call_id=call_id, at=at, kind=kind,
                                                  data=self.sealer.seal_json(data)))

    def set_context(self, call_id: str, context: dict[str, Any]) -> None:
        """Replace the call's context (intent, confidence, slots, variables, path...)."""
        values: dict[str, Any] = {"context": self.sealer.seal_json(context)}
        if isinstance(context.get("intent"), str):
            values["intent"] = context["intent"]
        csat, nps = survey_scores(context)
        if csat is not None:
            values["csat"] = csat
        if nps is not None:
            values["nps"] = nps
        with self._write() as conn:
            self._ensure_call(conn, call_id, 0.0)
            conn.execute(t.calls.update().where(t.calls.c.id == call_id).values(**values))

    def set_survey(self, call_id: str, csat: float | None = None, nps: float | None = None) -> None:
        """Record a call's survey answers: CSAT 1-5 and NPS 0-10 (None leaves an answer as it is)."""
        values: dict[str, Any] = {}
        for name, value, (low, high) in (("csat", csat, CSAT_RANGE), ("nps", nps, NPS_RANGE)):
            if value is None:
                continue
            if not low <= value <= high:
                raise StoreError(f"{name} must be from {low:g} to {high:g}, not {value!r}")
            values[name] = float(value)
        if values:
            with self._write() as conn:
                self._ensure_call(conn, call_id, 0.0)
                conn.execute(t.calls.update().where(t.calls.c.id == call_id).values(**values))

    def end_call(self, call_id: str, at: float, outcome: str) -> None:
        """Record the end of the call and its outcome ('completed', 'transferred', 'abandoned', 'error'...), and
        that it repeats the caller's previous call on the same intent (``repeat_at`` of that call, for FCR)."""
        with self._write() as conn:
            self._ensure_call(conn, call_id, at)
            conn.execute(t.calls.update().where(t.calls.c.id == call_id).values(ended_at=at, outcome=outcome))
            self._link_repeat(conn, call_id)

    def _link_repeat(self, conn: sa.Connection, call_id: str) -> None:
        c = t.calls.c
        call = conn.execute(sa.select(c.caller, c.intent, c.started_at).where(c.id == call_id)).first()
        if call is None or not call.caller or not call.intent:
            return
        previous = conn.execute(
            sa.select(c.id)
            .where(c.caller == call.caller, c.intent == call.intent, c.started_at < call.started_at)
            .order_by(c.started_at.desc())
            .limit(1)
        ).scalar()
        if previous is not None:
            conn.execute(
                t.calls.update()
                .where(c.id == previous, sa.or_(c.repeat_at.is_(None), c.repeat_at > call.started_at))
                .values(repeat_at=call.started_at)
            )

    def close_unfinished_calls(self, at: float, outcome: str = "interrupted", node: str | None = None) -> list[str]:
        """End every call of ``node`` (default: this one) that has no end (left by a server that crashed or a
        node that died); returns their ids. Other nodes' calls are theirs to end; a SQLite database serves
        one node, so there every call is this node's, and calls recorded before nodes had names are too."""
        open_calls = sa.select(t.calls.c.id).where(t.calls.c.ended_at.is_(None))
        if not self.is_sqlite:
            open_calls = open_calls.where(t.calls.c.node.in_({self.node if node is None else node, ""}))
        with self._write() as conn:
            ids = [row[0] for row in conn.execute(open_calls)]
            if ids:
                conn.execute(t.calls.update().where(t.calls.c.id.in_(ids)).values(ended_at=at, outcome=outcome))
        return ids

    def get_call(self, call_id: str) -> dict[str, Any] | None:
        """The call with its context, ``turns``, ``events``, ``notes`` and ``queue_entries`` (oldest first)."""
        with self._read() as conn:
            call = _row(conn.execute(sa.select(t.calls).where(t.calls.c.id == call_id)).first())
            if call is None:
                return None
            for name, table in (("turns", t.turns), ("events", t.events), ("notes", t.notes)):
                rows = conn.execute(
                    sa.select(table).where(table.c.call_id == call_id).order_by(table.c.at, table.c.id)
                ).all()
                call[name] = [dict(r._mapping) for r in rows]
            entries = conn.execute(
                sa.select(t.queue_entries).where(t.queue_entries.c.call_id == call_id).order_by(t.queue_entries.c.id)
            ).all()
            call["queue_entries"] = [self._open_context(dict(r._mapping)) for r in entries]
            recs = conn.execute(
                sa.select(t.recordings).where(t.recordings.c.call_id == call_id).order_by(t.recordings.c.id)
            ).all()
            call["recordings"] = [self._open_recording(dict(r._mapping)) for r in recs]
        for turn in call["turns"]:
            sealed = turn.pop("sealed", None)
            if sealed:
                turn["text"] = self.sealer.open_text(sealed)
        for event in call["events"]:
            event["data"] = self.sealer.open_json(event["data"])
        for note in call["notes"]:
            note["text"] = self.sealer.open_note(note["text"])
        return self._open_context(call)

    def _open_context(self, row: dict[str, Any]) -> dict[str, Any]:
        if "context" in row:
            row["context"] = self.sealer.open_json(row["context"])
        return row

    def _calls_query(self, query: Any, *, since: float | None, until: float | None, search: str | None,
                     agent: str | None, outcome: str | None, where: Sequence[Any]) -> Any:
        if since is not None:
            query = query.where(t.calls.c.started_at >= since)
        if until is not None:
            query = query.where(t.calls.c.started_at < until)
        if agent:
            query = query.where(t.calls.c.agent == agent)
        if outcome:
            query = query.where(t.calls.c.outcome == outcome)
        if search:
            # the search is literal text: % and _ match themselves, not any characters
            escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"

            def like(column: Any) -> Any:
                return sa.func.lower(column).like(pattern, escape="\\")

            in_turns = sa.select(t.turns.c.id).where(t.turns.c.call_id == t.calls.c.id, like(t.turns.c.text))
            query = query.where(
                sa.or_(
                    like(t.calls.c.id),
                    like(t.calls.c.caller),
                    like(t.calls.c.called),
                    like(sa.func.coalesce(t.calls.c.intent, "")),
                    in_turns.exists(),
                )
            )
        return query.where(*where) if where else query

    def list_calls(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        search: str | None = None,
        agent: str | None = None,
        outcome: str | None = None,
        where: Sequence[Any] = (),
        limit: int = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Call summaries (no turns), newest first; ``search`` matches the id, numbers, intent or transcript;
        ``where`` adds SQL conditions on ``calls`` (:mod:`ivr.reports.drill` builds them for a figure)."""
        query = self._calls_query(sa.select(t.calls), since=since, until=until, search=search, agent=agent,
                                  outcome=outcome, where=where)
        query = query.order_by(t.calls.c.started_at.desc(), t.calls.c.id.desc())
        query = query.limit(max(1, min(limit, 1000))).offset(max(0, offset))
        with self._read() as conn:
            return [self._open_context(dict(r._mapping)) for r in conn.execute(query).all()]

    def count_listed_calls(self, *, since: float | None = None, until: float | None = None,
                           search: str | None = None, agent: str | None = None, outcome: str | None = None,
                           where: Sequence[Any] = (), cap: int = 10_000) -> int:
        """How many calls :meth:`list_calls` with the same filters would list, all pages together, counted up
        to ``cap`` + 1 (a search of a large store stops there instead of reading every transcript)."""
        ids = self._calls_query(sa.select(t.calls.c.id), since=since, until=until, search=search, agent=agent,
                                outcome=outcome, where=where).limit(cap + 1).subquery()
        with self._read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(ids)).scalar_one())

    def erase_call(self, call_id: str, at: float, *, everything: bool = True) -> list[str] | None:
        """Erase what a call's caller said and gave: transcript, context, events (and with ``everything``
        the agents' notes and the caller's number too). Returns the recording files the call had, for the
        caller to delete, or None when there is no such call. The call's times, outcome, queue and agent
        stay (the figures need them)."""
        with self._write() as conn:
            if conn.execute(sa.select(t.calls.c.id).where(t.calls.c.id == call_id)).first() is None:
                return None
            rows = conn.execute(
                sa.select(t.events.c.data).where(t.events.c.call_id == call_id, t.events.c.kind == "recording")
            ).all()
            recordings = [str(data.get("path")) for data in (self.sealer.open_json(r[0]) for r in rows)
                          if isinstance(data, dict) and data.get("path")]
            recordings += [r[0] for r in conn.execute(
                sa.select(t.recordings.c.path).where(t.recordings.c.call_id == call_id)) if r[0] not in recordings]
            conn.execute(t.recordings.delete().where(t.recordings.c.call_id == call_id))
            tables = (t.turns, t.events, t.notes) if everything else (t.turns, t.events)
            for table in tables:
                conn.execute(table.delete().where(table.c.call_id == call_id))
            values: dict[str, Any] = {"context": {}, "erased_at": at}
            if everything:
                values["caller"] = ""
            conn.execute(t.calls.update().where(t.calls.c.id == call_id).values(**values))
            conn.execute(t.queue_entries.update().where(t.queue_entries.c.call_id == call_id).values(context={}))
        return recordings

    def calls_to_purge(self, before: float, limit: int = 500) -> list[str]:
        """Ended calls started before ``before`` whose transcripts were not erased yet, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(t.calls.c.id)
                .where(t.calls.c.started_at < before, t.calls.c.ended_at.is_not(None), t.calls.c.erased_at.is_(None))
                .order_by(t.calls.c.started_at)
                .limit(limit)
            ).all()
            return [r[0] for r in rows]

    def count_calls(self) -> int:
        """How many calls are stored."""
        with self._read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(t.calls)).scalar_one())

    def add_note(self, call_id: str, agent: str, at: float, text: str, disposition: str = "") -> None:
        """An agent's disposition note on a call."""
        with self._write() as conn:
            self._ensure_call(conn, call_id, at)
            conn.execute(
                t.notes.insert().values(call_id=call_id, agent=agent, at=at, text=self.sealer.seal_note(text),
                                        disposition=disposition)
            )

    # ----------------------------------------------------------------- recordings and voicemail
    def add_recording(self, call_id: str, at: float, kind: str, path: str, duration: float, queue: str = "") -> int:
        """A call recording ('call'), voicemail ('voicemail') or flow message ('message') saved at ``path``
        (a sealed file); returns its id."""
        with self._write() as conn:
            self._ensure_call(conn, call_id, at)
            result = conn.execute(t.recordings.insert().values(call_id=call_id, at=at, kind=kind, path=path,
                                                               duration=duration, queue=queue))
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def get_recording(self, recording_id: int) -> dict[str, Any] | None:
        """One recording (notes decrypted), or None."""
        with self._read() as conn:
            row = _row(conn.execute(sa.select(t.recordings).where(t.recordings.c.id == recording_id)).first())
        return self._open_recording(row) if row is not None else None

    def list_voicemails(self, queues: set[str] | None = None, *, open_only: bool = False, limit: int = 50,
                        offset: int = 0) -> list[dict[str, Any]]:
        """Voicemail, newest first, with the caller's number (``queues``: only those left in these queues;
        ``open_only``: only those not called back yet)."""
        query = (sa.select(t.recordings, t.calls.c.caller)
                 .join(t.calls, t.calls.c.id == t.recordings.c.call_id)
                 .where(t.recordings.c.kind == "voicemail"))
        if queues is not None:
            query = query.where(t.recordings.c.queue.in_(sorted(queues)))
        if open_only:
            query = query.where(t.recordings.c.called_back_at.is_(None))
        query = query.order_by(t.recordings.c.at.desc(), t.recordings.c.id.desc())
        query = query.limit(max(1, min(limit, 1000))).offset(max(0, offset))
        with self._read() as conn:
            return [self._open_recording(dict(r._mapping)) for r in conn.execute(query).all()]

    def update_voicemail(self, recording_id: int, *, called_back: bool | None = None, by: str = "",
                         at: float = 0.0, notes: str | None = None) -> bool:
        """Mark a voicemail called back (by ``by`` at ``at``) or not, and/or replace its notes (sealed);
        False when there is no such voicemail."""
        values: dict[str, Any] = {}
        if called_back is not None:
            values.update(called_back_at=at if called_back else None, called_back_by=by if called_back else "")
        if notes is not None:
            values["notes"] = self.sealer.seal_note(notes) if notes else ""
        where = sa.and_(t.recordings.c.id == recording_id, t.recordings.c.kind == "voicemail")
        with self._write() as conn:
            if not values:
                return conn.execute(sa.select(t.recordings.c.id).where(where)).first() is not None
            return conn.execute(t.recordings.update().where(where).values(**values)).rowcount > 0

    def _open_recording(self, row: dict[str, Any]) -> dict[str, Any]:
        row["notes"] = self.sealer.open_note(row.get("notes") or "")
        return row

    # ----------------------------------------------------------------- users and tokens
    def add_user(self, name: str, password_hash: str, role: str, at: float) -> None:
        """Create a user, or replace the password and role of an existing one (ending their sessions)."""
        with self._write() as conn:
            if conn.execute(sa.select(t.users.c.name).where(t.users.c.name == name)).first():
                conn.execute(
                    t.users.update()
                    .where(t.users.c.name == name)
                    .values(password_hash=password_hash, role=role, session_version=t.users.c.session_version + 1)
                )
            else:
                conn.execute(t.users.insert().values(name=name, password_hash=password_hash, role=role, created_at=at))

    def get_user(self, name: str) -> dict[str, Any] | None:
        """The user record (name, password_hash, role) or None."""
        with self._read() as conn:
            return _row(conn.execute(sa.select(t.users).where(t.users.c.name == name)).first())

    def end_sessions(self, name: str) -> None:
        """Invalidate every console session of ``name`` (its session version moves on)."""
        with self._write() as conn:
            conn.execute(
                t.users.update().where(t.users.c.name == name).values(session_version=t.users.c.session_version + 1)
            )

    def add_auth_failure(self, keys: list[str], at: float, forget_before: float) -> None:
        """Record a failed sign-in or token for each of ``keys``; forget failures older than ``forget_before``."""
        with self._write() as conn:
            conn.execute(t.auth_failures.delete().where(t.auth_failures.c.at < forget_before))
            conn.execute(t.auth_failures.insert(), [{"key": key, "at": at} for key in keys])

    def auth_failures(self, key: str, since: float) -> list[float]:
        """When ``key`` failed since ``since``, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(t.auth_failures.c.at)
                .where(t.auth_failures.c.key == key, t.auth_failures.c.at >= since)
                .order_by(t.auth_failures.c.at)
            ).all()
            return [row[0] for row in rows]

    def clear_auth_failures(self, key: str) -> None:
        """Forget the failures of ``key`` (after a successful sign-in)."""
        with self._write() as conn:
            conn.execute(t.auth_failures.delete().where(t.auth_failures.c.key == key))

    def list_users(self) -> list[dict[str, Any]]:
        """All users (without password hashes), by name."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(t.users.c.name, t.users.c.role, t.users.c.created_at).order_by(t.users.c.name)
            ).all()
            return [self._open_context(dict(r._mapping)) for r in rows]

    def delete_user(self, name: str) -> bool:
        """Remove a user and their API tokens; True if it existed."""
        with self._write() as conn:
            conn.execute(t.api_tokens.delete().where(t.api_tokens.c.user_name == name))
            return conn.execute(t.users.delete().where(t.users.c.name == name)).rowcount > 0

    def add_token(self, token_hash: str, user_name: str, label: str, at: float) -> None:
        """Store the hash of a new API token for a user."""
        with self._write() as conn:
            conn.execute(
                t.api_tokens.insert().values(token_hash=token_hash, user_name=user_name, label=label, created_at=at)
            )

    def user_for_token(self, token_hash: str) -> dict[str, Any] | None:
        """The user an API token hash belongs to, or None."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(t.users)
                .join(t.api_tokens, t.api_tokens.c.user_name == t.users.c.name)
                .where(t.api_tokens.c.token_hash == token_hash)
            ).first()
            return _row(row)

    # ----------------------------------------------------------------- agents and queue state
    def save_agent_state(
        self,
        name: str,
        state: str,
        reason: str,
        state_since: float,
        last_call_end: float | None,
        missed_offers: int,
        call_id: str | None,
    ) -> None:
        """Persist one agent's live state (insert or update)."""
        values = {
            "state": state,
            "reason": reason,
            "state_since": state_since,
            "last_call_end": last_call_end,
            "missed_offers": missed_offers,
            "call_id": call_id,
        }
        with self._write() as conn:
            if conn.execute(sa.select(t.agents.c.name).where(t.agents.c.name == name)).first():
                conn.execute(t.agents.update().where(t.agents.c.name == name).values(**values))
            else:
                conn.execute(t.agents.insert().values(name=name, **values))

    def load_agent_states(self) -> dict[str, dict[str, Any]]:
        """Every persisted agent state, by agent name."""
        with self._read() as conn:
            return {r.name: dict(r._mapping) for r in conn.execute(sa.select(t.agents)).all()}

    def add_queue_entry(
        self, call_id: str, queue: str, priority: int, enqueued_at: float, context: dict[str, Any]
    ) -> int:
        """A caller joins a queue: returns the entry id."""
        with self._write() as conn:
            self._ensure_call(conn, call_id, enqueued_at)
            result = conn.execute(
                t.queue_entries.insert().values(
                    call_id=call_id,
                    queue=queue,
                    priority=priority,
                    state="waiting",
                    enqueued_at=enqueued_at,
                    context=self.sealer.seal_json(context),
                )
            )
            conn.execute(t.calls.update().where(t.calls.c.id == call_id).values(queue=queue))
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def update_queue_entry(self, entry_id: int, **fields: Any) -> None:
        """Change fields of a queue entry (state, agent, answered_at, ended_at, outcome)."""
        with self._write() as conn:
            conn.execute(t.queue_entries.update().where(t.queue_entries.c.id == entry_id).values(**fields))
            if fields.get("agent"):
                call_id = conn.execute(
                    sa.select(t.queue_entries.c.call_id).where(t.queue_entries.c.id == entry_id)
                ).scalar()
                if call_id is not None and fields.get("state") == "connected":
                    conn.execute(t.calls.update().where(t.calls.c.id == call_id).values(agent=fields["agent"]))

    def callback_counts_since(self, since: float) -> dict[str, int]:
        """Callbacks asked for since ``since``, by number (the per-number daily limit)."""
        qe = t.queue_entries.c
        with self._read() as conn:
            rows = conn.execute(sa.select(qe.callback_number, sa.func.count())
                                .where(qe.callback_requested_at >= since, qe.callback_number.is_not(None))
                                .group_by(qe.callback_number)).all()
        return {str(number): int(count) for number, count in rows}

    def outbound_counts_since(self, since: float) -> dict[str, int]:
        """Outbound calls (``POST /api/calls/outbound``) placed since ``since``, by number called (the
        per-number daily limit)."""
        c = t.calls.c
        with self._read() as conn:
            rows = conn.execute(sa.select(c.called, sa.func.count())
                                .where(c.started_at >= since, c.id.like("outbound-%"), c.called.is_not(None))
                                .group_by(c.called)).all()
        return {str(number): int(count) for number, count in rows}

    def open_queue_entries(self) -> list[dict[str, Any]]:
        """Entries still waiting, being offered or connected, oldest first, with the ``node`` holding the call."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(t.queue_entries, t.calls.c.node)
                .join(t.calls, t.calls.c.id == t.queue_entries.c.call_id)
                .where(t.queue_entries.c.state.in_(OPEN_ENTRY_STATES))
                .order_by(t.queue_entries.c.enqueued_at, t.queue_entries.c.id)
            ).all()
            return [self._open_context(dict(r._mapping)) for r in rows]

    def queue_entries_between(self, since: float, until: float) -> list[dict[str, Any]]:
        """Queue entries that joined in [since, until), without their context."""
        cols = [c for c in t.queue_entries.c if c.name != "context"]
        with self._read() as conn:
            rows = conn.execute(
                sa.select(*cols)
                .where(t.queue_entries.c.enqueued_at >= since, t.queue_entries.c.enqueued_at < until)
                .order_by(t.queue_entries.c.enqueued_at)
            ).all()
            return [self._open_context(dict(r._mapping)) for r in rows]

    def calls_between(self, since: float, until: float) -> list[dict[str, Any]]:
        """Call summaries (with context) that started in [since, until), oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(t.calls)
                .where(t.calls.c.started_at >= since, t.calls.c.started_at < until)
                .order_by(t.calls.c.started_at)
            ).all()
            return [self._open_context(dict(r._mapping)) for r in rows]

    def unanswered_questions(self, since: float, until: float, limit: int = 10) -> list[dict[str, Any]]:
        """The questions asked most often in [since, until) that the flows' knowledge files could not answer
        (``faq_unanswered`` call events), most frequent first: ``question`` (lower-case words, as grouped),
        ``count``, ``calls`` (distinct calls), ``examples`` (up to 3 as asked, masked when they were
        recorded), ``closest`` (the entry that came closest most often, or None) and ``last_at``."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(t.events.c.call_id, t.events.c.at, t.events.c.data)
                .where(t.events.c.kind == "faq_unanswered", t.events.c.at >= since, t.events.c.at < until)
                .order_by(t.events.c.at)
            ).all()
        groups: dict[str, dict[str, Any]] = {}
        for call_id, at, sealed in rows:
            data = self.sealer.open_json(sealed)
            asked = str(data.get("question") or "").strip() if isinstance(data, dict) else ""
            key = " ".join(re.findall(r"[\w'*]+", asked.lower()))
            if not key:
                continue
            group = groups.setdefault(key, {"question": key, "count": 0, "calls": set(), "examples": [],
                                            "closest": {}, "last_at": at})
            group["count"] += 1
            group["calls"].add(call_id)
            group["last_at"] = at
            if asked not in group["examples"] and len(group["examples"]) < 3:
                group["examples"].append(asked)
            best = data.get("best")
            if best:
                group["closest"][best] = group["closest"].get(best, 0) + 1
        ranked = sorted(groups.values(), key=lambda g: (-g["count"], -g["last_at"], g["question"]))[:max(limit, 0)]
        for group in ranked:
            group["calls"] = len(group["calls"])
            closest = group["closest"]
            group["closest"] = max(sorted(closest), key=closest.__getitem__) if closest else None
        return ranked

    def agent_history(self, agent: str, limit: int = 50) -> list[dict[str, Any]]:
        """Calls an agent was connected to, newest first, with their notes count."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(
                    t.queue_entries.c.call_id,
                    t.queue_entries.c.queue,
                    t.queue_entries.c.enqueued_at,
                    t.queue_entries.c.answered_at,
                    t.queue_entries.c.ended_at,
                    t.queue_entries.c.outcome,
                    t.calls.c.caller,
                    t.calls.c.intent,
                )
                .join(t.calls, t.calls.c.id == t.queue_entries.c.call_id)
                .where(t.queue_entries.c.agent == agent, t.queue_entries.c.answered_at.is_not(None))
                .order_by(t.queue_entries.c.answered_at.desc())
                .limit(limit)
            ).all()
            return [self._open_context(dict(r._mapping)) for r in rows]

    def live_queue_rows(self) -> list[dict[str, Any]]:
        """Open queue entries (no context) with the caller number and intent of their call, oldest first."""
        cols = [c for c in t.queue_entries.c if c.name != "context"]
        with self._read() as conn:
            rows = conn.execute(
                sa.select(*cols, t.calls.c.caller, t.calls.c.intent, t.calls.c.node)
                .join(t.calls, t.calls.c.id == t.queue_entries.c.call_id)
                .where(t.queue_entries.c.state.in_(OPEN_ENTRY_STATES))
                .order_by(t.queue_entries.c.enqueued_at, t.queue_entries.c.id)
            ).all()
            return [self._open_context(dict(r._mapping)) for r in rows]

    def list_nodes(self) -> list[dict[str, Any]]:
        """The nodes of a cluster sharing this database (name, state, started_at, seen_at), by name; none on
        a single node."""
        with self._read() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(t.nodes).order_by(t.nodes.c.name))]

    def live_fingerprint(self) -> tuple[Any, ...]:
        """A cheap value that changes whenever queues, agents or call records change (for live views)."""
        qe, ag, ca = t.queue_entries.c, t.agents.c, t.calls.c
        with self._read() as conn:
            row = conn.execute(
                sa.select(
                    sa.select(sa.func.max(qe.id)).scalar_subquery(),
                    sa.select(sa.func.max(qe.answered_at)).scalar_subquery(),
                    sa.select(sa.func.max(qe.ended_at)).scalar_subquery(),
                    sa.select(sa.func.max(ag.state_since)).scalar_subquery(),
                    sa.select(sa.func.max(ca.started_at)).scalar_subquery(),
                    sa.select(sa.func.count()).select_from(t.notes).scalar_subquery(),
                    *(sa.select(sa.func.count()).where(t.nodes.c.state == state).scalar_subquery()
                      for state in ("up", "draining")),
                )
            ).one()
            return tuple(row)
