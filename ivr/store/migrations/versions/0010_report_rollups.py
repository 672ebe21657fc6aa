"""Report roll-ups: the report's sums per hour and per day (``report_rollups``), and the changes per 15-minute
slot of call start / queue join time: triggers add a row to ``report_changes`` in the same transaction as every
write a figure depends on (insert only: writers never wait on each other), and readers fold them into counters
(``report_marks``), so a roll-up knows when it is stale (docs/reports.md, Speed). Replaces ``report_days``,
whose kept days missed later repeat calls and surveys.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

SLOT = 900
"""Seconds per marked slot: every local midnight and hour falls on one (time zones are 15-minute multiples)."""
CALL_COLUMNS = "started_at, caller, flow, ended_at, outcome, intent, queue, agent, csat, nps, repeat_at"
ENTRY_COLUMNS = "call_id, queue, state, enqueued_at, answered_at, ended_at, agent"
FIRST_JOIN = "(SELECT MIN(enqueued_at) FROM queue_entries WHERE call_id = {row}.call_id)"


def _sqlite_mark(at: str) -> str:
    return f"INSERT INTO report_changes (slot) SELECT CAST(({at}) / {SLOT} AS INTEGER) WHERE ({at}) IS NOT NULL;"


def _sqlite_triggers() -> list[str]:
    out = []
    for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
        calls = f"UPDATE OF {CALL_COLUMNS}" if event == "UPDATE" else event
        entries = f"UPDATE OF {ENTRY_COLUMNS}" if event == "UPDATE" else event
        out.append(f"CREATE TRIGGER report_mark_calls_{event.lower()} AFTER {calls} ON calls BEGIN "
                   f"{_sqlite_mark(f'{row}.started_at')} END")  # fmt: skip
        out.append(f"CREATE TRIGGER report_mark_entries_{event.lower()} AFTER {entries} ON queue_entries BEGIN "
                   f"{_sqlite_mark(f'{row}.enqueued_at')}{_sqlite_mark(FIRST_JOIN.format(row=row))} END")  # fmt: skip
    # a row moved in time (a call started before its start was recorded) leaves its old slot changed too
    out.append("CREATE TRIGGER report_mark_calls_moved AFTER UPDATE OF started_at ON calls "
               f"WHEN OLD.started_at IS NOT NEW.started_at BEGIN {_sqlite_mark('OLD.started_at')} END")
    out.append("CREATE TRIGGER report_mark_entries_moved AFTER UPDATE OF enqueued_at, call_id ON queue_entries "
               "WHEN OLD.enqueued_at IS NOT NEW.enqueued_at OR OLD.call_id IS NOT NEW.call_id BEGIN "
               f"{_sqlite_mark('OLD.enqueued_at')}{_sqlite_mark(FIRST_JOIN.format(row='OLD'))} END")
    return out


POSTGRES = [
    f"""CREATE FUNCTION ivr_report_mark(at double precision) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        IF at IS NOT NULL THEN
            INSERT INTO report_changes (slot) VALUES (floor(at / {SLOT})::bigint);
        END IF;
    END $$""",
    """CREATE FUNCTION ivr_report_mark_call() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN PERFORM ivr_report_mark(OLD.started_at); END IF;
        IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
        IF TG_OP = 'INSERT' OR OLD.started_at IS DISTINCT FROM NEW.started_at THEN
            PERFORM ivr_report_mark(NEW.started_at);
        END IF;
        RETURN NEW;
    END $$""",
    """CREATE FUNCTION ivr_report_mark_entry() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            PERFORM ivr_report_mark(OLD.enqueued_at);
            PERFORM ivr_report_mark((SELECT MIN(enqueued_at) FROM queue_entries WHERE call_id = OLD.call_id));
        END IF;
        IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
        IF TG_OP = 'INSERT' OR OLD.enqueued_at IS DISTINCT FROM NEW.enqueued_at OR OLD.call_id <> NEW.call_id THEN
            PERFORM ivr_report_mark(NEW.enqueued_at);
            PERFORM ivr_report_mark((SELECT MIN(enqueued_at) FROM queue_entries WHERE call_id = NEW.call_id));
        END IF;
        RETURN NEW;
    END $$""",
    f"CREATE TRIGGER report_mark_calls AFTER INSERT OR DELETE OR UPDATE OF {CALL_COLUMNS} ON calls "
    "FOR EACH ROW EXECUTE PROCEDURE ivr_report_mark_call()",
    f"CREATE TRIGGER report_mark_entries AFTER INSERT OR DELETE OR UPDATE OF {ENTRY_COLUMNS} ON queue_entries "
    "FOR EACH ROW EXECUTE PROCEDURE ivr_report_mark_entry()",
]


def upgrade() -> None:
    """Create report_marks, report_changes, report_rollups and the triggers; drop report_days (roll-ups are
    built on use)."""
    op.create_table(
        "report_marks",
        sa.Column("slot", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "report_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("slot", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_report_changes_slot", "report_changes", ["slot"])
    op.create_table(
        "report_rollups",
        sa.Column("period", sa.String(24), primary_key=True),
        sa.Column("options", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("waits", sa.LargeBinary, nullable=False),
        sa.Column("computed_at", sa.Float, nullable=False),
    )
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in _sqlite_triggers() if sqlite else POSTGRES:
        op.execute(statement)
    op.drop_table("report_days")


def downgrade() -> None:
    """Drop them (report_days comes back empty)."""
    if op.get_bind().dialect.name == "sqlite":
        for statement in _sqlite_triggers():
            op.execute("DROP TRIGGER " + statement.split()[2])
    else:
        op.execute("DROP TRIGGER report_mark_entries ON queue_entries")
        op.execute("DROP TRIGGER report_mark_calls ON calls")
        for function in ("ivr_report_mark_entry()", "ivr_report_mark_call()", "ivr_report_mark(double precision)"):
            op.execute(f"DROP FUNCTION {function}")
    op.drop_table("report_rollups")
    op.drop_index("ix_report_changes_slot", "report_changes")
    op.drop_table("report_changes")
    op.drop_table("report_marks")
    op.create_table(
        "report_days",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("options", sa.String(64), primary_key=True),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("computed_at", sa.Float, nullable=False),
    )
