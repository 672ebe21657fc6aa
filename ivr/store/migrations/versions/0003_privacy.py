"""Privacy: turns keep their text encrypted in ``sealed`` (``text`` holds it with digits starred, for
search); calls remember when their transcripts and contexts were erased.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add turns.sealed and calls.erased_at."""
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("sealed", sa.Text))
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("erased_at", sa.Float))


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("erased_at")
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("sealed")
