"""Recordings: call recordings, voicemail and flow messages (sealed files), with voicemail follow-up.

Revision ID: 0007
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the recordings table."""
    op.create_table(
        "recordings",
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
    op.create_index("ix_recordings_call_id", "recordings", ["call_id"])
    op.create_index("ix_recordings_kind_at", "recordings", ["kind", "at"])


def downgrade() -> None:
    """Drop it again (the files stay; ``ivr calls erase`` before downgrading deletes them)."""
    op.drop_index("ix_recordings_kind_at", "recordings")
    op.drop_index("ix_recordings_call_id", "recordings")
    op.drop_table("recordings")
