"""Retention: indexes prune and the incremental engine read by time (links, quarantine); on
PostgreSQL, ``events`` partitioned by month of occurred_at, its identity held by ``event_ids``.

A partitioned table's unique constraints must include the partition key, so on PostgreSQL the
(source, event_id) identity moves to ``event_ids`` (filled by the insert path; triggers delete
and rename identities with their events), and ``uq_events_identity`` becomes
(source, event_id, occurred_at): the per-month lookup index. The primary key becomes
(ingest_seq, occurred_at). An existing store is converted in place: every event is copied into
its month's partition, in the migration's one transaction. SQLite keeps a plain table.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COLUMNS = (
    "ingest_seq, event_id, source, order_id, order_bucket, hop, phase, occurred_at, source_ref, "
    "trace_id, span_id, attributes, ingested_at, objects"
)

_TRIGGERS = """
CREATE FUNCTION ordertrail_forget_event_ids() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM event_ids i USING gone g WHERE i.source = g.source AND i.event_id = g.event_id;
    RETURN NULL;
END $$;
CREATE FUNCTION ordertrail_rename_event_ids() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM event_ids i USING gone g WHERE i.source = g.source AND i.event_id = g.event_id;
    INSERT INTO event_ids (source, event_id) SELECT source, event_id FROM came
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER events_forget_ids AFTER DELETE ON events REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION ordertrail_forget_event_ids();
CREATE TRIGGER events_rename_ids AFTER UPDATE ON events REFERENCING OLD TABLE AS gone
    NEW TABLE AS came FOR EACH STATEMENT EXECUTE FUNCTION ordertrail_rename_event_ids();
"""


def upgrade() -> None:
    op.create_index("ix_links_occurred", "links", ["occurred_at"])
    op.create_index("ix_quarantine_received", "quarantine", ["received_at"])
    if op.get_bind().dialect.name == "postgresql":
        _partition_events()


def _partition_events() -> None:
    from ordertrail.store.retention import (
        PARTITION_COMMENT,
        month_range,
        months_of,
        partition_name,
    )

    bind = op.get_bind()
    run = bind.exec_driver_sql
    if run("SELECT relkind FROM pg_class WHERE oid = to_regclass('events')").scalar() == "p":
        return
    for ix in ("ix_events_order", "ix_events_occurred", "ix_events_trace"):
        run(f"DROP INDEX IF EXISTS {ix}")
    run("ALTER TABLE events RENAME TO events_before_0006")
    run("ALTER TABLE events_before_0006 DROP CONSTRAINT IF EXISTS uq_events_identity")
    run("ALTER TABLE events_before_0006 DROP CONSTRAINT IF EXISTS events_pkey")
    seq = run("SELECT pg_get_serial_sequence('events_before_0006', 'ingest_seq')").scalar()
    run(
        f"""CREATE TABLE events (
            ingest_seq bigint NOT NULL DEFAULT nextval('{seq}'::regclass),
            event_id text NOT NULL,
            source text NOT NULL,
            order_id text NOT NULL,
            order_bucket integer NOT NULL,
            hop text NOT NULL,
            phase text NOT NULL,
            occurred_at bigint NOT NULL,
            source_ref text NOT NULL,
            trace_id text,
            span_id text,
            attributes text NOT NULL,
            ingested_at bigint NOT NULL,
            objects text NOT NULL DEFAULT ''
        ) PARTITION BY RANGE (occurred_at)"""
    )
    run(f"ALTER SEQUENCE {seq} OWNED BY events.ingest_seq")
    days = [
        int(d) * 86_400_000_000
        for (d,) in run(
            "SELECT DISTINCT floor(occurred_at / 86400000000.0)::bigint FROM events_before_0006"
        ).all()
    ]
    for month in sorted(months_of(days)):
        lo, hi = month_range(month)
        name = partition_name(month)
        run(f'CREATE TABLE "{name}" PARTITION OF events FOR VALUES FROM ({lo}) TO ({hi})')
        run(f"COMMENT ON TABLE \"{name}\" IS '{PARTITION_COMMENT}'")
    run(f"INSERT INTO events ({_COLUMNS}) SELECT {_COLUMNS} FROM events_before_0006")
    run(
        "CREATE TABLE event_ids (source text NOT NULL, event_id text NOT NULL, "
        "CONSTRAINT pk_event_ids PRIMARY KEY (source, event_id))"
    )
    run("INSERT INTO event_ids (source, event_id) SELECT source, event_id FROM events_before_0006")
    run("DROP TABLE events_before_0006")
    run("ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (ingest_seq, occurred_at)")
    run(
        "ALTER TABLE events ADD CONSTRAINT uq_events_identity "
        "UNIQUE (source, event_id, occurred_at)"
    )
    run("CREATE INDEX ix_events_order ON events (order_id)")
    run("CREATE INDEX ix_events_occurred ON events (occurred_at)")
    run("CREATE INDEX ix_events_trace ON events (trace_id) WHERE trace_id IS NOT NULL")
    run(_TRIGGERS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _unpartition_events()
    op.drop_index("ix_quarantine_received", "quarantine")
    op.drop_index("ix_links_occurred", "links")


def _unpartition_events() -> None:
    bind = op.get_bind()
    run = bind.exec_driver_sql
    if run("SELECT relkind FROM pg_class WHERE oid = to_regclass('events')").scalar() != "p":
        return
    seq = run("SELECT pg_get_serial_sequence('events', 'ingest_seq')").scalar()
    run("ALTER TABLE events RENAME TO events_partitioned")
    for ix in ("ix_events_order", "ix_events_occurred", "ix_events_trace"):
        run(f"DROP INDEX IF EXISTS {ix}")
    run("ALTER TABLE events_partitioned DROP CONSTRAINT IF EXISTS uq_events_identity")
    run("ALTER TABLE events_partitioned DROP CONSTRAINT IF EXISTS events_pkey")
    run(
        f"""CREATE TABLE events (
            ingest_seq bigint NOT NULL DEFAULT nextval('{seq}'::regclass),
            event_id text NOT NULL, source text NOT NULL, order_id text NOT NULL,
            order_bucket integer NOT NULL, hop text NOT NULL, phase text NOT NULL,
            occurred_at bigint NOT NULL, source_ref text NOT NULL, trace_id text, span_id text,
            attributes text NOT NULL, ingested_at bigint NOT NULL, objects text NOT NULL DEFAULT ''
        )"""
    )
    run(f"ALTER SEQUENCE {seq} OWNED BY events.ingest_seq")
    run(f"INSERT INTO events ({_COLUMNS}) SELECT {_COLUMNS} FROM events_partitioned")
    run("DROP TABLE events_partitioned CASCADE")
    run("DROP TABLE event_ids")
    run("DROP FUNCTION ordertrail_forget_event_ids()")
    run("DROP FUNCTION ordertrail_rename_event_ids()")
    run("ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (ingest_seq)")
    run("ALTER TABLE events ADD CONSTRAINT uq_events_identity UNIQUE (source, event_id)")
    run("CREATE INDEX ix_events_order ON events (order_id)")
    run("CREATE INDEX ix_events_occurred ON events (occurred_at)")
    run("CREATE INDEX ix_events_trace ON events (trace_id) WHERE trace_id IS NOT NULL")
