"""Events are looked up by kind over a time range (unanswered questions, agent history): index them.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ix_events_kind_at."""
    op.create_index("ix_events_kind_at", "events", ["kind", "at"])


def downgrade() -> None:
    """Drop it."""
    op.drop_index("ix_events_kind_at", "events")
