"""SQLAlchemy Core tables of the store.

Times are integers: microseconds since the epoch, UTC. They compare identically in SQLite and
PostgreSQL, so the same store gives the same findings on both.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

# SQLite only aliases the rowid (cheap, monotonic) for exactly "INTEGER PRIMARY KEY".
SeqType = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "events",
    metadata,
    Column("ingest_seq", SeqType, primary_key=True, autoincrement=True),
    Column("event_id", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("order_id", Text, nullable=False),
    Column("order_bucket", Integer, nullable=False),  # crc32(order_id) % 1024: chunks, shards
    Column("hop", Text, nullable=False),
    Column("phase", Text, nullable=False),
    Column("occurred_at", BigInteger, nullable=False),
    Column("source_ref", Text, nullable=False, default=""),
    Column("trace_id", Text),
    Column("span_id", Text),
    Column("attributes", Text, nullable=False, default="{}"),
    Column("ingested_at", BigInteger, nullable=False),
    # the ids of other things the event is about, as JSON {"item": ["880004"]}; "" for none
    Column("objects", Text, nullable=False, server_default=""),
    # an event is the same event whatever its mapped values: fixing a mapping and reading the
    # source again stores nothing twice
    UniqueConstraint("source", "event_id", name="uq_events_identity"),
    Index("ix_events_order", "order_id"),
    Index("ix_events_occurred", "occurred_at"),
    Index(
        "ix_events_trace",
        "trace_id",
        sqlite_where=text("trace_id IS NOT NULL"),
        postgresql_where=text("trace_id IS NOT NULL"),
    ),
)

# object <-> order (link_kind "") and object <-> object of another kind, with the earliest event
# that showed the link; links hold for good, whichever event arrives first
links = Table(
    "links",
    metadata,
    Column("kind", Text, nullable=False),
    Column("object_id", Text, nullable=False),
    Column("link_kind", Text, nullable=False),
    Column("link_id", Text, nullable=False),
    Column("occurred_at", BigInteger, nullable=False),
    Column("source", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    PrimaryKeyConstraint("kind", "object_id", "link_kind", "link_id", name="pk_links"),
    Index("ix_links_target", "link_kind", "link_id"),
    Index("ix_links_occurred", "occurred_at"),
)

# which events name an object (kind, id): trace and partial loads find them without a scan
event_objects = Table(
    "event_objects",
    metadata,
    Column("kind", Text, nullable=False),
    Column("object_id", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    PrimaryKeyConstraint("kind", "object_id", "source", "event_id", name="pk_event_objects"),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("source", Text, nullable=False),
    Column("source_ref", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("digest", Text, nullable=False),
    Column("received_at", BigInteger, nullable=False),
    UniqueConstraint("source", "source_ref", "digest", name="uq_quarantine_record"),
    Index("ix_quarantine_received", "received_at"),
)

# PostgreSQL only (migration 0006): the (source, event_id) identity of events, which are
# partitioned by month there (a partitioned table's unique constraints must hold the partition
# key); filled by the insert path, kept in step by triggers on events (store/retention.py)
event_ids = Table(
    "event_ids",
    metadata,
    Column("source", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    PrimaryKeyConstraint("source", "event_id", name="pk_event_ids"),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("source", Text, nullable=False),
    Column(
        "key", Text, nullable=False
    ),  # "" for the source itself, else file path / topic:partition
    Column("position", Text, nullable=False, default="{}"),  # JSON
    Column("watermark", BigInteger),
    Column("updated_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("source", "key", name="pk_checkpoints"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("started_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger),
    Column("as_of", BigInteger, nullable=False),
    Column("mode", Text, nullable=False),  # full | incremental
    Column("shard", Text, nullable=False, default=""),
    Column("config_hash", Text, nullable=False, default=""),
    Column("max_ingest_seq", BigInteger, nullable=False, default=0),
    Column("orders", Integer, nullable=False, default=0),
    Column("events", Integer, nullable=False, default=0),
    Column("summary", Text, nullable=False, default="{}"),
    Column("status", Text, nullable=False, default="running"),
    Column("unlinked", Integer, nullable=False, server_default="0"),  # objects of no order
)

findings = Table(
    "findings",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("order_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("hop", Text, nullable=False),
    Column("from_hop", Text, nullable=False, default=""),
    Column("since", BigInteger, nullable=False),
    Column("detail", Text, nullable=False, default=""),
    Column("status", Text, nullable=False),  # new | open | resolved | expired
    Column("first_run", Integer, nullable=False),
    Column("last_run", Integer, nullable=False),
    Column("amount", Float),
    # "" except for an unlinked object's orphan finding: its "kind:id" (order_id is then "")
    Column("object", Text, nullable=False, server_default=""),
    Column("field", Text, nullable=False, server_default=""),  # a mismatch's attribute
    Column("objects", Text, nullable=False, server_default="[]"),  # JSON ["item:SKU-1", ...]
    Column("evidence", Text, nullable=False, server_default="{}"),  # JSON, detail's source
    UniqueConstraint(
        "order_id", "object", "kind", "hop", "from_hop", "field", name="uq_findings_identity"
    ),
    Index("ix_findings_status", "status", "kind"),
    Index("ix_findings_hop", "hop"),
    Index("ix_findings_order", "order_id"),
)

pending_orders = Table(
    "pending_orders",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("order_bucket", Integer, nullable=False),
    Column("due", BigInteger),
    Column("run_id", Integer, nullable=False),
)

incidents = Table(
    "incidents",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("run_id", Integer, nullable=False),
    Column("kind", Text, nullable=False),  # hop_silent | source_lagging
    Column("hop", Text, nullable=False),
    Column("since", BigInteger),
    Column("orders", Integer, nullable=False, default=0),
    Column("detail", Text, nullable=False, default=""),
    Index("ix_incidents_run", "run_id"),
)

# the outbox of [[notify]] targets: one row per (target, event, key) so each is sent once;
# pending rows are retried with backoff until the receiver takes them
notifications = Table(
    "notifications",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("target", Text, nullable=False),  # the [[notify]] name
    Column("event", Text, nullable=False),  # incident_started | incident_ended | new_findings
    Column("key", Text, nullable=False),  # what it is about: an incident's start, a run + kind
    Column("subject", Text, nullable=False),  # incident "shard|kind|hop", or a finding kind
    Column("run_id", Integer, nullable=False),  # the run that produced it
    Column("payload", Text, nullable=False),  # JSON: the event as it is sent
    Column("status", Text, nullable=False),  # pending | sent | skipped (not subscribed)
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("sent_at", BigInteger),
    Column("last_error", Text, nullable=False, server_default=""),
    UniqueConstraint("target", "event", "key", name="uq_notifications_identity"),
    Index("ix_notifications_status", "status", "target", "next_attempt_at"),
)
