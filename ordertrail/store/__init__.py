"""The SQL store: tables, engine setup, idempotent bulk writes and read queries."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from ordertrail.errors import StoreError
from ordertrail.schemas.event import OrderEvent, QuarantineRecord
from ordertrail.store import tables
from ordertrail.store.engine import check_connection, make_engine, migrate, safe_url
from ordertrail.store.writer import (
    Checkpoint,
    ReplaceMark,
    Supersede,
    WriteResult,
    delete_events,
    event_row,
    insert_links,
    insert_quarantine,
    insert_rows,
    now_us,
    refresh_source_watermark,
    set_aside_events,
    supersede_quarantine,
    sweep_events,
    upsert_checkpoints,
)

logger = logging.getLogger(__name__)

__all__ = ["Checkpoint", "ReplaceMark", "Store", "Supersede", "WriteResult", "tables"]


class Store:
    """One SQL store (SQLite or PostgreSQL), migrated to the current schema on open."""

    def __init__(self, url: str, *, create: bool = True):
        self.url = url
        self.engine: Engine = make_engine(url)
        check_connection(self.engine)
        if create:
            migrate(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def __repr__(self) -> str:
        return f"Store({safe_url(self.engine)})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes -------------------------------------------------------------------------------
    def write_batch(
        self,
        events: Sequence[OrderEvent] = (),
        quarantined: Sequence[QuarantineRecord] = (),
        checkpoints: Sequence[Checkpoint] = (),
        source_watermark: str | None = None,
        rows: list[tuple[Any, ...]] | None = None,
        supersede: Supersede | None = None,
    ) -> WriteResult:
        """Store events, quarantine rows and checkpoints in one transaction (all or nothing).

        ``source_watermark`` names a source whose watermark is the minimum of its parts'
        (Kafka partitions): it is recomputed in the same transaction. ``supersede`` says what
        the batch's records take the place of (records read again, ``--replace``): deleted in
        the same transaction, before the batch is stored.
        """
        res = WriteResult()
        try:
            all_rows = list(rows or ())
            if events:
                ts = now_us()
                all_rows.extend(event_row(e, ts) for e in events)
            with self.engine.begin() as conn:
                sup = supersede
                old = []
                if sup is not None:
                    if sup.replace is not None and all_rows:
                        ids = [r[0] for r in all_rows]
                        old = set_aside_events(conn, sup.source, ids, sup.replace)
                    res.withdrawn = supersede_quarantine(conn, sup.source, sup.quarantine, sup.keep)
                stored = insert_rows(conn, all_rows) if all_rows else 0
                res.replaced = delete_events(conn, old)
                insert_links(conn, all_rows)
                q = insert_quarantine(conn, quarantined)
                if sup is not None and sup.sweep:
                    res.removed = sweep_events(conn, sup.source, sup.sweep)
                upsert_checkpoints(conn, checkpoints)
                if source_watermark:
                    refresh_source_watermark(conn, source_watermark)
        except OperationalError as e:
            reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
            raise StoreError(f"store write failed: {reason}") from e
        except SQLAlchemyError as e:
            raise StoreError(f"store write failed: {e}") from e
        res.stored, res.redelivered, res.quarantined = stored, len(all_rows) - stored, q
        return res

    def begin_replace(self, source: str, keys: Sequence[str]) -> ReplaceMark:
        """Start replacing a source's stored events (``ingest --from-start --replace``).

        In one transaction the checkpoints of ``keys`` (its files) are reset to the start and
        marked (``"replace": [seq, at]`` in their position): reading those files again then
        replaces, batch by batch, the events stored before the mark (``Supersede.replace``),
        and once a file is read to its end the events it no longer gives are swept
        (``Supersede.sweep``). A crash at any point leaves every event as it was or replaced —
        never a source half deleted — and the next ingest carries on from the marks.
        """
        c = tables.checkpoints.c
        try:
            with self.engine.begin() as conn:
                seq = conn.execute(select(func.max(tables.events.c.ingest_seq))).scalar()
                mark = ReplaceMark(int(seq or 0), now_us())
                old = dict(conn.execute(select(c.key, c.position).where(c.source == source)).all())
                cps = []
                for k in keys:
                    pos = {"offset": 0, "line": 0, "filtered": 0, "replace": [mark.seq, mark.at]}
                    tail = orjson.loads(old[k]).get("tail") if k in old else None
                    if tail:  # a quarantined unterminated end: its row gives way when read again
                        pos["tail"] = tail
                    cps.append(Checkpoint(source, k, pos))
                upsert_checkpoints(conn, cps)
        except SQLAlchemyError as e:
            raise StoreError(f"store write failed: {e}") from e
        return mark

    # -- reads --------------------------------------------------------------------------------
    def checkpoints(self, source: str) -> dict[str, Checkpoint]:
        c = tables.checkpoints.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(c.key, c.position, c.watermark).where(c.source == source)
            ).all()
        return {
            r.key: Checkpoint(source, r.key, orjson.loads(r.position), r.watermark) for r in rows
        }

    def all_checkpoints(self) -> list[dict[str, Any]]:
        c = tables.checkpoints.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(tables.checkpoints).order_by(c.source, c.key)).mappings()
            return [dict(r) for r in rows]

    def watermarks(self) -> dict[str, int | None]:
        """Source name -> watermark (µs) of the sources that have reported one."""
        c = tables.checkpoints.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(c.source, c.watermark).where(c.key == "")).all()
        return {r.source: r.watermark for r in rows}

    def event_at_seq(self, seq: int) -> list[str] | None:
        """The (source, event_id) of the event stored as ``seq``, if it is stored."""
        c = tables.events.c
        with self.engine.connect() as conn:
            row = conn.execute(select(c.source, c.event_id).where(c.ingest_seq == seq)).first()
        return [str(row[0]), str(row[1])] if row else None

    def count_events(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(tables.events)).scalar_one())

    def count_quarantine(self) -> int:
        with self.engine.connect() as conn:
            q = select(func.count()).select_from(tables.quarantine)
            return int(conn.execute(q).scalar_one())

    def count_orders(self) -> int:
        with self.engine.connect() as conn:
            c = tables.events.c
            q = select(func.count(c.order_id.distinct())).where(c.order_id != "")
            return int(conn.execute(q).scalar_one())

    def events_per_source(self) -> dict[str, int]:
        c = tables.events.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(c.source, func.count()).group_by(c.source)).all()
        return {r[0]: int(r[1]) for r in rows}

    def quarantine_per_source(self) -> dict[str, int]:
        c = tables.quarantine.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(c.source, func.count()).group_by(c.source)).all()
        return {r[0]: int(r[1]) for r in rows}

    def quarantine_rows(
        self, source: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        c = tables.quarantine.c
        q = select(tables.quarantine).order_by(c.id)
        if source:
            q = q.where(c.source == source)
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def order_events(self, order_id: str) -> list[OrderEvent]:
        """Every stored event of one order, in time order."""
        c = tables.events.c
        q = (
            select(tables.events)
            .where(c.order_id == order_id)
            .order_by(c.occurred_at, c.ingest_seq)
        )
        with self.engine.connect() as conn:
            return [row_to_event(r) for r in conn.execute(q).mappings()]

    def last_run_unlinked(self) -> tuple[int | None, int | None]:
        """(objects of no order, run id) as the last full reconcile run saw them."""
        c = tables.runs.c
        with self.engine.connect() as conn:
            row = conn.execute(
                select(c.unlinked, c.id)
                .where(c.status == "done", c.shard == "")
                .order_by(c.id.desc())
                .limit(1)
            ).first()
        return (int(row[0]), int(row[1])) if row else (None, None)

    def max_ingest_seq(self) -> int:
        with self.engine.connect() as conn:
            v = conn.execute(select(func.max(tables.events.c.ingest_seq))).scalar_one()
        return int(v or 0)

    def settled_max_ingest_seq(self, timeout: float = 30.0) -> tuple[int, bool]:
        """The largest ingest_seq, and whether every event at or below it is committed and
        visible (no batch still open can publish a lower number later). SQLite has one writer
        at a time, so its maximum is always settled. On PostgreSQL the writers' advisory lock
        (writer.SEQ_LOCK) is taken exclusively for an instant: it waits for open batches to
        end, for at most ``timeout`` seconds (then the maximum is returned unsettled)."""
        if self.engine.dialect.name != "postgresql":
            return self.max_ingest_seq(), True
        from sqlalchemy.exc import OperationalError

        from ordertrail.store.writer import SEQ_LOCK

        settled = True
        with self.engine.connect() as conn, conn.begin():
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(timeout * 1000)}ms'")
            try:
                with conn.begin_nested():
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SEQ_LOCK})")
            except OperationalError:
                settled = False
            # read committed: this statement sees every batch that ended before the lock
            v = conn.execute(select(func.max(tables.events.c.ingest_seq))).scalar_one()
        return int(v or 0), settled


def row_to_event(r: Any) -> OrderEvent:
    return OrderEvent(
        event_id=r["event_id"],
        order_id=r["order_id"],
        hop=r["hop"],
        occurred_at=r["occurred_at"],
        source=r["source"],
        source_ref=r["source_ref"],
        phase=r["phase"],
        trace_id=r["trace_id"],
        span_id=r["span_id"],
        attributes=orjson.loads(r["attributes"]) if r["attributes"] else {},
        ingested_at=r["ingested_at"],
        ingest_seq=r["ingest_seq"],
        objects=orjson.loads(r["objects"]) if r["objects"] else {},
    )
