"""Idempotent bulk writes: a batch of events, quarantine rows and checkpoints in one transaction.

A redelivered event (same source and event_id) is a no-op and is counted as such; a quarantine
row is keyed by (source, source_ref, digest of the raw record) so a replay adds nothing either.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite

from ordertrail.errors import StoreError
from ordertrail.schemas.event import OrderEvent, QuarantineRecord
from ordertrail.store import tables as t

EVENT_COLUMNS = (
    "event_id",
    "source",
    "order_id",
    "order_bucket",
    "hop",
    "phase",
    "occurred_at",
    "source_ref",
    "trace_id",
    "span_id",
    "attributes",
    "ingested_at",
    "objects",
)


@dataclass(slots=True)
class Checkpoint:
    """How far a source (key "") or one of its parts (a file, a partition) has been read."""

    source: str
    key: str = ""
    position: dict[str, Any] = field(default_factory=dict)
    watermark: int | None = None


@dataclass(slots=True)
class WriteResult:
    """What one or more batches did: stored + redelivered = events offered."""

    stored: int = 0
    redelivered: int = 0
    quarantined: int = 0
    withdrawn: int = 0  # quarantine rows superseded by the batch's records (see Supersede)
    replaced: int = 0  # events deleted to be stored anew (--replace)
    removed: int = 0  # events deleted because a file read again no longer gives them

    def __iadd__(self, other: WriteResult) -> WriteResult:
        self.stored += other.stored
        self.redelivered += other.redelivered
        self.quarantined += other.quarantined
        self.withdrawn += other.withdrawn
        self.replaced += other.replaced
        self.removed += other.removed
        return self


BUCKETS = 1024


def order_bucket(order_id: str) -> int:
    """Stable hash bucket of an order (0..1023): reconcile chunks and shards are bucket sets."""
    return zlib.crc32(order_id.encode("utf-8", "surrogatepass")) & (BUCKETS - 1)


def now_us() -> int:
    return time.time_ns() // 1000


def make_row(
    event_id: str, source: str, order_id: str, hop: str, phase: str, occurred_at: int,
    source_ref: str, trace_id: str | None, span_id: str | None, attributes: dict[str, Any],
    ingested_at: int, objects: dict[str, list[str]] | None = None,
) -> tuple[Any, ...]:  # fmt: skip
    """One ``events`` row in EVENT_COLUMNS order: the single place that lays a row out."""
    return (
        event_id, source, order_id, order_bucket(order_id), hop, phase, occurred_at, source_ref,
        trace_id, span_id, orjson.dumps(attributes).decode() if attributes else "{}", ingested_at,
        orjson.dumps(objects).decode() if objects else "",
    )  # fmt: skip


# positions in an events row, for the link builder
_EID, _SRC, _OID, _T, _OBJ = 0, 1, 2, 6, 12


def event_row(e: OrderEvent, ingested_at: int) -> tuple[Any, ...]:
    return make_row(e.event_id, e.source, e.order_id, e.hop, e.phase, e.occurred_at, e.source_ref,
                    e.trace_id, e.span_id, e.attributes, ingested_at, e.objects)  # fmt: skip


LinkKey = tuple[str, str, str, str]  # kind, object_id, link_kind ("" = order), link_id


def link_rows(
    rows: Sequence[tuple[Any, ...]],
) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, str, str]]]:
    """The links the events of ``rows`` show — each object with the event's order, and with the
    event's objects of other kinds (both ways), per link the earliest (time, source, event id) —
    and the (kind, object id, source, event id) mentions."""
    best: dict[LinkKey, tuple[int, str, str]] = {}
    mentions: list[tuple[str, str, str, str]] = []

    def add(key: LinkKey, ev: tuple[int, str, str]) -> None:
        cur = best.get(key)
        if cur is None or ev < cur:
            best[key] = ev

    for r in rows:
        if not r[_OBJ]:
            continue
        objects: dict[str, list[str]] = orjson.loads(r[_OBJ])
        ev = (r[_T], r[_SRC], r[_EID])
        order = r[_OID]
        named = [(k, i) for k, ids in objects.items() for i in ids]
        mentions.extend((k, i, r[_SRC], r[_EID]) for k, i in named)
        for k, i in named:
            if order:
                add((k, i, "", order), ev)
            for k2, i2 in named:
                if k2 != k:
                    add((k, i, k2, i2), ev)
    return [(*k, *v) for k, v in best.items()], mentions


_LINK_COLUMNS = "kind, object_id, link_kind, link_id, occurred_at, source, event_id"


def insert_links(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> int:
    """Store the links and mentions of these events rows; a link already known keeps its
    earliest event."""
    links, mentions = link_rows(rows)
    if not mentions:
        return 0
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    conn.exec_driver_sql(
        f"INSERT INTO event_objects (kind, object_id, source, event_id) VALUES "
        f"({', '.join([mark] * 4)}) ON CONFLICT DO NOTHING",
        sorted(set(mentions)),
    )
    if not links:
        return 0
    sql = (
        f"INSERT INTO links ({_LINK_COLUMNS}) VALUES ({', '.join([mark] * 7)}) "
        "ON CONFLICT (kind, object_id, link_kind, link_id) DO UPDATE SET "
        "occurred_at = excluded.occurred_at, source = excluded.source, "
        "event_id = excluded.event_id "
        "WHERE (excluded.occurred_at, excluded.source, excluded.event_id) < "
        "(links.occurred_at, links.source, links.event_id)"
    )
    links.sort()  # a fixed order: concurrent writers take row locks in the same order
    conn.exec_driver_sql(sql, links)
    return len(links)


def _insert_events_sqlite(conn: Connection, rows: list[tuple[Any, ...]]) -> int:
    cols = ", ".join(EVENT_COLUMNS)
    marks = ", ".join("?" * len(EVENT_COLUMNS))
    cur = conn.exec_driver_sql(
        f"INSERT INTO events ({cols}) VALUES ({marks}) ON CONFLICT (source, event_id) DO NOTHING",
        rows,
    )
    return int(cur.rowcount)


_PG_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS _ot_stage (
    pos bigint, event_id text, source text, order_id text, order_bucket int, hop text, phase text,
    occurred_at bigint, source_ref text, trace_id text, span_id text, attributes text,
    ingested_at bigint, objects text
) ON COMMIT DELETE ROWS
"""


# PostgreSQL hands out ingest_seq numbers before the transaction holding them commits, so a
# batch that commits late can publish a number below one a reader has already seen. Every
# transaction that inserts events holds this advisory lock shared until it ends; a reader that
# needs a high-water mark with nothing left to appear below it takes the lock exclusively for
# an instant (Store.settled_max_ingest_seq).
SEQ_LOCK = 0x6F72_7371


def _insert_events_postgresql(conn: Connection, rows: list[tuple[Any, ...]]) -> int:
    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock_shared({SEQ_LOCK})")
    conn.exec_driver_sql(_PG_STAGE)
    import psycopg

    from ordertrail.store.retention import ensure_partitions, events_partitioned

    partitioned = events_partitioned(conn)
    if partitioned:
        ensure_partitions(conn, (r[_T] for r in rows))
    raw = conn.connection.driver_connection
    assert raw is not None
    cols = ", ".join(EVENT_COLUMNS)
    try:
        return _copy_insert(raw, cols, rows, partitioned)
    except psycopg.Error as e:
        raise StoreError(f"store write failed: {str(e).strip().splitlines()[0]}") from e


# partitioned events (PostgreSQL, 0006): the identity is claimed in event_ids first (in a fixed
# order, so concurrent writers wait for each other instead of deadlocking); only the records
# whose identity was new are stored, the first of a batch's duplicates
_PG_INSERT_PARTITIONED = (
    "WITH new AS (INSERT INTO event_ids (source, event_id) SELECT source, event_id FROM _ot_stage "
    "ORDER BY source, event_id ON CONFLICT DO NOTHING RETURNING source, event_id) "
    "INSERT INTO events ({cols}) SELECT {cols} FROM (SELECT DISTINCT ON (s.source, s.event_id) "
    "s.* FROM _ot_stage s JOIN new n ON n.source = s.source AND n.event_id = s.event_id "
    "ORDER BY s.source, s.event_id, s.pos) x ORDER BY pos"
)


def _copy_insert(
    raw: Any, cols: str, rows: list[tuple[Any, ...]], partitioned: bool = False
) -> int:
    with raw.cursor() as cur:
        with cur.copy(f"COPY _ot_stage (pos, {cols}) FROM STDIN") as cp:
            for i, r in enumerate(rows):
                cp.write_row((i, *r))
        cur.execute(
            _PG_INSERT_PARTITIONED.format(cols=cols)
            if partitioned
            else f"INSERT INTO events ({cols}) SELECT {cols} FROM _ot_stage ORDER BY pos "
            "ON CONFLICT (source, event_id) DO NOTHING"
        )
        n = cur.rowcount
        cur.execute("DELETE FROM _ot_stage")
    return int(n)


def insert_events(
    conn: Connection, events: Sequence[OrderEvent], ingested_at: int | None = None
) -> int:
    """Insert events, ignoring ones already stored; return how many were new."""
    if not events:
        return 0
    ts = ingested_at if ingested_at is not None else now_us()
    return insert_rows(conn, [event_row(e, ts) for e in events])


def insert_rows(conn: Connection, rows: list[tuple[Any, ...]]) -> int:
    """Insert ready rows (EVENT_COLUMNS order), ignoring ones already stored."""
    if not rows:
        return 0
    if conn.dialect.name == "postgresql":
        return _insert_events_postgresql(conn, rows)
    return _insert_events_sqlite(conn, rows)


def _dialect_insert(conn: Connection, table: Any) -> Any:
    mod = postgresql if conn.dialect.name == "postgresql" else sqlite
    return mod.insert(table)


def insert_quarantine(conn: Connection, records: Sequence[QuarantineRecord]) -> int:
    """Store quarantine rows; a row already there (same source, place and content) is skipped."""
    if not records:
        return 0
    ts = now_us()
    params = [
        {
            "source": q.source,
            "source_ref": q.source_ref,
            "reason": q.reason,
            "raw": q.raw,
            "digest": q.digest,
            "received_at": q.received_at or ts,
        }
        for q in records
    ]
    stmt = _dialect_insert(conn, t.quarantine).on_conflict_do_nothing().returning(t.quarantine.c.id)
    # RETURNING counts what was inserted; rowcount is not reliable across drivers
    return len(conn.execute(stmt, params).all())


def upsert_checkpoints(conn: Connection, checkpoints: Sequence[Checkpoint]) -> None:
    ts = now_us()
    for c in checkpoints:
        stmt = _dialect_insert(conn, t.checkpoints).values(
            source=c.source,
            key=c.key,
            position=orjson.dumps(c.position).decode(),
            watermark=c.watermark,
            updated_at=ts,
        )
        if c.watermark is None:
            # keep an existing watermark when this update only moves the position
            stmt = stmt.on_conflict_do_update(
                index_elements=["source", "key"],
                set_={"position": stmt.excluded.position, "updated_at": stmt.excluded.updated_at},
            )
        else:
            stmt = stmt.on_conflict_do_update(
                index_elements=["source", "key"],
                set_={
                    "position": stmt.excluded.position,
                    "watermark": stmt.excluded.watermark,
                    "updated_at": stmt.excluded.updated_at,
                },
            )
        conn.execute(stmt)


def refresh_source_watermark(conn: Connection, source: str) -> None:
    """Set a source's watermark to the minimum of its parts' once every part has one."""
    c = t.checkpoints.c
    row = conn.execute(
        select(func.count(), func.count(c.watermark), func.min(c.watermark)).where(
            c.source == source, c.key != ""
        )
    ).one()
    parts, with_wm, low = int(row[0]), int(row[1]), row[2]
    if parts and parts == with_wm:
        upsert_checkpoints(conn, [Checkpoint(source, "", {"parts": parts}, int(low))])


# -- superseding: records read again take the place of what an earlier read left ---------------

_CHUNK = 500  # values per IN list: well inside SQLite's and PostgreSQL's parameter limits
_RENAMED = "\x1freplaced"  # appended to the id of an event about to be replaced


@dataclass(frozen=True, slots=True)
class ReplaceMark:
    """Where ``ingest --replace`` began: events stored before it (``ingest_seq <= seq`` and
    ``ingested_at < at``) are the ones it replaces. Events it stores get ``ingested_at >= at``,
    so neither a reused SQLite rowid nor anything else can make them look old."""

    seq: int
    at: int


@dataclass(slots=True)
class Supersede:
    """What the records of one batch take the place of, in the batch's own transaction.

    ``quarantine``: (source_ref, digest) keys of quarantine rows an earlier read left for these
    records; each is deleted unless ``keep`` maps it to the reason it is quarantined for again.
    ``replace``: (``ingest --replace``) this source's events stored before the mark with the ids
    of the batch's events give way to them: the old rows are renamed, the new ones stored (so
    their ingest_seq is above every old one), then the old ones deleted.
    ``sweep``: file -> mark: this source's events from that file stored before the mark that
    the file, read again to its end, no longer gave are deleted.
    Deleted events take their event_objects rows with them, and the links they showed are
    recomputed from the events that still show them.
    """

    source: str
    quarantine: Sequence[tuple[str, str]] = ()
    keep: dict[tuple[str, str], str] = field(default_factory=dict)
    replace: ReplaceMark | None = None
    sweep: dict[str, ReplaceMark] = field(default_factory=dict)


def _chunks(items: Sequence[Any], n: int = _CHUNK) -> list[Sequence[Any]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def supersede_quarantine(
    conn: Connection,
    source: str,
    keys: Sequence[tuple[str, str]],
    keep: dict[tuple[str, str], str] | None = None,
) -> int:
    """Delete this source's quarantine rows with these (source_ref, digest) keys, except those
    ``keep`` maps to their stored reason; return how many were deleted."""
    if not keys:
        return 0
    keep = keep or {}
    wanted = set(keys)
    q = t.quarantine.c
    doomed: list[int] = []
    for part in _chunks(sorted({r for r, _ in wanted})):
        rows = conn.execute(
            select(q.id, q.source_ref, q.digest, q.reason).where(
                q.source == source, q.source_ref.in_(part)
            )
        ).all()
        for r in rows:
            key = (r.source_ref, r.digest)
            if key in wanted and keep.get(key) != r.reason:
                doomed.append(int(r.id))
    for part in _chunks(doomed):
        conn.execute(t.quarantine.delete().where(q.id.in_(part)))
    return len(doomed)


OldEvent = tuple[
    int, str, str, str, int, str
]  # ingest_seq, source, event_id, order_id, time, objects


def _old_columns() -> tuple[Any, ...]:
    c = t.events.c
    return (c.ingest_seq, c.source, c.event_id, c.order_id, c.occurred_at, c.objects)


def _as_row(o: OldEvent) -> tuple[Any, ...]:
    """An old event in EVENT_COLUMNS positions, as far as :func:`link_rows` reads them."""
    r: list[Any] = [None] * len(EVENT_COLUMNS)
    r[_EID], r[_SRC], r[_OID], r[_T], r[_OBJ] = o[2], o[1], o[3], o[4], o[5]
    return tuple(r)


def set_aside_events(
    conn: Connection, source: str, event_ids: Sequence[str], mark: ReplaceMark
) -> list[OldEvent]:
    """The first half of replacing events: find this source's events with these ids stored
    before ``mark`` and rename their ids, so the same records can be stored anew (above them in
    ingest_seq); :func:`delete_events` then deletes them."""
    c = t.events.c
    old: list[OldEvent] = []
    for part in _chunks(sorted(set(event_ids))):
        old.extend(
            tuple(r)
            for r in conn.execute(
                select(*_old_columns()).where(
                    c.source == source,
                    c.event_id.in_(part),
                    c.ingest_seq <= mark.seq,
                    c.ingested_at < mark.at,
                )
            ).all()
        )
    for seqs in _chunks([o[0] for o in old]):
        conn.execute(
            t.events.update().where(c.ingest_seq.in_(seqs)).values(event_id=c.event_id + _RENAMED)
        )
    return old


def sweep_events(conn: Connection, source: str, marks: dict[str, ReplaceMark]) -> int:
    """Delete this source's events from the files of ``marks`` stored before each file's mark
    (the ones a complete read of the file under ``--replace`` did not store again)."""
    if not marks:
        return 0
    c = t.events.c
    rows = conn.execute(
        select(*_old_columns(), c.source_ref, c.ingested_at).where(
            c.source == source, c.ingest_seq <= max(m.seq for m in marks.values())
        )
    ).all()
    old: list[OldEvent] = []
    for r in rows:
        mark = marks.get(r.source_ref.rpartition(":")[0])
        if mark is not None and r.ingest_seq <= mark.seq and r.ingested_at < mark.at:
            old.append((r.ingest_seq, r.source, r.event_id, r.order_id, r.occurred_at, r.objects))
    return delete_events(conn, old)


def delete_events(conn: Connection, old: Sequence[OldEvent]) -> int:
    """Delete stored events (by ingest_seq), their event_objects rows (by the ids in ``old``),
    and the links only they showed (a link another event still shows keeps the earliest of
    those)."""
    if not old:
        return 0
    for part in _chunks([o[0] for o in old]):
        conn.execute(t.events.delete().where(t.events.c.ingest_seq.in_(part)))
    with_objects = [_as_row(o) for o in old if o[5]]
    if with_objects:
        links, mentions = link_rows(with_objects)
        eo = t.event_objects.c
        for kind, oid, src, eid in sorted(set(mentions)):
            conn.execute(
                t.event_objects.delete().where(
                    eo.kind == kind, eo.object_id == oid, eo.source == src, eo.event_id == eid
                )
            )
        refresh_links(conn, [(k, i, lk, li) for k, i, lk, li, *_ in links])
    return len(old)


def refresh_links(conn: Connection, keys: Sequence[LinkKey]) -> None:
    """Recompute these links from the events that show them now: each keeps the earliest
    (time, source, event id) among them, or is deleted when none is left."""
    if not keys:
        return
    eo, ev, lk = t.event_objects.c, t.events.c, t.links.c
    by_kind: dict[str, set[str]] = {}
    for kind, oid, _, _ in keys:
        by_kind.setdefault(kind, set()).add(oid)
    shown: dict[str, set[str]] = {}  # source -> ids of the events naming one of the objects
    for kind, oids in by_kind.items():
        for part in _chunks(sorted(oids)):
            for src, eid in conn.execute(
                select(eo.source, eo.event_id).where(eo.kind == kind, eo.object_id.in_(part))
            ).all():
                shown.setdefault(src, set()).add(eid)
    rows: list[tuple[Any, ...]] = []
    for src, eids in shown.items():
        for part in _chunks(sorted(eids)):
            for r in conn.execute(
                select(*_old_columns()).where(ev.source == src, ev.event_id.in_(part))
            ).all():
                rows.append(_as_row(tuple(r)))
    best = {tuple(x[:4]): x[4:] for x in link_rows(rows)[0]}
    for key in sorted(set(keys)):
        where = (lk.kind == key[0], lk.object_id == key[1], lk.link_kind == key[2],
                 lk.link_id == key[3])  # fmt: skip
        now = best.get(key)
        if now is None:
            conn.execute(t.links.delete().where(*where))
            continue
        vals = {"occurred_at": now[0], "source": now[1], "event_id": now[2]}
        if conn.execute(t.links.update().where(*where).values(**vals)).rowcount == 0:
            conn.execute(
                t.links.insert().values(
                    kind=key[0], object_id=key[1], link_kind=key[2], link_id=key[3], **vals
                )
            )
