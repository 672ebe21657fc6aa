"""Console sign-in hardening: a session version per user (bumped to revoke sessions) and failed attempts.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add users.session_version and the auth_failures table."""
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("session_version", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "auth_failures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_auth_failures_key", "auth_failures", ["key"])
    op.create_index("ix_auth_failures_at", "auth_failures", ["at"])


def downgrade() -> None:
    """Undo schema version 2."""
    op.drop_table("auth_failures")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("session_version")
