"""Read queries for reconciliation: the events of a window (columnar, hop and phase as small
integers), the objects they name, the links that tie objects to orders, attribute values, and
the same for a few chosen orders or objects (trace, probes). All the engine's SQL lives here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
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


@dataclass
class WindowData:
    """Columnar inputs of the engine: events, the objects they name, links.

    Events: ``seq`` (ingest_seq), ``order_id`` ("" for none), ``hop`` (index into the pipeline's
    hops), ``phase`` (PHASE_CODES), ``t`` (µs). Mentions: event position ``m_event`` (index into
    the event arrays), ``m_kind``, ``m_object``. Links: object ``l_kind``/``l_object`` with
    ``l_link_kind`` ("" = an order) and ``l_link_id``.
    """

    seq: I64
    order_id: Obj
    hop: I64
    phase: I64
    t: I64
    m_event: I64 = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    m_kind: Obj = field(default_factory=lambda: np.empty(0, dtype=object))
    m_object: Obj = field(default_factory=lambda: np.empty(0, dtype=object))
    l_kind: Obj = field(default_factory=lambda: np.empty(0, dtype=object))
    l_object: Obj = field(default_factory=lambda: np.empty(0, dtype=object))
    l_link_kind: Obj = field(default_factory=lambda: np.empty(0, dtype=object))
    l_link_id: Obj = field(default_factory=lambda: np.empty(0, dtype=object))

    def __len__(self) -> int:
        return len(self.seq)


def _hop_case(hops: Sequence[str], col: str = "hop") -> str:
    whens = " ".join(f"WHEN {_quote(h)} THEN {i}" for i, h in enumerate(hops))
    return f"CASE {col} {whens} ELSE -1 END"


def _phase_case(col: str = "phase") -> str:
    whens = " ".join(f"WHEN {_quote(p)} THEN {c}" for p, c in PHASE_CODES.items())
    return f"CASE {col} {whens} ELSE 0 END"


def _time_filter(dialect: str, scan: bool, alias: str = "e") -> str:
    # "+col" keeps SQLite off the time index: a window that holds most events is read fastest by
    # a plain scan
    plus = "+" if dialect == "sqlite" and scan else ""
    return f"{plus}{alias}.occurred_at > :lo AND {plus}{alias}.occurred_at <= :hi"


def _bind(sql: str, lo: int, hi: int) -> str:
    return sql.replace(":lo", str(int(lo))).replace(":hi", str(int(hi)))


def window_events(
    conn: Connection, hops: Sequence[str], lo: int, hi: int, *, scan: bool = False
) -> WindowData:
    """Every event of the window ``lo < occurred_at <= hi`` at a hop of the pipeline."""
    d = conn.dialect.name
    sql = (
        f"SELECT e.ingest_seq, e.order_id, {_hop_case(hops, 'e.hop')}, {_phase_case('e.phase')}, "
        f"e.occurred_at FROM events e WHERE {_time_filter(d, scan)}"
    )
    data = _events_from_rows(_raw_rows(conn, _bind(sql, lo, hi)))
    mentions = _raw_rows(conn, _bind(_mentions_sql(d, scan), lo, hi))
    _attach_mentions(data, mentions)
    return data


def _mentions_sql(dialect: str, scan: bool) -> str:
    if dialect == "postgresql":
        return (
            "SELECT e.ingest_seq, k.key, v.value FROM events e "
            "CROSS JOIN LATERAL jsonb_each(e.objects::jsonb) k "
            "CROSS JOIN LATERAL jsonb_array_elements_text(k.value) v "
            f"WHERE e.objects <> '' AND {_time_filter(dialect, scan)}"
        )
    return (
        "SELECT e.ingest_seq, k.key, v.value FROM events e, json_each(e.objects) k, "
        f"json_each(k.value) v WHERE e.objects <> '' AND {_time_filter(dialect, scan)}"
    )


def _events_from_rows(rows: list[tuple[Any, ...]]) -> WindowData:
    cols: list[Any] = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
    seq = np.fromiter(cols[0], dtype=np.int64, count=len(cols[0]))
    order_id = np.array(cols[1], dtype=object)
    hop = np.fromiter(cols[2], dtype=np.int64, count=len(cols[2]))
    phase = np.fromiter(cols[3], dtype=np.int64, count=len(cols[3]))
    t = np.fromiter(cols[4], dtype=np.int64, count=len(cols[4]))
    keep = hop >= 0
    if len(hop) and not keep.all():
        seq, order_id, hop, phase, t = seq[keep], order_id[keep], hop[keep], phase[keep], t[keep]
    order = np.argsort(seq, kind="stable")
    return WindowData(seq[order], order_id[order], hop[order], phase[order], t[order])


def _attach_mentions(data: WindowData, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    seqs = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    pos = np.searchsorted(data.seq, seqs)
    pos = np.minimum(pos, max(len(data.seq) - 1, 0))
    ok = (len(data.seq) > 0) & (data.seq[pos] == seqs) if len(data.seq) else np.zeros(0, bool)
    data.m_event = pos[ok].astype(np.int64)
    data.m_kind = np.array([r[1] for r in rows], dtype=object)[ok]
    data.m_object = np.array([str(r[2]) for r in rows], dtype=object)[ok]


def links_until(conn: Connection, as_of: int) -> tuple[Obj, Obj, Obj, Obj]:
    """Every link shown by an event at or before ``as_of`` (links hold for good)."""
    rows = _raw_rows(
        conn,
        "SELECT kind, object_id, link_kind, link_id FROM links WHERE occurred_at <= "
        + str(int(as_of)),
    )
    return _link_columns(rows)


def _link_columns(rows: list[tuple[Any, ...]]) -> tuple[Obj, Obj, Obj, Obj]:
    if not rows:
        e = np.empty(0, dtype=object)
        return e, e.copy(), e.copy(), e.copy()
    k, o, lk, li = zip(*rows, strict=True)
    return (
        np.array(k, dtype=object),
        np.array(o, dtype=object),
        np.array(lk, dtype=object),
        np.array(li, dtype=object),
    )


def attach_links(data: WindowData, links: tuple[Obj, Obj, Obj, Obj]) -> None:
    data.l_kind, data.l_object, data.l_link_kind, data.l_link_id = links


# -- attribute values ----------------------------------------------------------------------------


def _json_typed(dialect: str, key: str) -> tuple[str, str]:
    """SQL for (JSON type, value) of one top-level attribute."""
    if dialect == "postgresql":
        k = _quote(key)
        return f"jsonb_typeof(e.attributes::jsonb -> {k})", f"(e.attributes::jsonb ->> {k})"
    path = _quote('$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return f"json_type(e.attributes, {path})", f"json_extract(e.attributes, {path})"


def _typed_value(typ: str | None, v: Any) -> Any:
    """A JSON value as Python, whatever the database: booleans stay booleans."""
    if typ in ("true", "false"):
        return typ == "true"
    if typ == "boolean":
        return v in ("true", True)
    if typ in ("integer", "real"):
        return v
    if typ == "number":
        f = float(v)
        return int(v) if f.is_integer() and "." not in str(v) and "e" not in str(v).lower() else f
    if typ in ("object", "array"):
        return orjson.loads(v) if isinstance(v, str | bytes) else v
    return v  # text / string


@dataclass
class AttributeValues:
    """Non-null values of one attribute on the window's events, with the tie-break keys."""

    seq: I64
    t: I64
    source: Obj
    event_id: Obj
    value: Obj


def attribute_values(
    conn: Connection,
    key: str,
    lo: int,
    hi: int,
    *,
    hops: Sequence[str] | None = None,
    seqs: Iterable[int] | None = None,
    scan: bool = False,
) -> AttributeValues:
    """Events of the window carrying attribute ``key`` (not null), optionally at ``hops`` or
    among ``seqs``."""
    d = conn.dialect.name
    typ, val = _json_typed(d, key)
    sql = (
        f"SELECT e.ingest_seq, e.occurred_at, e.source, e.event_id, {typ}, {val} FROM events e "
        f"WHERE {_time_filter(d, scan)} AND {typ} IS NOT NULL AND {typ} <> 'null'"
    )
    if hops is not None:
        if not hops:
            return _attr_columns([])
        sql += " AND e.hop IN (" + ", ".join(_quote(h) for h in hops) + ")"
    if seqs is not None:
        ids = sorted({int(s) for s in seqs})
        if not ids:
            return _attr_columns([])
        sql += " AND e.ingest_seq IN (" + ", ".join(map(str, ids)) + ")"
    return _attr_columns(_raw_rows(conn, _bind(sql, lo, hi)))


def _attr_columns(rows: list[tuple[Any, ...]]) -> AttributeValues:
    n = len(rows)
    return AttributeValues(
        np.fromiter((r[0] for r in rows), dtype=np.int64, count=n),
        np.fromiter((r[1] for r in rows), dtype=np.int64, count=n),
        np.array([r[2] for r in rows], dtype=object),
        np.array([r[3] for r in rows], dtype=object),
        np.array([_typed_value(r[4], r[5]) for r in rows] if n else [], dtype=object),
    )


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


def object_kinds_of(conn: Connection, object_id: str) -> list[str]:
    """The kinds under which an id was ever named."""
    m = _mark(conn)
    rows = _raw_rows(
        conn,
        f"SELECT DISTINCT kind FROM event_objects WHERE object_id = {m} "
        f"UNION SELECT DISTINCT kind FROM links WHERE object_id = {m}",
        (object_id, object_id),
    )
    return sorted(r[0] for r in rows)


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
) -> WindowData:
    """The window's events of chosen orders plus those naming chosen objects, with their
    mentions (only the mentions of chosen objects and of the events' own lists)."""
    d = conn.dialect.name
    m = _mark(conn)
    base = (
        f"SELECT e.ingest_seq, e.order_id, {_hop_case(hops, 'e.hop')}, {_phase_case('e.phase')}, "
        "e.occurred_at, e.objects FROM events e"
    )
    tf = _bind(_time_filter(d, False), lo, hi)
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
    ordered = [rows[s] for s in sorted(rows)]
    data = _events_from_rows([r[:5] for r in ordered])
    mentions: list[tuple[Any, ...]] = []
    for r in ordered:
        if r[5]:
            for kind, ids in orjson.loads(r[5]).items():
                mentions.extend((int(r[0]), kind, i) for i in ids)
    _attach_mentions(data, mentions)
    return data


def links_among(
    conn: Connection, objects: Iterable[tuple[str, str]], as_of: int
) -> tuple[Obj, Obj, Obj, Obj]:
    """The links of chosen objects (as of ``as_of``)."""
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
    return _link_columns(rows)


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
