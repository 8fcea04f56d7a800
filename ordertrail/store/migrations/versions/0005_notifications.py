"""The notifications outbox: what each [[notify]] target was (or is still to be) told.

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

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", Seq, primary_key=True, autoincrement=True),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger, nullable=False),
        sa.Column("sent_at", sa.BigInteger),
        sa.Column("last_error", sa.Text, nullable=False, server_default=""),
        sa.UniqueConstraint("target", "event", "key", name="uq_notifications_identity"),
    )
    op.create_index(
        "ix_notifications_status", "notifications", ["status", "target", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_status", "notifications")
    op.drop_table("notifications")
