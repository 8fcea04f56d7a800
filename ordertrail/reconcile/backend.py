"""Where the rules read events from: a small interface, and its SQL store implementation.

``load`` gives the window's events (all of them, or those of chosen orders and objects) with
links and the attribute values the rules compare; ``progress`` answers vanished-vs-stalled for
a state that does not hold every order; ``event_keys`` and ``event_details`` serve tie-breaks
and evidence. The one-order view used by ``trace`` is the same backend with chosen orders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ordertrail.reconcile.evidence import EdgeProgress
from ordertrail.reconcile.plan import Plan, Requirement
from ordertrail.reconcile.state import State, build_state
from ordertrail.store import Store
from ordertrail.store import window as w
from ordertrail.store.arrow import Reader

F = npt.NDArray[np.float64]


@dataclass
class Loaded:
    data: w.WindowData
    condition_values: dict[str, w.AttributeValues] = field(default_factory=dict)
    unique_values: dict[str, w.AttributeValues] = field(default_factory=dict)
    check_values: list[w.AttributeValues] = field(default_factory=list)


class Backend(Protocol):
    def load(
        self, plan: Plan, lo: int, hi: int, *, orders: Sequence[str] | None = None,
        objects: Sequence[tuple[str, str]] | None = None,
    ) -> Loaded: ...  # fmt: skip

    def event_keys(self, seqs: Sequence[int]) -> tuple[list[str], list[str]]: ...

    def event_details(self, seqs: Sequence[int]) -> dict[int, dict[str, Any]]: ...


class SqlBackend:
    """The SQL store (SQLite or PostgreSQL) as the rules' event source."""

    def __init__(self, store: Store):
        self.store = store

    def load(
        self, plan: Plan, lo: int, hi: int, *, orders: Sequence[str] | None = None,
        objects: Sequence[tuple[str, str]] | None = None,
    ) -> Loaded:  # fmt: skip
        cfg = plan.config
        d = self.store.dialect
        chosen = orders is not None or objects is not None
        total = 0
        with self.store.engine.connect() as conn:
            if chosen:
                scan = False
                chosen_objs = set(objects or ())
                chosen_objs |= w.objects_of_orders(conn, list(orders or ()), plan.via, hi)
                data = w.chosen_window(conn, plan.names, lo, hi, list(orders or ()), chosen_objs)
                seqs: list[int] | None = data.seq.tolist()
            else:
                total = w.count_window(conn, lo, hi)
                stored = self.store.max_ingest_seq()
                scan = total * 3 > stored  # most events are in the window: scan, not the index
                seqs = None
        # the attribute queries: when-attributes (any hop), unique_by (its hops), checks
        kw: dict[str, Any] = {"seqs": seqs, "scan": scan}
        attr_q: list[tuple[str, str, Any]] = [
            ("when", a, w.attribute_sql(d, a, lo, hi, **kw)) for a in plan.condition_attrs
        ]
        seen: set[str] = set()
        for hp in cfg.hops:
            if hp.unique_by and hp.unique_by not in seen:
                seen.add(hp.unique_by)
                hops = [h.name for h in cfg.hops if h.unique_by == hp.unique_by]
                attr_q.append(
                    (
                        "unique",
                        hp.unique_by,
                        w.attribute_sql(d, hp.unique_by, lo, hi, hops=hops, **kw),
                    )
                )
        for chk in cfg.checks:
            attr_q.append(
                ("check", chk.field, w.attribute_sql(d, chk.field, lo, hi, hops=chk.hops, **kw))
            )
        sqls = [] if chosen else w.window_tables(d, plan.names, lo, hi, scan)
        sqls += [q for _, _, q in attr_q if q is not None]
        with Reader(self.store.engine, 0 if chosen else total) as reader:
            tables = reader.tables(sqls) if sqls else []
        if not chosen:
            data = w.window_from_tables(*tables[:3])
            tables = tables[3:]
        out = Loaded(data)
        it = iter(tables)
        for role, key, q in attr_q:
            av = w.attribute_from_table(next(it) if q is not None else None)
            if role == "when":
                out.condition_values[key] = av
            elif role == "unique":
                out.unique_values[key] = av
            else:
                out.check_values.append(av)
        return out

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


def state_of(plan: Plan, loaded: Loaded, chosen: Sequence[str] | None = None) -> State:
    return build_state(plan, loaded.data, loaded.condition_values, chosen=chosen)


class ProbeProgress:
    """Vanished-vs-stalled evidence for a state that holds only chosen orders: the edge's
    population is read for the orders that reached the edge's target after the deadline."""

    LIMIT = 20_000

    def __init__(self, backend: SqlBackend, plan: Plan, lo: int, hi: int):
        self.backend = backend
        self.plan = plan
        self.lo, self.hi = lo, hi

    def __call__(self, req: Requirement, ta: F, reach: F) -> EdgeProgress:
        # the candidates: orders with an event at one of the targets in the window
        plan = self.plan
        with self.backend.store.engine.connect() as conn:
            cands = w.orders_at_hops(
                conn, [plan.names[m] for m in req.targets], self.lo, self.hi, plan.via, self.LIMIT
            )
        if not cands:
            return EdgeProgress(ta[:0], reach[:0])
        loaded = self.backend.load(plan, self.lo, self.hi, orders=cands)
        st = state_of(plan, loaded)
        from ordertrail.reconcile.rules import Context

        ctx = Context(st, self.hi, {})
        u = ctx.units(req.each)
        pa = ctx.t_from(u, req.src)
        pr = np.full(len(u), np.nan)
        for m in req.targets:
            pr = np.fmin(pr, u.reach_first[:, m])
        ok = ~np.isnan(pa) & ~np.isnan(pr)
        return EdgeProgress(pa[ok], pr[ok])
