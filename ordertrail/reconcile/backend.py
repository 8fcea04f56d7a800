"""Where the rules read events from: a small interface, and its SQL store implementation.

``load`` gives the window's events (all of them, or those of chosen orders and objects) with
links and the attribute values the rules compare; ``progress`` answers vanished-vs-stalled for
a state that does not hold every order; ``event_keys`` and ``event_details`` serve tie-breaks
and evidence. The one-order view used by ``trace`` is the same backend with chosen orders.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ordertrail.reconcile.columnar import WindowDB
from ordertrail.reconcile.evidence import EdgeProgress
from ordertrail.reconcile.plan import Plan
from ordertrail.store import Store
from ordertrail.store import window as w
from ordertrail.store.arrow import Reader

F = npt.NDArray[np.float64]


class Backend(Protocol):
    """Where the rules read events from (the SQL store; Spark reads through its own passes)."""

    def window(
        self, plan: Plan, lo: int, hi: int, *, orders: Sequence[str] | None = None,
        objects: Sequence[tuple[str, str]] | None = None, memory: str | None = None,
        max_seq: int | None = None, path: str | None = None,
    ) -> WindowDB: ...  # fmt: skip

    def event_keys(self, seqs: Sequence[int]) -> tuple[list[str], list[str]]: ...

    def event_details(self, seqs: Sequence[int]) -> dict[int, dict[str, Any]]: ...

    def started_before(self, orders: Sequence[str], when: int) -> set[str]: ...


class SqlBackend:
    """The SQL store (SQLite or PostgreSQL) as the rules' event source."""

    def __init__(self, store: Store):
        self.store = store

    def window(
        self, plan: Plan, lo: int, hi: int, *, orders: Sequence[str] | None = None,
        objects: Sequence[tuple[str, str]] | None = None, memory: str | None = None,
        max_seq: int | None = None, path: str | None = None,
    ) -> WindowDB:  # fmt: skip
        """The window ``lo < t <= hi`` (or the part of it about chosen orders and objects),
        staged in DuckDB (in memory, or in the database file ``path``)."""
        return load_db(
            self,
            plan,
            lo,
            hi,
            orders=orders,
            objects=objects,
            memory=memory,
            max_seq=max_seq,
            path=path,
        )

    def event_keys(self, seqs: Sequence[int]) -> tuple[list[str], list[str]]:
        with self.store.engine.connect() as conn:
            rows = w.event_keys(conn, seqs)
        return [rows[int(s)][0] for s in seqs], [rows[int(s)][1] for s in seqs]

    def event_details(self, seqs: Sequence[int]) -> dict[int, dict[str, Any]]:
        with self.store.engine.connect() as conn:
            return w.event_details(conn, seqs)

    def started_before(self, orders: Sequence[str], when: int) -> set[str]:
        with self.store.engine.connect() as conn:
            return w.orders_with_events_before(conn, orders, when)


def _attr_queries(
    plan: Plan, dialect: str, lo: int, hi: int, seqs: list[int] | None, scan: bool,
    delta: tuple[int, int, int] | None = None,
) -> list[tuple[tuple[str, str], str | None]]:  # fmt: skip
    """The attribute queries the rules need: (role, key) -> SQL (None when nothing can match)."""
    cfg = plan.config
    kw: dict[str, Any] = {"seqs": seqs, "scan": scan, "delta": delta}
    out: list[tuple[tuple[str, str], str | None]] = [
        (("when", a), w.attribute_sql(dialect, a, lo, hi, **kw)) for a in plan.condition_attrs
    ]
    seen: set[str] = set()
    for hp in cfg.hops:
        if hp.unique_by and hp.unique_by not in seen:
            seen.add(hp.unique_by)
            hops = [h.name for h in cfg.hops if h.unique_by == hp.unique_by]
            out.append(
                (("unique", hp.unique_by),
                 w.attribute_sql(dialect, hp.unique_by, lo, hi, hops=hops, **kw))
            )  # fmt: skip
    for j, chk in enumerate(cfg.checks):
        out.append(
            (("check", f"{j}:{chk.field}"),
             w.attribute_sql(dialect, chk.field, lo, hi, hops=chk.hops, **kw))
        )  # fmt: skip
    return out


def load_db(
    backend: SqlBackend,
    plan: Plan,
    lo: int,
    hi: int,
    *,
    orders: Sequence[str] | None = None,
    objects: Sequence[tuple[str, str]] | None = None,
    memory: str | None = None,
    max_seq: int | None = None,
    path: str | None = None,
) -> WindowDB:
    """The window (or the part of it about chosen orders and objects) staged in DuckDB: events
    stored up to ``max_seq`` (default: all stored now)."""
    store = backend.store
    d = store.dialect
    chosen = orders is not None or objects is not None
    total = 0
    stored = 0
    db = WindowDB(plan, memory=memory, path=path, small=chosen)
    try:
        with store.engine.connect() as conn:
            if chosen:
                scan = False
                chosen_objs = set(objects or ())
                chosen_objs |= w.objects_of_orders(conn, list(orders or ()), plan.via, hi)
                chosen_tables = w.chosen_window(
                    conn, plan.names, lo, hi, list(orders or ()), chosen_objs
                )
                seqs: list[int] | None = chosen_tables[0].column("seq").to_pylist()
            else:
                total = w.count_window(conn, lo, hi)
                stored = store.max_ingest_seq() if max_seq is None else max_seq
                scan = total * 3 > stored  # most events are in the window: scan, not the index
                seqs = None
        queries = _attr_queries(plan, d, lo, hi, seqs, scan)
        db.create([key for key, _ in queries])
        if chosen:
            for name, tb in zip(("ev", "me", "li"), chosen_tables, strict=True):
                db.insert(name, tb)
        workers = _readers()
        sqls: list[str] = []
        targets: list[str] = []
        if not chosen:
            evs, links = w.window_tables(d, lo, hi, scan, stored, workers)
            # the links first: the longest query; the readers take the others as they finish
            sqls += [links, *evs]
            targets += ["li"] + ["*ev"] * len(evs)
        for key, q in queries:
            if q is not None:
                sqls.append(q)
                targets.append(db.attr_tables[key])
        cursors: dict[int, Any] = {}
        lock = threading.Lock()

        def consume(i: int, src: Any) -> None:
            tid = threading.get_ident()
            with lock:
                if tid not in cursors:
                    cursors[tid] = db.cursor()
            if targets[i] == "*ev":
                db.insert_stored(src, cursors[tid])
            else:
                db.insert(targets[i], src, cursors[tid])

        try:
            with Reader(store.engine, 0 if chosen else total) as reader:
                reader.stream(sqls, consume, workers)
        finally:
            for cur in cursors.values():
                cur.close()
        db.loaded()
    except BaseException:
        db.close()
        raise
    return db


def load_delta(
    backend: SqlBackend, db: WindowDB, lo: int, hi: int, hi_old: int, seq_old: int, seq: int
) -> None:
    """Bring a cached window (``hi_old``, events stored up to ``seq_old``) to ``lo < t <= hi``
    with the events stored up to ``seq``: read only what changed, then apply it in DuckDB."""
    store = backend.store
    d = store.dialect
    staging = db.begin_delta()
    sqls = w.delta_events_sqls(d, hi_old, hi, seq_old, seq)
    targets = ["*evn"] * len(sqls)
    for key, q in _attr_queries(db.plan, d, lo, hi, None, False, (hi_old, seq_old, seq)):
        if q is not None:
            sqls.append(q)
            targets.append(staging[key])

    def consume(i: int, src: Any) -> None:
        if targets[i] == "*evn":
            db.insert_stored(src, table="evn")
        else:
            db.insert(targets[i], src)

    with Reader(store.engine, seq - seq_old) as reader:
        reader.stream(sqls, consume)
    db.apply_delta(lo)


def _readers() -> int:
    """Readers working at once on a window: one per core, at most four."""
    return max(1, min(4, os.cpu_count() or 1))


def _typed_window(ev: Any, me: Any, li: Any) -> tuple[Any, Any, Any]:
    """The window's Arrow tables with the column types the staging expects, even when empty."""
    import pyarrow as pa

    def cast(tb: Any, schema: Any) -> Any:
        if tb.num_rows == 0:
            return pa.table({f.name: pa.array([], type=f.type) for f in schema})
        return tb.cast(schema)

    ev = cast(ev, pa.schema([("seq", pa.int64()), ("order_id", pa.string()), ("hop", pa.int32()),
                            ("phase", pa.int32()), ("t", pa.int64())]))  # fmt: skip
    me = cast(me, pa.schema([("seq", pa.int64()), ("obj", pa.string())]))
    li = cast(
        li, pa.schema([("obj", pa.string()), ("other", pa.string()), ("order_id", pa.string())])
    )
    return ev, me, li


class ProbeProgress:
    """Vanished-vs-stalled evidence for a state that holds only chosen orders: the edge's
    population is read for the orders that reached the edge's target (the most recent first)."""

    LIMIT = 20_000

    def __init__(self, backend: SqlBackend, plan: Plan, lo: int, hi: int):
        self.backend = backend
        self.plan = plan
        self.lo, self.hi = lo, hi
        self._cache: dict[int, EdgeProgress] = {}

    def __call__(self, req_index: int) -> EdgeProgress:
        if req_index in self._cache:
            return self._cache[req_index]
        plan = self.plan
        req = plan.requirements[req_index]
        with self.backend.store.engine.connect() as conn:
            cands = w.orders_at_hops(
                conn, [plan.names[m] for m in req.targets], self.lo, self.hi, plan.via, self.LIMIT
            )
        prog = EdgeProgress(np.empty(0), np.empty(0))
        if cands:
            from ordertrail.reconcile.rules import Context

            with self.backend.window(plan, self.lo, self.hi, orders=cands) as db:
                db.resolve()
                a, b = [], []
                for p in range(db.n_parts):
                    st, facts = db.part_state(p)
                    ctx = Context(st, self.hi, {}, facts=facts)
                    u = ctx.units(req.each)
                    pa_ = ctx.t_from(u, req.src)
                    pr = np.full(len(u), np.nan)
                    for m in req.targets:
                        pr = np.fmin(pr, u.reach_first[:, m])
                    ok = ~np.isnan(pa_) & ~np.isnan(pr)
                    a.append(pa_[ok])
                    b.append(pr[ok])
                prog = EdgeProgress(np.concatenate(a), np.concatenate(b))
        self._cache[req_index] = prog
        return prog
