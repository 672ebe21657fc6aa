"""Several nodes on one database: calls remember the node that holds them; the nodes table (heartbeats),
and the cluster ACD's command and message tables (see ``ivr.queue.cluster``).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add calls.node, nodes, acd_commands and acd_messages."""
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("node", sa.String(64), nullable=False, server_default=""))
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("seen_at", sa.Float, nullable=False),
    )
    for name in ("acd_commands", "acd_messages"):
        op.create_table(
            name,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("node", sa.String(64), nullable=False),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("payload", sa.Text, nullable=False),
            sa.Column("at", sa.Float, nullable=False),
        )
        op.create_index(f"ix_{name}_node", name, ["node"])
    op.create_index("ix_calls_node", "calls", ["node"])


def downgrade() -> None:
    """Drop them again."""
    op.drop_index("ix_calls_node", "calls")
    for name in ("acd_messages", "acd_commands"):
        op.drop_index(f"ix_{name}_node", name)
        op.drop_table(name)
    op.drop_table("nodes")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("node")
