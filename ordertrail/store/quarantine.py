"""Quarantine reads (list, one row, counts by reason) and the replay transaction: a batch of
re-mapped records stored as events (with their links) and taken out of quarantine, records now
filtered taken out and added to their part's filtered count, and changed reasons updated — all
in one transaction, so a crash leaves the batch either replayed or untouched.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, delete, func, select, update
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from ordertrail.errors import StoreError
from ordertrail.schemas.event import us_to_iso
from ordertrail.store import Store, tables
from ordertrail.store.writer import insert_links, insert_rows, now_us

logger = logging.getLogger(__name__)

_q = tables.quarantine.c


@dataclass(slots=True)
class QuarantineRow:
    """One stored quarantine row."""

    id: int
    source: str
    source_ref: str
    reason: str
    raw: str
    received_at: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "source_ref": self.source_ref,
            "reason": self.reason,
            "received_at": us_to_iso(self.received_at),
            "raw": self.raw,
        }


def _row(r: Any) -> QuarantineRow:
    return QuarantineRow(
        int(r.id), r.source, r.source_ref, r.reason, r.raw, int(r.received_at)
    )  # fmt: skip


def _where(q: Any, source: str | None, reason: str | None) -> Any:
    if source:
        q = q.where(_q.source == source)
    if reason:
        q = q.where(func.lower(_q.reason).contains(reason.lower(), autoescape=True))
    return q


@contextmanager
def _reading(store: Store) -> Iterator[Connection]:
    try:
        with store.engine.connect() as conn:
            yield conn
    except OperationalError as e:
        reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
        raise StoreError(f"store read failed: {reason}") from e
    except SQLAlchemyError as e:
        raise StoreError(f"store read failed: {e}") from e


def count_rows(store: Store, source: str | None = None, reason: str | None = None) -> int:
    """How many rows are in quarantine (of one source; whose reason contains ``reason``)."""
    with _reading(store) as conn:
        q = _where(select(func.count()).select_from(tables.quarantine), source, reason)
        return int(conn.execute(q).scalar_one())


def list_rows(
    store: Store,
    source: str | None = None,
    reason: str | None = None,
    *,
    limit: int | None = None,
    after_id: int = 0,
) -> list[QuarantineRow]:
    """Rows in id order (oldest first), after ``after_id``; ``reason`` matches case-insensitively
    anywhere in the reason."""
    q = _where(select(tables.quarantine), source, reason).where(_q.id > after_id).order_by(_q.id)
    if limit:
        q = q.limit(limit)
    with _reading(store) as conn:
        return [_row(r) for r in conn.execute(q)]


def get_row(store: Store, row_id: int) -> QuarantineRow | None:
    with _reading(store) as conn:
        r = conn.execute(select(tables.quarantine).where(_q.id == row_id)).first()
    return _row(r) if r is not None else None


def reason_counts(
    store: Store, source: str | None = None, reason: str | None = None
) -> list[tuple[str, str, int]]:
    """(source, reason, count) of every distinct stored reason, most frequent first."""
    q = _where(select(_q.source, _q.reason, func.count()), source, reason).group_by(
        _q.source, _q.reason
    )
    with _reading(store) as conn:
        rows = [(r[0], r[1], int(r[2])) for r in conn.execute(q)]
    return sorted(rows, key=lambda r: (-r[2], r[0], r[1]))


def sources_in_quarantine(store: Store) -> list[str]:
    with _reading(store) as conn:
        return sorted(r[0] for r in conn.execute(select(_q.source).distinct()))


# -- replay --------------------------------------------------------------------------------------


@dataclass(slots=True)
class ReplayBatch:
    """What replaying one batch of quarantine rows changes.

    events: (quarantine id, ready ``events`` row) of the records that map now;
    filtered: (quarantine id, source, source_ref) of the records the source's ``where`` drops now;
    reasons: (quarantine id, new reason) of the records still quarantined for another reason.
    """

    events: Sequence[tuple[int, tuple[Any, ...]]] = ()
    filtered: Sequence[tuple[int, str, str]] = ()
    reasons: Sequence[tuple[int, str]] = ()


@dataclass(slots=True)
class ReplayWrite:
    """What one replay transaction did. Rows another replay removed first count in neither."""

    stored: int = 0  # new events
    redelivered: int = 0  # events that were already stored (the same source and event id)
    filtered: int = 0  # rows removed because ``where`` drops them now
    filtered_counted: int = 0  # ... of which were added to a checkpoint's filtered count
    reasons: int = 0  # rows whose reason was updated


def apply_replay(store: Store, batch: ReplayBatch) -> ReplayWrite:
    """Store the batch's events (and links), delete their quarantine rows and those of the now
    filtered records, count those as filtered, update changed reasons: one transaction."""
    out = ReplayWrite()
    try:
        with store.engine.begin() as conn:
            ids = [qid for qid, _ in batch.events] + [qid for qid, _, _ in batch.filtered]
            gone: set[int] = set()
            if ids:
                res = conn.execute(delete(tables.quarantine).where(_q.id.in_(ids)).returning(_q.id))
                gone = {int(r[0]) for r in res}
            rows = [row for qid, row in batch.events if qid in gone]
            if rows:
                out.stored = insert_rows(conn, rows)
                insert_links(conn, rows)
                out.redelivered = len(rows) - out.stored
            dropped = [(src, ref) for qid, src, ref in batch.filtered if qid in gone]
            out.filtered = len(dropped)
            if dropped:
                out.filtered_counted = _count_filtered(conn, dropped)
            if batch.reasons:
                stmt = (
                    update(tables.quarantine)
                    .where(_q.id == bindparam("qid"))
                    .values(reason=bindparam("new_reason"))
                )
                conn.execute(stmt, [{"qid": i, "new_reason": r} for i, r in batch.reasons])
                out.reasons = len(batch.reasons)
    except OperationalError as e:
        reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
        raise StoreError(f"store write failed: {reason}") from e
    except SQLAlchemyError as e:
        raise StoreError(f"store write failed: {e}") from e
    return out


def _count_filtered(conn: Connection, dropped: Sequence[tuple[str, str]]) -> int:
    """Add records now filtered to the filtered count of the part they were read from: the
    checkpoint of their file or partition (the ref without its line or offset), else the source's
    own (OTLP). Returns how many found a count to join."""
    c = tables.checkpoints.c
    per_part: Counter[tuple[str, str]] = Counter()
    for source, ref in dropped:
        part = ref.rsplit(":", 1)[0] if ":" in ref else ""
        per_part[(source, part)] += 1
    counted = 0
    for (source, part), n in sorted(per_part.items()):
        q = select(c.key, c.position).where(c.source == source, c.key.in_({part, ""}))
        if conn.dialect.name == "postgresql":
            q = q.with_for_update()
        found = {r.key: orjson.loads(r.position) for r in conn.execute(q)}
        key = next((k for k in (part, "") if "filtered" in found.get(k, {})), None)
        if key is None:
            logger.info("source %s: no filtered count kept for %r; %d not counted", source, part, n)
            continue
        pos = found[key]
        pos["filtered"] = int(pos["filtered"]) + n
        conn.execute(
            update(tables.checkpoints)
            .where(c.source == source, c.key == key)
            .values(position=orjson.dumps(pos).decode(), updated_at=now_us())
        )
        counted += n
    return counted
