"""Read queries for reconciliation: the events of a window (columnar, hop and phase as small
integers), the objects they name, the links that tie objects to orders, attribute values, and
the same for a few chosen orders or objects (trace, probes). All the engine's SQL lives here."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
from sqlalchemy import Connection, text

PHASE_CODES = {"completed": 0, "started": 1, "failed": 2}
I64 = npt.NDArray[np.int64]
Obj = npt.NDArray[np.object_]


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _raw_rows(conn: Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows through the DBAPI cursor: plain tuples, no Row objects (5x faster for millions)."""
    raw = conn.connection.driver_connection
    assert raw is not None
    cur = raw.cursor()
    try:
        cur.execute(sql, tuple(params)) if params else cur.execute(sql)
        return cur.fetchall()
    finally:
        cur.close()


def _mark(conn: Connection) -> str:
    return "%s" if conn.dialect.name == "postgresql" else "?"


OBJ_SEP = ":"  # "kind:id": object kinds never hold a colon (the config says so), ids may


def _hop_case(hops: Sequence[str], col: str = "hop") -> str:
    whens = " ".join(f"WHEN {_quote(h)} THEN {i}" for i, h in enumerate(hops))
    return f"CASE {col} {whens} ELSE -1 END"


def _phase_case(col: str = "phase") -> str:
    whens = " ".join(f"WHEN {_quote(p)} THEN {c}" for p, c in PHASE_CODES.items())
    return f"CASE {col} {whens} ELSE 0 END"


def _time_filter(dialect: str, scan: bool, lo: int, hi: int, alias: str = "e") -> str:
    """The window condition with its bounds as integer literals (never substituted into SQL
    text afterwards: a hop name may contain anything, ':lo' too). "+col" keeps SQLite off the
    time index: a window that holds most events is read fastest by a plain scan."""
    plus = "+" if dialect == "sqlite" and scan else ""
    return f"{plus}{alias}.occurred_at > {int(lo)} AND {plus}{alias}.occurred_at <= {int(hi)}"


def _concat(dialect: str, *parts: str) -> str:
    return " || ".join(parts) if dialect == "sqlite" else "CONCAT(" + ", ".join(parts) + ")"


def events_sql(
    dialect: str, lo: int, hi: int, scan: bool, seqs: tuple[int, int] | None = None
) -> str:
    """The window's events as stored: hop and phase as text (the engine codes them), the
    objects they name as JSON text. ``seqs`` = (after, up to) bounds ``ingest_seq``, so that
    parallel readers each take a slice and none sees rows stored after the run began."""
    where = _time_filter(dialect, scan, lo, hi)
    if seqs is not None:
        where += f" AND e.ingest_seq > {int(seqs[0])} AND e.ingest_seq <= {int(seqs[1])}"
    return (
        "SELECT e.ingest_seq AS seq, e.order_id AS order_id, e.hop AS hop, e.phase AS phase, "
        f"e.occurred_at AS t, e.objects AS objects FROM events e WHERE {where}"
    )


def links_sql(dialect: str, as_of: int, scan: bool = False) -> str:
    """Every link shown by an event at or before ``as_of``. ``scan``: most links qualify (a
    window ending now), so SQLite reads the table through rather than through the time index
    (a row lookup per link: three times slower)."""
    sep = _quote(OBJ_SEP)
    obj = _concat(dialect, "kind", sep, "object_id")
    other = (
        f"CASE WHEN link_kind = '' THEN '' ELSE {_concat(dialect, 'link_kind', sep, 'link_id')} END"
    )
    order = "CASE WHEN link_kind = '' THEN link_id ELSE '' END"
    plus = "+" if dialect == "sqlite" and scan else ""
    return (
        f"SELECT {obj} AS obj, {other} AS other, {order} AS order_id FROM links "
        f"WHERE {plus}occurred_at <= {int(as_of)}"
    )


def delta_events_sqls(dialect: str, hi_old: int, hi: int, seq_old: int, seq: int) -> list[str]:
    """What an incremental run reads beside its cache: events stored since the last run (up to
    ``seq``; at any time up to ``hi``, since links hold from before the window too), and events
    stored before it whose time was past its end (``hi_old``) and now is not."""
    cols = (
        "SELECT e.ingest_seq AS seq, e.order_id AS order_id, e.hop AS hop, e.phase AS phase, "
        "e.occurred_at AS t, e.objects AS objects FROM events e WHERE "
    )
    return [
        cols + f"e.ingest_seq > {int(seq_old)} AND e.ingest_seq <= {int(seq)} "
        f"AND e.occurred_at <= {int(hi)}",
        cols + f"e.occurred_at > {int(hi_old)} AND e.occurred_at <= {int(hi)} "
        f"AND e.ingest_seq <= {int(seq_old)}",
    ]


def window_tables(
    dialect: str, lo: int, hi: int, scan: bool, max_seq: int, slices: int = 1
) -> tuple[list[str], str]:
    """The queries of a window: its events (in ``slices`` ingest_seq ranges when the window is
    read by a scan, so that several readers share it) and every link shown by an event at or
    before ``hi`` (links hold for good)."""
    n = max(1, slices) if scan else 1
    bounds = [max_seq * k // n for k in range(n + 1)]
    bounds[0] = -1
    evs = [events_sql(dialect, lo, hi, scan, (bounds[k], bounds[k + 1])) for k in range(n)]
    return evs, links_sql(dialect, hi, scan)


def coded_events_sql(
    dialect: str, hops: Sequence[str], lo: int, hi: int, scan: bool, max_seq: int
) -> str:
    """The window's events with hop and phase as the plan's codes (-1: no hop of the
    pipeline), stored up to ``max_seq``: what an engine outside this process stages (Spark,
    an export)."""
    return (
        f"SELECT e.ingest_seq AS seq, e.order_id AS order_id, {_hop_case(hops, 'e.hop')} AS hop, "
        f"{_phase_case('e.phase')} AS phase, e.occurred_at AS t FROM events e "
        f"WHERE {_time_filter(dialect, scan, lo, hi)} AND e.ingest_seq <= {int(max_seq)}"
    )


def mentions_sql(dialect: str, lo: int, hi: int, scan: bool, max_seq: int) -> str:
    """The objects the window's events name ("kind:id", one row each), from their stored JSON,
    as the local engine expands it in DuckDB (events of every hop, known or not)."""
    sep = _quote(OBJ_SEP)
    obj = _concat(dialect, "k.key", sep, "v.value")
    where = (
        f"e.objects <> '' AND {_time_filter(dialect, scan, lo, hi)} "
        f"AND e.ingest_seq <= {int(max_seq)}"
    )
    if dialect == "postgresql":
        return (
            f"SELECT e.ingest_seq AS seq, {obj} AS obj FROM events e "
            "CROSS JOIN LATERAL jsonb_each(e.objects::jsonb) k "
            f"CROSS JOIN LATERAL jsonb_array_elements_text(k.value) v WHERE {where}"
        )
    return (
        f"SELECT e.ingest_seq AS seq, {obj} AS obj FROM events e, json_each(e.objects) k, "
        f"json_each(k.value) v WHERE {where}"
    )


def staged_window_tables(
    dialect: str, hops: Sequence[str], lo: int, hi: int, scan: bool, max_seq: int
) -> list[str]:
    """The window as the engine stages it, in three queries: coded events, the objects they
    name, and every link shown by an event at or before ``hi``."""
    return [coded_events_sql(dialect, hops, lo, hi, scan, max_seq),
            mentions_sql(dialect, lo, hi, scan, max_seq), links_sql(dialect, hi)]  # fmt: skip


def bucket_share(sql: str, k: int, n: int) -> str:
    """One of the window's event queries (events aliased ``e``, ending in its WHERE clause) cut
    to the k-th of n ranges of order_bucket: one parallel reader's share (Spark over JDBC)."""
    from ordertrail.store.writer import BUCKETS

    lo_b, hi_b = k * BUCKETS // n, (k + 1) * BUCKETS // n
    return f"{sql} AND e.order_bucket >= {int(lo_b)} AND e.order_bucket < {int(hi_b)}"


def links_share(sql: str, k: int, n: int) -> str:
    """The links query cut to the k-th of n shares by a hash of the object id (PostgreSQL)."""
    return f"{sql} AND mod(hashtext(object_id) & 2147483647, {int(n)}) = {int(k)}"


def json_text(dialect: str, key: str) -> str:
    """SQL for one top-level attribute as JSON text ('19.99', '"pickup"', 'true'), or NULL."""
    if dialect == "postgresql":
        return f"((e.attributes::jsonb -> {_quote(key)})::text)"
    path = _quote('$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return f"(e.attributes -> {path})"


def attribute_sql(
    dialect: str,
    key: str,
    lo: int,
    hi: int,
    *,
    hops: Sequence[str] | None = None,
    seqs: Iterable[int] | None = None,
    scan: bool = False,
    delta: tuple[int, int, int] | None = None,
) -> str | None:
    """Events of the window carrying attribute ``key`` (not null), optionally at ``hops`` or
    among ``seqs``, with the value as JSON text; None when nothing can match. ``delta`` =
    (hi_old, seq_old, seq): only the events an incremental run reads (see delta_events_sqls)."""
    val = json_text(dialect, key)
    # the cheap conditions first: SQLite evaluates them in order, the JSON only where they hold
    where = [_time_filter(dialect, scan, lo, hi)]
    if delta is not None:
        hi_old, s0, s1 = (int(x) for x in delta)
        where.append(
            f"((e.ingest_seq > {s0} AND e.ingest_seq <= {s1}) OR "
            f"(e.occurred_at > {hi_old} AND e.ingest_seq <= {s0}))"
        )
    if hops is not None:
        if not hops:
            return None
        where.append("e.hop IN (" + ", ".join(_quote(h) for h in hops) + ")")
    if seqs is not None:
        ids = sorted({int(s) for s in seqs})
        if not ids:
            return None
        where.append("e.ingest_seq IN (" + ", ".join(map(str, ids)) + ")")
    where += [f"{val} IS NOT NULL", f"{val} <> 'null'"]
    return (
        f"SELECT e.ingest_seq AS seq, e.occurred_at AS t, e.source AS src, e.event_id AS eid, "
        f"{val} AS v FROM events e WHERE " + " AND ".join(where)
    )


def count_stored(conn: Connection, seq: int) -> list[Any]:
    """How many events are stored up to ingest_seq ``seq`` and which event holds ``seq``: fewer
    than before, or another event there, means events were removed (or a number reused)."""
    # all events (SQLite counts them over its smallest index) minus those after seq (a range
    # of the primary key): far cheaper than counting the range up to seq
    total = int(conn.execute(text("SELECT COUNT(*) FROM events")).scalar_one())
    after = int(
        conn.execute(
            text(f"SELECT COUNT(*) FROM events WHERE ingest_seq > {int(seq)}")
        ).scalar_one()
    )
    n = total - after
    row = conn.execute(
        text(f"SELECT source, event_id FROM events WHERE ingest_seq = {int(seq)}")
    ).first()
    return [n, *(list(row) if row else [None, None])]


def count_window(conn: Connection, lo: int, hi: int) -> int:
    return int(
        conn.execute(
            text("SELECT COUNT(*) FROM events WHERE occurred_at > :lo AND occurred_at <= :hi"),
            {"lo": lo, "hi": hi},
        ).scalar_one()
    )


def event_details(conn: Connection, seqs: Iterable[int]) -> dict[int, dict[str, Any]]:
    """hop, phase, time, source and source_ref of chosen events (evidence: the last event)."""
    ids = sorted({int(s) for s in seqs})
    out: dict[int, dict[str, Any]] = {}
    for k in range(0, len(ids), 900):
        part = ids[k : k + 900]
        rows = _raw_rows(
            conn,
            "SELECT ingest_seq, hop, phase, occurred_at, source, source_ref FROM events "
            "WHERE ingest_seq IN (" + ", ".join(map(str, part)) + ")",
        )
        for r in rows:
            out[int(r[0])] = {"hop": r[1], "phase": r[2], "at": int(r[3]), "source": r[4],
                              "source_ref": r[5]}  # fmt: skip
    return out


# -- a few chosen orders or objects --------------------------------------------------------------


def orders_of_object(
    conn: Connection, kind: str | None, object_id: str, via: dict[str, str | None], as_of: int
) -> list[str]:
    """The orders an object belongs to (through ``via`` chains), as of ``as_of``.

    ``kind`` None: any kind with that id."""
    m = _mark(conn)
    kinds = [kind] if kind else [k for k in via]
    out: set[str] = set()
    for k in kinds:
        out |= _resolve_object(conn, k, object_id, via, as_of, m, depth=0)
    return sorted(out)


def _resolve_object(
    conn: Connection, kind: str, oid: str, via: dict[str, str | None], as_of: int, m: str,
    depth: int,
) -> set[str]:  # fmt: skip
    rows = _raw_rows(
        conn,
        f"SELECT link_kind, link_id FROM links WHERE kind = {m} AND object_id = {m} "
        f"AND occurred_at <= {m}",
        (kind, oid, int(as_of)),
    )
    out = {r[1] for r in rows if r[0] == ""}
    v = via.get(kind)
    if v and depth < len(via):
        for lk, li in rows:
            if lk == v:
                out |= _resolve_object(conn, v, li, via, as_of, m, depth + 1)
    return out


def object_kinds_of(conn: Connection, object_id: str, kinds: Sequence[str]) -> list[str]:
    """The kinds, among ``kinds`` (the configured ones), under which ``object_id`` was ever
    named: one primary-key lookup per kind (a lookup by id alone scans ``event_objects`` and
    ``links``: seconds on a large store)."""
    m = _mark(conn)
    out = []
    for k in kinds:
        if _raw_rows(
            conn,
            f"SELECT 1 FROM event_objects WHERE kind = {m} AND object_id = {m} LIMIT 1",
            (k, object_id),
        ) or _raw_rows(
            conn,
            f"SELECT 1 FROM links WHERE kind = {m} AND object_id = {m} LIMIT 1",
            (k, object_id),
        ):
            out.append(k)
    return out


def objects_of_orders(
    conn: Connection, orders: Sequence[str], via: dict[str, str | None], as_of: int
) -> set[tuple[str, str]]:
    """Every (kind, id) that belongs to one of ``orders``: linked directly, or through ``via``."""
    m = _mark(conn)
    found: set[tuple[str, str]] = set()
    for k in range(0, len(orders), 500):
        part = list(orders[k : k + 500])
        rows = _raw_rows(
            conn,
            f"SELECT kind, object_id FROM links WHERE link_kind = '' AND occurred_at <= {m} "
            f"AND link_id IN ({', '.join([m] * len(part))})",
            (int(as_of), *part),
        )
        found.update((r[0], r[1]) for r in rows)
    # kinds with via: linked with a via object that belongs to the orders; repeat for chains
    frontier = set(found)
    for _ in range(len(via)):
        new: set[tuple[str, str]] = set()
        for vk, vid in frontier:
            users = [k for k, v in via.items() if v == vk]
            if not users:
                continue
            rows = _raw_rows(
                conn,
                f"SELECT kind, object_id FROM links WHERE link_kind = {m} AND link_id = {m} "
                f"AND occurred_at <= {m}",
                (vk, vid, int(as_of)),
            )
            new.update((r[0], r[1]) for r in rows if r[0] in users)
        new -= found
        if not new:
            break
        found |= new
        frontier = new
    return found


def chosen_window(
    conn: Connection,
    hops: Sequence[str],
    lo: int,
    hi: int,
    orders: Sequence[str],
    objects: Iterable[tuple[str, str]],
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The window's events of chosen orders plus those naming chosen objects, with the objects
    they name and the links of all those objects (as of ``hi``): the ev, me and li tables."""
    d = conn.dialect.name
    m = _mark(conn)
    base = (
        f"SELECT e.ingest_seq, e.order_id, {_hop_case(hops, 'e.hop')}, {_phase_case('e.phase')}, "
        "e.occurred_at, e.objects FROM events e"
    )
    tf = _time_filter(d, False, lo, hi)
    rows: dict[int, tuple[Any, ...]] = {}
    olist = list(orders)
    for k in range(0, len(olist), 500):
        part = olist[k : k + 500]
        for r in _raw_rows(
            conn, f"{base} WHERE {tf} AND e.order_id IN ({', '.join([m] * len(part))})", part
        ):
            rows[int(r[0])] = r
    objs = sorted(set(objects))
    for k in range(0, len(objs), 200):
        opart = objs[k : k + 200]
        cond = " OR ".join([f"(eo.kind = {m} AND eo.object_id = {m})"] * len(opart))
        params = [x for pair in opart for x in pair]
        for r in _raw_rows(
            conn,
            f"{base} JOIN event_objects eo ON eo.source = e.source AND eo.event_id = e.event_id "
            f"WHERE {tf} AND ({cond})",
            params,
        ):
            rows[int(r[0])] = r
    ordered = [rows[s_] for s_ in sorted(rows)]
    m_seq: list[int] = []
    m_obj: list[str] = []
    named: set[tuple[str, str]] = set(objs)
    for r in ordered:
        if r[5]:
            for kind, ids in orjson.loads(r[5]).items():
                for i in ids:
                    m_seq.append(int(r[0]))
                    m_obj.append(f"{kind}{OBJ_SEP}{i}")
                    named.add((kind, i))
    lo_obj, lo_other, lo_order = links_among(conn, named, hi)
    keep = [r for r in ordered if r[2] >= 0]
    ev = pa.table({
        "seq": pa.array([int(r[0]) for r in keep], type=pa.int64()),
        "order_id": pa.array([r[1] for r in keep], type=pa.string()),
        "hop": pa.array([int(r[2]) for r in keep], type=pa.int32()),
        "phase": pa.array([int(r[3]) for r in keep], type=pa.int32()),
        "t": pa.array([int(r[4]) for r in keep], type=pa.int64()),
    })  # fmt: skip
    me = pa.table(
        {"seq": pa.array(m_seq, type=pa.int64()), "obj": pa.array(m_obj, type=pa.string())}
    )
    li = pa.table({"obj": pa.array(lo_obj, type=pa.string()),
                   "other": pa.array(lo_other, type=pa.string()),
                   "order_id": pa.array(lo_order, type=pa.string())})  # fmt: skip
    return ev, me, li


def links_among(
    conn: Connection, objects: Iterable[tuple[str, str]], as_of: int
) -> tuple[list[str], list[str], list[str]]:
    """The links of chosen objects (as of ``as_of``): (object, other object or "", order or "")."""
    m = _mark(conn)
    objs = sorted(set(objects))
    rows: list[tuple[Any, ...]] = []
    for k in range(0, len(objs), 200):
        part = objs[k : k + 200]
        cond = " OR ".join([f"(kind = {m} AND object_id = {m})"] * len(part))
        params = [x for pair in part for x in pair]
        rows.extend(
            _raw_rows(
                conn,
                f"SELECT kind, object_id, link_kind, link_id FROM links WHERE occurred_at <= "
                f"{int(as_of)} AND ({cond})",
                params,
            )
        )
    obj = [f"{r[0]}{OBJ_SEP}{r[1]}" for r in rows]
    other = [f"{r[2]}{OBJ_SEP}{r[3]}" if r[2] else "" for r in rows]
    order = [r[3] if not r[2] else "" for r in rows]
    return obj, other, order


def orders_like(conn: Connection, order_id: str) -> bool:
    m = _mark(conn)
    return bool(_raw_rows(conn, f"SELECT 1 FROM events WHERE order_id = {m} LIMIT 1", (order_id,)))


def last_activity(conn: Connection, hops: Sequence[str], lo: int, hi: int) -> dict[str, int]:
    """The latest completed or failed event per hop in the window."""
    rows = conn.execute(
        text(
            "SELECT hop, MAX(occurred_at) FROM events WHERE occurred_at > :lo AND "
            "occurred_at <= :hi AND phase IN ('completed', 'failed') GROUP BY hop"
        ),
        {"lo": lo, "hi": hi},
    ).fetchall()
    got = {r[0]: int(r[1]) for r in rows}
    return {h: got[h] for h in hops if h in got}


def last_activity_of(conn: Connection, hop: str, lo: int, hi: int) -> int | None:
    """The latest completed or failed event of one hop in the window (what ``last_activity``
    gives for that hop). A single MAX over the time index: SQLite and PostgreSQL walk it from
    ``hi`` backwards, so a hop that is active answers at once, without the window scan."""
    m = _mark(conn)
    rows = _raw_rows(
        conn,
        f"SELECT MAX(occurred_at) FROM events WHERE hop = {m} AND occurred_at > {int(lo)} AND "
        f"occurred_at <= {int(hi)} AND phase IN ('completed', 'failed')",
        (hop,),
    )
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


class LazyLastActivity(Mapping[str, "float | None"]):
    """``last_activity`` for ``hops`` read hop by hop, only for the hops asked about (a trace
    needs it only for the hop an overdue edge points to, often for none)."""

    def __init__(self, connect: Callable[[], Any], hops: Sequence[str], lo: int, hi: int):
        self._connect = connect
        self._hops = list(hops)
        self._lo, self._hi = lo, hi
        self._got: dict[str, float | None] = {}

    def __getitem__(self, hop: str) -> float | None:
        if hop not in self._hops:
            raise KeyError(hop)
        if hop not in self._got:
            with self._connect() as conn:
                v = last_activity_of(conn, hop, self._lo, self._hi)
            self._got[hop] = None if v is None else float(v)
        return self._got[hop]

    def __iter__(self) -> Iterator[str]:
        return iter(self._hops)

    def __len__(self) -> int:
        return len(self._hops)


def fill_temp_orders(conn: Connection, orders: Iterable[str]) -> None:
    conn.execute(text("CREATE TEMP TABLE IF NOT EXISTS _ot_orders (order_id TEXT PRIMARY KEY)"))
    conn.execute(text("DELETE FROM _ot_orders"))
    rows = [{"o": o} for o in orders]
    if rows:
        conn.execute(text("INSERT INTO _ot_orders (order_id) VALUES (:o)"), rows)


def event_keys(conn: Connection, seqs: Iterable[int]) -> dict[int, tuple[str, str]]:
    """(source, event_id) of chosen events (tie-breaks)."""
    ids = sorted({int(s) for s in seqs})
    out: dict[int, tuple[str, str]] = {}
    for k in range(0, len(ids), 900):
        part = ids[k : k + 900]
        for r in _raw_rows(
            conn,
            "SELECT ingest_seq, source, event_id FROM events WHERE ingest_seq IN ("
            + ", ".join(map(str, part))
            + ")",
        ):
            out[int(r[0])] = (r[1], r[2])
    return out


def orders_at_hops(
    conn: Connection, hops: Sequence[str], lo: int, hi: int, via: dict[str, str | None], limit: int
) -> list[str]:
    """Orders with an event at one of ``hops`` in the window, the most recent first (at most
    ``limit``): their own order id, or the orders of the objects the event names."""
    m = _mark(conn)
    hl = ", ".join(_quote(h) for h in hops)
    rows = _raw_rows(
        conn,
        f"SELECT e.order_id, e.objects FROM events e WHERE e.hop IN ({hl}) AND "
        f"e.occurred_at > {int(lo)} AND e.occurred_at <= {int(hi)} ORDER BY e.occurred_at DESC "
        f"LIMIT {int(limit) * 4}",
    )
    out: list[str] = []
    seen: set[str] = set()
    for oid, objs in rows:
        found = [oid] if oid else []
        if not oid and objs:
            for kind, ids in orjson.loads(objs).items():
                for i in ids:
                    found.extend(_resolve_object(conn, kind, i, via, hi, m, 0))
        for o in found:
            if o not in seen:
                seen.add(o)
                out.append(o)
        if len(out) >= limit:
            break
    return out


def first_event_time(conn: Connection, order_id: str, as_of: int) -> int | None:
    """The time of an order's first own event at or before ``as_of``."""
    m = _mark(conn)
    rows = _raw_rows(
        conn,
        f"SELECT MIN(occurred_at) FROM events WHERE order_id = {m} AND occurred_at <= {m}",
        (order_id, int(as_of)),
    )
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


def events_by_seq(conn: Connection, seqs: Iterable[int]) -> list[Any]:
    """Whole events (OrderEvent) by ingest_seq, in time order."""
    from ordertrail.store import row_to_event, tables

    ids = sorted({int(s) for s in seqs})
    out: list[Any] = []
    c = tables.events.c
    for k in range(0, len(ids), 900):
        q = tables.events.select().where(c.ingest_seq.in_(ids[k : k + 900]))
        out.extend(row_to_event(r) for r in conn.execute(q).mappings())
    return sorted(out, key=lambda e: (e.occurred_at, e.ingest_seq))


def orders_with_events_before(conn: Connection, orders: Sequence[str], when: int) -> set[str]:
    """Those of ``orders`` with an event of their own at or before ``when``."""
    m = _mark(conn)
    out: set[str] = set()
    olist = list(orders)
    for k in range(0, len(olist), 500):
        part = olist[k : k + 500]
        rows = _raw_rows(
            conn,
            f"SELECT DISTINCT order_id FROM events WHERE occurred_at <= {int(when)} "
            f"AND order_id IN ({', '.join([m] * len(part))})",
            part,
        )
        out.update(r[0] for r in rows)
    return out
