"""Retention: ``ordertrail prune`` removes what is older than ``[store] retention``.

What goes, all older than the cut (``now - retention``, never inside ``now - lookback``):

- **events** (by ``occurred_at``) with their ``event_objects`` rows;
- **links** that no stored event shows any more. A link row names the earliest event that
  showed it; when that event goes, the link takes the earliest event still stored that shows it
  (the same event ``ingest`` would have recorded had the pruned ones never been stored), and
  goes only when there is none. A link never vanishes while an event that shows it is stored;
- **quarantine** rows (by ``received_at``);
- **findings** that are no longer active (``resolved`` or ``expired``) with ``since`` before the
  cut. Active findings, runs and incidents stay.

Work is done in batches, one transaction each, and every transaction leaves the store whole: a
crash (or kill -9) mid-prune loses nothing that should stay, and the next prune carries on.

**PostgreSQL** stores ``events`` partitioned by month of ``occurred_at`` (``events_2026_01``;
ingest creates the partitions it needs). The identity ``(source, event_id)`` that makes a
redelivered record a no-op is held by ``event_ids`` — a unique constraint on a partitioned table
must include its partition key — which the insert path fills and triggers keep in step when
events are deleted or renamed. Prune detaches each month that lies wholly before the cut
(``DETACH PARTITION … CONCURRENTLY``: readers and writers carry on), removes the month's
``event_objects`` rows and identities and mends the links it showed, then drops the table; only
the month that straddles the cut is deleted row by row. A detached month under way is marked in
its table comment, with how far it got, so a prune that died resumes it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url

from ordertrail.errors import StoreError

logger = logging.getLogger(__name__)

DEFAULT_BATCH = 50_000
PARTITION_COMMENT = "ordertrail events partition"
_PRUNING = "ordertrail events partition: pruning"
_PRUNING_RE = re.compile(r"pruning \[(-?\d+), (-?\d+)\) done to (-?\d+)")
_PARTITION_LOCK = 0x6F72_7061  # advisory lock: one writer creates a month's partition
_PRUNE_LOCK = 0x6F72_7072  # advisory lock: one prune per store
_BOUND_RE = re.compile(r"FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")

Progress = Callable[[int, int, str], None]  # done, total, stage


class PruneBusy(StoreError):
    """Another prune holds the store's prune lock."""


# -- months and partitions (PostgreSQL) ---------------------------------------------------------


def month_of(us: int) -> int:
    """The month of a time (µs since the epoch, UTC) as months since 1970-01."""
    return int(np.datetime64(int(us), "us").astype("datetime64[M]").astype(np.int64))


def months_of(times: Iterable[int]) -> set[int]:
    arr = np.fromiter(times, dtype=np.int64)
    if not len(arr):
        return set()
    months = arr.astype("datetime64[us]").astype("datetime64[M]").astype(np.int64)
    return {int(m) for m in np.unique(months)}


def month_range(month: int) -> tuple[int, int]:
    """[first µs of the month, first µs of the next)."""
    lo, hi = np.array([month, month + 1], dtype="datetime64[M]").astype("datetime64[us]")
    return int(lo.astype(np.int64)), int(hi.astype(np.int64))


def partition_name(month: int) -> str:
    year, m = 1970 + month // 12, month % 12 + 1
    return f"events_{'n' if year < 0 else ''}{abs(year):04d}_{m:02d}"


@dataclass(frozen=True)
class Partition:
    """One attached partition of ``events``: its table and [lo, hi) range of occurred_at."""

    name: str
    lo: int
    hi: int


def events_partitioned(conn: Connection) -> bool:
    """Whether ``events`` is a partitioned table (PostgreSQL from revision 0006 on)."""
    if conn.dialect.name != "postgresql":
        return False
    kind = conn.exec_driver_sql(
        "SELECT relkind FROM pg_class WHERE oid = to_regclass('events')"
    ).scalar()
    return kind == "p"


def partitions(conn: Connection, *, pending: bool = False) -> list[Partition]:
    """The partitions of ``events`` in time order (``pending``: also those being detached)."""
    rows = conn.exec_driver_sql(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), i.inhdetachpending "
        "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass('events')"
    ).all()
    out = []
    for name, bound, detaching in rows:
        m = _BOUND_RE.search(bound or "")
        if m and (pending or not detaching):
            out.append(Partition(str(name), int(m.group(1)), int(m.group(2))))
    return sorted(out, key=lambda p: p.lo)


def partition_keys(conn: Connection) -> dict[str, frozenset[str]]:
    """Partitioned table -> its partition key columns (PostgreSQL; {} elsewhere). A partitioned
    table's unique constraints must include them: ``status --verify`` compares keys without."""
    if conn.dialect.name != "postgresql":
        return {}
    rows = conn.exec_driver_sql(
        "SELECT c.relname, a.attname FROM pg_partitioned_table p "
        "JOIN pg_class c ON c.oid = p.partrelid "
        "JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = ANY (p.partattrs) "
        "WHERE pg_table_is_visible(c.oid)"
    ).all()
    out: dict[str, set[str]] = {}
    for table, column in rows:
        out.setdefault(str(table), set()).add(str(column))
    return {t: frozenset(c) for t, c in out.items()}


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def create_partition(conn: Connection, month: int) -> str:
    """Create and attach the partition of one month; return its table name.

    ``CREATE TABLE … (LIKE events)`` then ``ATTACH PARTITION`` takes only a SHARE UPDATE
    EXCLUSIVE lock on ``events`` (``CREATE TABLE … PARTITION OF`` would take an ACCESS
    EXCLUSIVE one, queueing every reader behind a long reconcile)."""
    lo, hi = month_range(month)
    base = partition_name(month)
    name, k = base, 1
    while conn.exec_driver_sql("SELECT to_regclass(%s)", (name,)).scalar() is not None:
        k += 1  # a month being pruned still holds the plain name
        name = f"{base}_{k}"
    q = _quote_ident(name)
    conn.exec_driver_sql(f"CREATE TABLE {q} (LIKE events INCLUDING DEFAULTS)")
    conn.exec_driver_sql(f"COMMENT ON TABLE {q} IS '{PARTITION_COMMENT}'")
    conn.exec_driver_sql(
        f"ALTER TABLE events ATTACH PARTITION {q} FOR VALUES FROM ({lo}) TO ({hi})"
    )
    logger.info("created partition %s [%d, %d)", name, lo, hi)
    return name


def ensure_partitions(conn: Connection, times: Iterable[int]) -> list[str]:
    """Make sure every month of ``times`` has an attached partition (inside the caller's
    transaction; writers that need a new month take turns). Return the partitions created."""
    need = months_of(times)
    have = {month_of(p.lo) for p in partitions(conn, pending=True)}
    if need <= have:
        return []
    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PARTITION_LOCK})")
    have = {month_of(p.lo) for p in partitions(conn, pending=True)}
    return [create_partition(conn, m) for m in sorted(need - have)]


# -- the prune ----------------------------------------------------------------------------------


@dataclass
class PruneResult:
    """What a prune removed (or, with ``dry_run``, would remove)."""

    before: int  # the cut (µs): what is older goes
    dry_run: bool = False
    events: int = 0
    event_objects: int = 0
    links: int = 0  # removed: no stored event shows them any more
    links_moved: int = 0  # kept, now naming the earliest stored event that shows them
    quarantine: int = 0
    findings: int = 0  # resolved or expired
    partitions: list[str] = field(default_factory=list)  # PostgreSQL: months dropped whole
    seconds: float = 0.0

    @property
    def removed(self) -> dict[str, int]:
        return {
            "events": self.events,
            "event_objects": self.event_objects,
            "links": self.links,
            "quarantine": self.quarantine,
            "findings": self.findings,
        }

    def as_dict(self) -> dict[str, Any]:
        from ordertrail.schemas.event import us_to_iso

        return {
            "before": us_to_iso(self.before),
            "dry_run": self.dry_run,
            "removed": self.removed,
            "links_moved": self.links_moved,
            "partitions_dropped": list(self.partitions),
            "seconds": round(self.seconds, 3),
        }


def prune(
    engine: Engine,
    before: int,
    *,
    keep_after: int | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
) -> PruneResult:
    """Remove events, links, quarantine rows and inactive findings older than ``before`` (µs).

    ``keep_after`` (now - lookback) guards the window: ``before`` later than it is refused.
    Raises :class:`PruneBusy` when another prune is running on the store."""
    if keep_after is not None and before > keep_after:
        raise ValueError("prune would remove events inside the lookback window")
    t0 = time.perf_counter()
    res = PruneResult(before=before, dry_run=dry_run)
    with _prune_lock(engine):
        if dry_run:
            _count(engine, res)
        else:
            _Pruner(engine, before, batch_size, progress, res).run()
    res.seconds = time.perf_counter() - t0
    return res


LOCK_WAIT = 5.0  # seconds a prune waits for another to let go (a killed one's session ending)


def _try_for(take: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + LOCK_WAIT
    while not take():
        if time.monotonic() >= deadline:
            raise PruneBusy(what)
        time.sleep(0.1)


@contextmanager
def _prune_lock(engine: Engine) -> Iterator[None]:
    """One prune per store: a second one waits a few seconds, then is told so (PruneBusy)."""
    busy = "another ordertrail prune is running on this store; try again when it is done"
    if engine.dialect.name == "postgresql":
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            _try_for(
                lambda: bool(
                    conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({_PRUNE_LOCK})").scalar()
                ),
                busy,
            )
            try:
                yield
            finally:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_PRUNE_LOCK})")
        finally:
            conn.close()
        return
    db = make_url(str(engine.url)).database or ""
    if not db or db == ":memory:" or db.startswith("file:"):
        yield
        return
    # a file beside the store, never the store itself (closing a descriptor of the store would
    # drop SQLite's own POSIX locks); flock is released by the kernel if the process dies
    fd = os.open(f"{os.path.abspath(db)}-prune.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def take() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    try:
        _try_for(take, busy)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _mark(conn: Connection) -> str:
    return "%s" if conn.dialect.name == "postgresql" else "?"


def _raw(conn: Connection) -> Any:
    raw = conn.connection.driver_connection
    assert raw is not None
    return raw


def _inactive_findings(m: str) -> str:
    return f"status IN ('resolved', 'expired') AND since < {m}"


# the links first shown before the cut: each is removed or moved to a later event by a prune
_OLD_LINKS = "SELECT count(*) FROM links WHERE occurred_at < {cut}"
# a stored event that shows the link (kind, object_id) -> order (link_kind "") ...
_SHOWS_ORDER = (
    "FROM event_objects a JOIN events e ON e.source = a.source AND e.event_id = a.event_id "
    "WHERE a.kind = {m} AND a.object_id = {m} AND e.order_id = {m}"
)
# ... or (kind, object_id) <-> (link_kind, link_id): an event naming both
_SHOWS_OBJECT = (
    "FROM event_objects a JOIN event_objects b ON b.source = a.source AND b.event_id = a.event_id "
    "JOIN events e ON e.source = a.source AND e.event_id = a.event_id "
    "WHERE a.kind = {m} AND a.object_id = {m} AND b.kind = {m} AND b.object_id = {m}"
)


def _count(engine: Engine, res: PruneResult) -> None:
    """The dry run: exact counts of what a prune at ``res.before`` removes."""
    cut = int(res.before)
    with engine.connect() as conn:
        one = conn.exec_driver_sql
        res.events = int(one(f"SELECT count(*) FROM events WHERE occurred_at < {cut}").scalar_one())
        res.event_objects = int(
            one(
                "SELECT count(*) FROM event_objects a JOIN events e ON e.source = a.source "
                f"AND e.event_id = a.event_id WHERE e.occurred_at < {cut}"
            ).scalar_one()
        )
        later = f" AND e.occurred_at >= {cut}"
        shows_order = _SHOWS_ORDER.format(m="{}").format("l.kind", "l.object_id", "l.link_id")
        shows_object = _SHOWS_OBJECT.format(m="{}").format(
            "l.kind", "l.object_id", "l.link_kind", "l.link_id"
        )
        old = int(one(_OLD_LINKS.format(cut=cut)).scalar_one())
        res.links = int(
            one(
                f"SELECT count(*) FROM links l WHERE l.occurred_at < {cut} AND NOT ("
                f"(l.link_kind = '' AND EXISTS (SELECT 1 {shows_order}{later})) OR "
                f"(l.link_kind <> '' AND EXISTS (SELECT 1 {shows_object}{later})))"
            ).scalar_one()
        )
        res.links_moved = old - res.links
        res.quarantine = int(
            one(f"SELECT count(*) FROM quarantine WHERE received_at < {cut}").scalar_one()
        )
        res.findings = int(
            one(f"SELECT count(*) FROM findings WHERE {_inactive_findings(str(cut))}").scalar_one()
        )
        if events_partitioned(conn):
            res.partitions = [p.name for p in partitions(conn) if p.hi <= cut]


class _Pruner:
    def __init__(
        self,
        engine: Engine,
        before: int,
        batch: int,
        progress: Progress | None,
        res: PruneResult,
    ):
        self.engine, self.cut, self.batch, self.res = engine, int(before), max(1, batch), res
        self._progress = progress
        self.done = 0
        self.total = 0

    def tick(self, n: int, stage: str) -> None:
        self.done += n
        if self._progress:
            self._progress(self.done, max(self.total, self.done), stage)

    def run(self) -> None:
        pg = self.engine.dialect.name == "postgresql"
        with self.engine.connect() as conn:
            partitioned = events_partitioned(conn)
            one = conn.exec_driver_sql
            cut = self.cut
            self.total = sum(
                int(one(sql).scalar_one())
                for sql in (
                    f"SELECT count(*) FROM events WHERE occurred_at < {cut}",
                    f"SELECT count(*) FROM quarantine WHERE received_at < {cut}",
                    f"SELECT count(*) FROM findings WHERE {_inactive_findings(str(cut))}",
                )
            )
            old_links = int(one(_OLD_LINKS.format(cut=cut)).scalar_one())
        self.tick(0, "starting")
        if partitioned:
            self._months()
        self._events()
        self._rows(
            "quarantine",
            f"SELECT id FROM quarantine WHERE received_at < {{m}} ORDER BY received_at LIMIT {self.batch}",
        )
        self._rows(
            "findings",
            f"SELECT id FROM findings WHERE {_inactive_findings('{m}')} LIMIT {self.batch}",
        )
        if pg and partitioned:
            with self.engine.begin() as conn:  # the month ahead, so ingest rarely has to
                now = time.time_ns() // 1000
                ensure_partitions(conn, [now, now + 31 * 86400 * 1_000_000])
        # a link is moved once per batch that removes the event it names, and may go in the
        # end: the links kept are those that were before the cut, less those removed and any
        # left there (none, unless an ingest wrote old events meanwhile)
        with self.engine.connect() as conn:
            left = int(conn.exec_driver_sql(_OLD_LINKS.format(cut=cut)).scalar_one())
        self.res.links_moved = max(0, old_links - self.res.links - left)

    # -- events, row by row (SQLite; on PostgreSQL the month that straddles the cut) -----------
    def _events(self) -> None:
        pg = self.engine.dialect.name == "postgresql"
        while True:
            with self.engine.begin() as conn:
                m = _mark(conn)
                # the DELETE comes first: on SQLite it takes the write lock before anything is
                # read, so a batch never works from a snapshot another writer has moved past
                sql = (
                    f"DELETE FROM events WHERE ingest_seq IN (SELECT ingest_seq FROM events "
                    f"WHERE occurred_at < {m} ORDER BY occurred_at LIMIT {self.batch})"
                    + (f" AND occurred_at < {m}" if pg else "")
                    + " RETURNING occurred_at, source, event_id, objects"
                )
                params = (self.cut, self.cut) if pg else (self.cut,)
                rows = conn.exec_driver_sql(sql, params).all()
                if not rows:
                    break
                self.res.event_objects += _forget_mentions(conn, rows)
                lo, hi = min(r[0] for r in rows), max(r[0] for r in rows)
                self._mend(conn, lo, hi + 1)
            self.res.events += len(rows)
            self.tick(len(rows), "events")
        with self.engine.begin() as conn:  # anything a store left dangling before the cut
            self._mend(conn, None, self.cut)

    # -- quarantine rows and findings ------------------------------------------------------------
    def _rows(self, table: str, pick: str) -> None:
        while True:
            with self.engine.begin() as conn:
                m = _mark(conn)
                cur = conn.exec_driver_sql(
                    f"DELETE FROM {table} WHERE id IN ({pick.format(m=m)})", (self.cut,)
                )
                n = int(cur.rowcount)
            if n <= 0:
                return
            setattr(self.res, table, getattr(self.res, table) + n)
            self.tick(n, table)

    # -- links -------------------------------------------------------------------------------------
    def _mend(self, conn: Connection, lo: int | None, hi: int) -> None:
        """Mend the links first shown in [lo, hi) by an event that is no longer stored: each
        takes the earliest stored event that shows it, or goes when none does."""
        seen: set[tuple[str, ...]] = set()
        while self._mend_some(conn, lo, hi, seen):
            pass

    def _mend_some(
        self, conn: Connection, lo: int | None, hi: int, seen: set[tuple[str, ...]]
    ) -> int:
        """One batch of :meth:`_mend`; returns how many links it mended (0: none left)."""
        pg = conn.dialect.name == "postgresql"
        gone = (
            "NOT EXISTS (SELECT 1 FROM events e WHERE e.source = l.source "
            "AND e.event_id = l.event_id AND e.occurred_at = l.occurred_at)"
        )
        lower = f"l.occurred_at >= {int(lo)} AND " if lo is not None else ""
        # PostgreSQL: lock the links first, in the order ingest upserts them, then decide in
        # fresh statements, which see every event committed before the locks were granted
        c = ' COLLATE "C"'
        order = f" ORDER BY l.kind{c}, l.object_id{c}, l.link_kind{c}, l.link_id{c}" if pg else ""
        keys = [
            tuple(r)
            for r in conn.exec_driver_sql(
                f"SELECT l.kind, l.object_id, l.link_kind, l.link_id FROM links l "
                f"WHERE {lower}l.occurred_at < {int(hi)} AND {gone}{order} LIMIT {self.batch}"
                + (" FOR UPDATE" if pg else "")
            ).all()
        ]
        fresh = [k for k in keys if k not in seen]  # mended links never come back; a guard
        if not fresh:
            return 0
        seen.update(fresh)
        self.res.links += _decide_links(conn, _mark(conn), fresh)
        return len(fresh)

    # -- whole months (PostgreSQL) ---------------------------------------------------------------
    def _months(self) -> None:
        with self.engine.connect() as conn:
            pending = [p for p in partitions(conn, pending=True) if p not in partitions(conn)]
            leftovers = _detached_under_way(conn)
        for p in pending:  # a DETACH … CONCURRENTLY that was interrupted
            self._autocommit(f"ALTER TABLE events DETACH PARTITION {_quote_ident(p.name)} FINALIZE")
            leftovers = [*leftovers, (p.name, p.lo, p.hi, _progress_of(self.engine, p.name))]
        for name, lo, hi, done in leftovers:
            self._clean_month(name, lo, hi, done)
        with self.engine.connect() as conn:
            old = [p for p in partitions(conn) if p.hi <= self.cut]
        for p in old:
            q = _quote_ident(p.name)
            with self.engine.begin() as conn:
                conn.exec_driver_sql(
                    f"COMMENT ON TABLE {q} IS '{_PRUNING} [{p.lo}, {p.hi}) done to -1'"
                )
            self._autocommit(f"ALTER TABLE events DETACH PARTITION {q} CONCURRENTLY")
            self._clean_month(p.name, p.lo, p.hi, -1)

    def _autocommit(self, sql: str) -> None:
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(sql)

    def _clean_month(self, name: str, lo: int, hi: int, done: int) -> None:
        """A detached month: forget its events' object rows and identities (batch by batch,
        the progress kept in the table's comment), mend the links they showed, drop it."""
        q = _quote_ident(name)
        while True:
            with self.engine.begin() as conn:
                upto = conn.exec_driver_sql(
                    f"SELECT max(ingest_seq) FROM (SELECT ingest_seq FROM {q} WHERE ingest_seq > %s "
                    f"ORDER BY ingest_seq LIMIT {self.batch}) x",
                    (done,),
                ).scalar()
                if upto is None:
                    break
                rng = f"d.ingest_seq > {int(done)} AND d.ingest_seq <= {int(upto)}"
                n = int(
                    conn.exec_driver_sql(f"SELECT count(*) FROM {q} d WHERE {rng}").scalar_one()
                )
                self.res.event_objects += int(
                    conn.exec_driver_sql(
                        "DELETE FROM event_objects eo USING (SELECT k.key AS kind, v.value AS "
                        f"object_id, d.source, d.event_id FROM {q} d "
                        "CROSS JOIN LATERAL jsonb_each(d.objects::jsonb) k "
                        "CROSS JOIN LATERAL jsonb_array_elements_text(k.value) v "
                        f"WHERE d.objects <> '' AND {rng}) x WHERE eo.kind = x.kind "
                        "AND eo.object_id = x.object_id AND eo.source = x.source "
                        "AND eo.event_id = x.event_id"
                    ).rowcount
                )
                conn.exec_driver_sql(
                    f"DELETE FROM event_ids i USING {q} d WHERE {rng} "
                    "AND i.source = d.source AND i.event_id = d.event_id"
                )
                conn.exec_driver_sql(
                    f"COMMENT ON TABLE {q} IS '{_PRUNING} [{lo}, {hi}) done to {int(upto)}'"
                )
                done = int(upto)
            self.res.events += n
            self.tick(n, f"events of {name}")
        seen: set[tuple[str, ...]] = set()
        while True:  # one transaction per batch of links
            with self.engine.begin() as conn:
                if not self._mend_some(conn, lo, hi, seen):
                    break
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE {q}")
        self.res.partitions.append(name)
        logger.info("dropped partition %s", name)


def _progress_of(engine: Engine, name: str) -> int:
    with engine.connect() as conn:
        note = conn.exec_driver_sql(
            "SELECT obj_description(to_regclass(%s), 'pg_class')", (name,)
        ).scalar()
    m = _PRUNING_RE.search(note or "")
    return int(m.group(3)) if m else -1


def _detached_under_way(conn: Connection) -> list[tuple[str, int, int, int]]:
    """Months a prune detached and had not finished with: (table, lo, hi, done to seq)."""
    rows = conn.exec_driver_sql(
        "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
        "WHERE c.relkind = 'r' AND pg_table_is_visible(c.oid) "
        "AND obj_description(c.oid, 'pg_class') LIKE %s "
        "AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)",
        (_PRUNING + "%",),
    ).all()
    out = []
    for name, note in rows:
        m = _PRUNING_RE.search(note or "")
        if m:
            out.append((str(name), int(m.group(1)), int(m.group(2)), int(m.group(3))))
    return sorted(out, key=lambda x: x[1])


def _forget_mentions(conn: Connection, rows: Sequence[Sequence[Any]]) -> int:
    """Delete the event_objects rows of deleted events (occurred_at, source, event_id, objects)."""
    mentions = sorted(
        {
            (kind, oid, r[1], r[2])
            for r in rows
            if r[3]
            for kind, ids in orjson.loads(r[3]).items()
            for oid in ids
        }
    )
    if not mentions:
        return 0
    m = _mark(conn)
    cur = _raw(conn).cursor()
    try:
        cur.executemany(
            f"DELETE FROM event_objects WHERE kind = {m} AND object_id = {m} AND source = {m} "
            f"AND event_id = {m}",
            mentions,
        )
        return int(cur.rowcount)
    finally:
        cur.close()


def _decide_links(conn: Connection, m: str, keys: Sequence[tuple[str, str, str, str]]) -> int:
    """For links whose recorded event is gone: delete those no stored event shows, point the
    others at the earliest stored event that shows them. Returns how many it deleted."""
    removed = 0
    first = " ORDER BY e.occurred_at, e.source, e.event_id LIMIT 1"
    where = f"kind = {m} AND object_id = {m} AND link_kind = {m} AND link_id = {m}"
    cur = _raw(conn).cursor()
    try:
        for is_order in (True, False):
            part = [k for k in keys if (k[2] == "") == is_order]
            if not part:
                continue
            shows = (_SHOWS_ORDER if is_order else _SHOWS_OBJECT).format(m=m)
            args = [(k[0], k[1], k[3]) if is_order else (k[0], k[1], k[2], k[3]) for k in part]
            cur.executemany(
                f"DELETE FROM links WHERE {where} AND NOT EXISTS (SELECT 1 {shows})",
                [(*k, *a) for k, a in zip(part, args, strict=True)],
            )
            removed += max(int(cur.rowcount), 0)
            cur.executemany(
                "UPDATE links SET (occurred_at, source, event_id) = "
                f"(SELECT e.occurred_at, e.source, e.event_id {shows}{first}) WHERE {where}",
                [(*a, *k) for k, a in zip(part, args, strict=True)],
            )
    finally:
        cur.close()
    return removed
