"""The store's tables (SQLAlchemy Core). Migrations in ``migrations/versions`` create exactly these."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

calls = sa.Table(
    "calls",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("caller", sa.String(255), nullable=False, server_default=""),
    sa.Column("called", sa.String(255), nullable=False, server_default=""),
    sa.Column("flow", sa.String(255), nullable=False, server_default=""),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("answered_at", sa.Float),
    sa.Column("ended_at", sa.Float),
    sa.Column("outcome", sa.String(64)),
    sa.Column("intent", sa.String(128)),
    sa.Column("queue", sa.String(128)),
    sa.Column("agent", sa.String(128)),
    sa.Column("context", sa.JSON, nullable=False),
    sa.Column("erased_at", sa.Float),
    sa.Column("node", sa.String(64), nullable=False, server_default=""),
    sa.Column("csat", sa.Float),  # 1-5, from a survey (ivr.store.survey), plain so reports can average it
    sa.Column("nps", sa.Float),  # 0-10 "would you recommend"
    sa.Column("repeat_at", sa.Float),  # when the same number next called about the same intent (FCR)
)

turns = sa.Table(
    "turns",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String(128), sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("speaker", sa.String(16), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("intent", sa.String(128)),
    sa.Column("confidence", sa.Float),
    sa.Column("sealed", sa.Text),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String(128), sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
)

notes = sa.Table(
    "notes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String(128), sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False),
    sa.Column("agent", sa.String(128), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("disposition", sa.String(64), nullable=False, server_default=""),
    sa.Column("text", sa.Text, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("session_version", sa.Integer, nullable=False, server_default="0"),
)

auth_failures = sa.Table(
    "auth_failures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("token_hash", sa.String(128), primary_key=True),
    sa.Column("user_name", sa.String(128), sa.ForeignKey("users.name", ondelete="CASCADE"), nullable=False),
    sa.Column("label", sa.String(128), nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(255), nullable=False, server_default=""),
    sa.Column("state_since", sa.Float, nullable=False),
    sa.Column("last_call_end", sa.Float),
    sa.Column("missed_offers", sa.Integer, nullable=False, server_default="0"),
    sa.Column("call_id", sa.String(128)),
)

queue_entries = sa.Table(
    "queue_entries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String(128), sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False),
    sa.Column("queue", sa.String(128), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("enqueued_at", sa.Float, nullable=False),
    sa.Column("answered_at", sa.Float),
    sa.Column("ended_at", sa.Float),
    sa.Column("agent", sa.String(128)),
    sa.Column("outcome", sa.String(64)),
    sa.Column("context", sa.JSON, nullable=False),
    sa.Column("callback_number", sa.String(256)),
    sa.Column("callback_requested_at", sa.Float),
    sa.Column("callback_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("callback_due", sa.Float),
)

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("seen_at", sa.Float, nullable=False),
)

report_marks = sa.Table(
    "report_marks",
    metadata,
    sa.Column("slot", sa.BigInteger, primary_key=True, autoincrement=False),  # floor(time / 900)
    sa.Column("version", sa.BigInteger, nullable=False),
)
"""Changes per 15 minutes of call start / queue join time, folded from ``report_changes``: a period's counters
plus its unfolded changes only ever grow, and a roll-up made at a lower sum is stale."""

report_changes = sa.Table(
    "report_changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("slot", sa.BigInteger, nullable=False),
)
"""One row per write a report figure depends on, added by triggers (migration 0010) in the writer's transaction
(insert only: no writer waits on another); ``ivr.reports.rollups`` folds them into ``report_marks``."""

report_rollups = sa.Table(
    "report_rollups",
    metadata,
    sa.Column("period", sa.String(24), primary_key=True),  # "YYYY-MM-DD" or "h<UNIX start>" for an hour
    sa.Column("options", sa.String(64), primary_key=True),  # ReportOptions.key()
    sa.Column("version", sa.BigInteger, nullable=False),  # the period's change count it was made at
    sa.Column("data", sa.Text, nullable=False),  # the period's sums (JSON, ivr.reports.rollups.Sums)
    sa.Column("waits", sa.LargeBinary, nullable=False),  # its answered calls' waits, sorted (float64)
    sa.Column("computed_at", sa.Float, nullable=False),
)
"""The report's sums per hour and per day (ivr.reports.rollups), read instead of scanning the calls."""


recordings = sa.Table(
    "recordings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String(128), sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("duration", sa.Float, nullable=False, server_default="0"),
    sa.Column("queue", sa.String(128), nullable=False, server_default=""),
    sa.Column("called_back_at", sa.Float),
    sa.Column("called_back_by", sa.String(128), nullable=False, server_default=""),
    sa.Column("notes", sa.Text, nullable=False, server_default=""),
)
"""Call recordings ('call'), voicemail ('voicemail') and flow ``record`` messages ('message'): sealed files
(see ``ivr.store.sealed_audio``); voicemail is worked through in the console (called back, notes)."""


def _mailbox(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )


acd_commands = _mailbox("acd_commands")
"""Requests of any node to the cluster's ACD leader (see ivr.queue.cluster)."""
acd_messages = _mailbox("acd_messages")
"""The leader's offers, cancels, queue updates and replies to one node."""

INDEXES = [
    sa.Index("ix_calls_started_at", calls.c.started_at),
    sa.Index("ix_turns_call_id", turns.c.call_id),
    sa.Index("ix_events_call_id", events.c.call_id),
    sa.Index("ix_events_kind_at", events.c.kind, events.c.at),
    sa.Index("ix_notes_call_id", notes.c.call_id),
    sa.Index("ix_notes_agent", notes.c.agent),
    sa.Index("ix_queue_entries_state", queue_entries.c.state),
    sa.Index("ix_queue_entries_call_id", queue_entries.c.call_id),
    sa.Index("ix_queue_entries_enqueued_at", queue_entries.c.enqueued_at),
    sa.Index("ix_auth_failures_key", auth_failures.c.key),
    sa.Index("ix_auth_failures_at", auth_failures.c.at),
    sa.Index("ix_calls_report", *(calls.c[n] for n in ("started_at", "ended_at", "outcome", "queue", "intent",
                                                       "flow", "caller", "csat", "nps", "repeat_at",
                                                       "agent"))),
    sa.Index("ix_calls_caller_intent", calls.c.caller, calls.c.intent, calls.c.started_at),
    sa.Index("ix_queue_entries_report", *(queue_entries.c[n] for n in ("enqueued_at", "queue", "state",
                                                                       "answered_at", "ended_at", "agent", "call_id"))),
    sa.Index("ix_queue_entries_agent", queue_entries.c.agent, queue_entries.c.answered_at),
    sa.Index("ix_recordings_call_id", recordings.c.call_id),
    sa.Index("ix_recordings_kind_at", recordings.c.kind, recordings.c.at),
    sa.Index("ix_report_changes_slot", report_changes.c.slot),
]
