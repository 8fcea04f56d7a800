"""Initial schema: events, quarantine, checkpoints, runs, findings, incidents.

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

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("ingest_seq", Seq, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("order_bucket", sa.Integer, nullable=False),
        sa.Column("hop", sa.Text, nullable=False),
        sa.Column("phase", sa.Text, nullable=False),
        sa.Column("occurred_at", sa.BigInteger, nullable=False),
        sa.Column("source_ref", sa.Text, nullable=False),
        sa.Column("trace_id", sa.Text),
        sa.Column("span_id", sa.Text),
        sa.Column("attributes", sa.Text, nullable=False),
        sa.Column("ingested_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("order_id", "source", "event_id", name="uq_events_identity"),
    )
    op.create_index("ix_events_occurred", "events", ["occurred_at"])
    op.create_index(
        "ix_events_trace",
        "events",
        ["trace_id"],
        sqlite_where=sa.text("trace_id IS NOT NULL"),
        postgresql_where=sa.text("trace_id IS NOT NULL"),
    )
    op.create_table(
        "quarantine",
        sa.Column("id", Seq, primary_key=True, autoincrement=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("source_ref", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("raw", sa.Text, nullable=False),
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("received_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("source", "source_ref", "digest", name="uq_quarantine_record"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("position", sa.Text, nullable=False),
        sa.Column("watermark", sa.BigInteger),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("source", "key", name="pk_checkpoints"),
    )
    op.create_table(
        "runs",
        sa.Column("id", Seq, primary_key=True, autoincrement=True),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("finished_at", sa.BigInteger),
        sa.Column("as_of", sa.BigInteger, nullable=False),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("shard", sa.Text, nullable=False),
        sa.Column("config_hash", sa.Text, nullable=False),
        sa.Column("max_ingest_seq", sa.BigInteger, nullable=False),
        sa.Column("orders", sa.Integer, nullable=False),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
    )
    op.create_table(
        "findings",
        sa.Column("id", Seq, primary_key=True, autoincrement=True),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("hop", sa.Text, nullable=False),
        sa.Column("from_hop", sa.Text, nullable=False),
        sa.Column("since", sa.BigInteger, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("first_run", sa.Integer, nullable=False),
        sa.Column("last_run", sa.Integer, nullable=False),
        sa.Column("amount", sa.Float),
        sa.UniqueConstraint("order_id", "kind", "hop", "from_hop", name="uq_findings_identity"),
    )
    op.create_index("ix_findings_status", "findings", ["status", "kind"])
    op.create_index("ix_findings_hop", "findings", ["hop"])
    op.create_table(
        "incidents",
        sa.Column("id", Seq, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("hop", sa.Text, nullable=False),
        sa.Column("since", sa.BigInteger),
        sa.Column("orders", sa.Integer, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_incidents_run", "incidents", ["run_id"])


def downgrade() -> None:
    for t in ("incidents", "findings", "runs", "checkpoints", "quarantine", "events"):
        op.drop_table(t)
