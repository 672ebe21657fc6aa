"""Callbacks (virtual hold): a queue entry can wait for a callback to a number, with its attempts.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_COLUMNS = ("callback_number", "callback_requested_at", "callback_attempts", "callback_due")


def upgrade() -> None:
    """Add the callback columns to queue_entries."""
    with op.batch_alter_table("queue_entries") as batch:
        batch.add_column(sa.Column("callback_number", sa.String(256)))
        batch.add_column(sa.Column("callback_requested_at", sa.Float))
        batch.add_column(sa.Column("callback_attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("callback_due", sa.Float))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("queue_entries") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
