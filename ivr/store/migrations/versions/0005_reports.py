"""Reports: survey scores beside the call (``calls.csat``, ``calls.nps``, readable by SQL aggregates while the
context stays encrypted), when the same number next called about the same intent (``calls.repeat_at``, for
first-contact resolution without a look-up per call), the per-day figures of past days (``report_days``, so a
trend is read, not recomputed) and the indexes the report queries need (docs/reports.md).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CALLS_REPORT = ["started_at", "ended_at", "outcome", "queue", "intent", "flow", "caller", "csat", "nps", "repeat_at",
                "agent"]
ENTRIES_REPORT = ["enqueued_at", "queue", "state", "answered_at", "ended_at", "agent", "call_id"]


def upgrade() -> None:
    """Add calls.csat, calls.nps and the report indexes."""
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("csat", sa.Float))
        batch.add_column(sa.Column("nps", sa.Float))
        batch.add_column(sa.Column("repeat_at", sa.Float))
    op.create_index("ix_calls_caller_intent", "calls", ["caller", "intent", "started_at"])
    op.execute(
        "UPDATE calls SET repeat_at = (SELECT MIN(later.started_at) FROM calls AS later WHERE later.caller = "
        "calls.caller AND later.intent = calls.intent AND later.started_at > calls.started_at) "
        "WHERE caller <> '' AND intent IS NOT NULL"
    )
    op.create_index("ix_calls_report", "calls", CALLS_REPORT)
    op.create_index("ix_queue_entries_report", "queue_entries", ENTRIES_REPORT)
    op.create_index("ix_queue_entries_agent", "queue_entries", ["agent", "answered_at"])
    op.create_table(
        "report_days",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("options", sa.String(64), primary_key=True),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("computed_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    """Drop them again."""
    op.drop_table("report_days")
    op.drop_index("ix_queue_entries_agent", "queue_entries")
    op.drop_index("ix_queue_entries_report", "queue_entries")
    op.drop_index("ix_calls_caller_intent", "calls")
    op.drop_index("ix_calls_report", "calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("repeat_at")
        batch.drop_column("nps")
        batch.drop_column("csat")
