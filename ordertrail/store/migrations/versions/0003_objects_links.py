"""Objects and links (v2): events name objects, links tie objects to orders and to each other;
an event's identity is (source, event_id); findings carry objects, field and evidence.

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
    with op.batch_alter_table("events") as b:
        # the ids of other things the event is about, as JSON {"item": ["880004"]}; "" for none
        b.add_column(sa.Column("objects", sa.Text, nullable=False, server_default=""))
        # an event is the same event whatever its mapped values: (source, event_id)
        b.drop_constraint("uq_events_identity", type_="unique")
        b.create_unique_constraint("uq_events_identity", ["source", "event_id"])
    op.create_index("ix_events_order", "events", ["order_id"])
    op.create_table(
        "links",
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("object_id", sa.Text, nullable=False),
        sa.Column("link_kind", sa.Text, nullable=False),  # "" = an order
        sa.Column("link_id", sa.Text, nullable=False),
        sa.Column("occurred_at", sa.BigInteger, nullable=False),  # the earliest event showing it
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("kind", "object_id", "link_kind", "link_id", name="pk_links"),
    )
    op.create_index("ix_links_target", "links", ["link_kind", "link_id"])
    # which events name an object: trace and partial loads find them without a scan
    op.create_table(
        "event_objects",
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("object_id", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("kind", "object_id", "source", "event_id", name="pk_event_objects"),
    )
    with op.batch_alter_table("findings") as b:
        b.add_column(sa.Column("object", sa.Text, nullable=False, server_default=""))
        b.add_column(sa.Column("field", sa.Text, nullable=False, server_default=""))
        b.add_column(sa.Column("objects", sa.Text, nullable=False, server_default="[]"))
        b.add_column(sa.Column("evidence", sa.Text, nullable=False, server_default="{}"))
        b.drop_constraint("uq_findings_identity", type_="unique")
        b.create_unique_constraint(
            "uq_findings_identity", ["order_id", "object", "kind", "hop", "from_hop", "field"]
        )


def downgrade() -> None:
    with op.batch_alter_table("findings") as b:
        b.drop_constraint("uq_findings_identity", type_="unique")
        b.create_unique_constraint("uq_findings_identity", ["order_id", "kind", "hop", "from_hop"])
        for c in ("evidence", "objects", "field", "object"):
            b.drop_column(c)
    op.drop_table("event_objects")
    op.drop_index("ix_links_target", "links")
    op.drop_table("links")
    op.drop_index("ix_events_order", "events")
    with op.batch_alter_table("events") as b:
        b.drop_constraint("uq_events_identity", type_="unique")
        b.create_unique_constraint("uq_events_identity", ["order_id", "source", "event_id"])
        b.drop_column("objects")
