"""Initial schema: calls, turns, events, notes, users, API tokens, agents, queue entries.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create every table and index of schema version 1."""
    op.create_table(
        "calls",
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
    )
    for name in ("turns", "events", "notes"):
        columns: list[sa.Column[object]] = [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("call_id", sa.String(128), sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False),
            sa.Column("at", sa.Float, nullable=False),
        ]
        if name == "turns":
            columns += [
                sa.Column("speaker", sa.String(16), nullable=False),
                sa.Column("text", sa.Text, nullable=False),
                sa.Column("intent", sa.String(128)),
                sa.Column("confidence", sa.Float),
            ]
        elif name == "events":
            columns += [sa.Column("kind", sa.String(64), nullable=False), sa.Column("data", sa.JSON, nullable=False)]
        else:
            columns += [
                sa.Column("agent", sa.String(128), nullable=False),
                sa.Column("disposition", sa.String(64), nullable=False, server_default=""),
                sa.Column("text", sa.Text, nullable=False),
            ]
        op.create_table(name, *columns)
        op.create_index(f"ix_{name}_call_id", name, ["call_id"])
    op.create_index("ix_notes_agent", "notes", ["agent"])
    op.create_index("ix_calls_started_at", "calls", ["started_at"])
    op.create_table(
        "users",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("token_hash", sa.String(128), primary_key=True),
        sa.Column("user_name", sa.String(128), sa.ForeignKey("users.name", ondelete="CASCADE"), nullable=False),
        sa.Column("label", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "agents",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False, server_default=""),
        sa.Column("state_since", sa.Float, nullable=False),
        sa.Column("last_call_end", sa.Float),
        sa.Column("missed_offers", sa.Integer, nullable=False, server_default="0"),
        sa.Column("call_id", sa.String(128)),
    )
    op.create_table(
        "queue_entries",
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
    )
    op.create_index("ix_queue_entries_state", "queue_entries", ["state"])
    op.create_index("ix_queue_entries_call_id", "queue_entries", ["call_id"])
    op.create_index("ix_queue_entries_enqueued_at", "queue_entries", ["enqueued_at"])


def downgrade() -> None:
    """Drop everything schema version 1 created."""
    for name in ("queue_entries", "agents", "api_tokens", "users", "notes", "events", "turns", "calls"):
        op.drop_table(name)
