"""Orders still in flight after a run, so an incremental run knows to look at them again.

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
    op.create_table(
        "pending_orders",
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("order_bucket", sa.Integer, nullable=False),
        sa.Column("due", sa.BigInteger),
        sa.Column("run_id", sa.Integer, nullable=False),
    )
    op.create_index("ix_findings_order", "findings", ["order_id"])


def downgrade() -> None:
    op.drop_index("ix_findings_order", "findings")
    op.drop_table("pending_orders")
