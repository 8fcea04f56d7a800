"""``ordertrail report``: the whole pipeline at a glance — per-hop funnel, lost and stalled per
edge, latency percentiles per edge, open findings by kind and age, amount at risk, history."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from sqlalchemy import select, text

from ordertrail.reconcile.backend import SqlBackend
from ordertrail.reconcile.plan import compile_plan
from ordertrail.reconcile.rules import KINDS, Context
from ordertrail.schemas.config import Config
from ordertrail.schemas.event import us_to_iso
from ordertrail.store import Store, tables
from ordertrail.store.window import fill_temp_orders

AGE_BUCKETS = (("< 1h", 3600), ("1h–1d", 86400), ("1d–7d", 7 * 86400), ("> 7d", None))
AT_RISK_KINDS = ("vanished", "stalled", "confirmed_unfulfilled", "failed")


@dataclass
class Report:
    pipeline: str
    as_of: int
    funnel: list[dict[str, Any]] = field(default_factory=list)
    edges: list[dict[str, Any]] = field(default_factory=list)
    findings_by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    at_risk: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline, "as_of": us_to_iso(self.as_of), "funnel": self.funnel,
            "edges": self.edges, "findings_by_kind": self.findings_by_kind, "at_risk": self.at_risk,
            "history": self.history, "incidents": self.incidents,
        }  # fmt: skip


def config_window(store: Store, plan: Any, lo: int, hi: int, config: Config) -> Any:
    """The window staged and resolved for the report, in the engine's hash parts."""
    db = SqlBackend(store).window(plan, lo, hi, memory=config.engine.memory)
    db.resolve(config.engine.part_orders)
    return db


def build_report(
    store: Store,
    config: Config,
    as_of: int,
    amount_field: str = "amount",
    progress: Callable[[float, str], None] | None = None,
) -> Report:
    """The report as of ``as_of``; ``progress(percent, stage)`` is told how far it got."""
    lo = as_of - config.pipeline.lookback
    rep = Report(config.pipeline.name, as_of)
    plan = compile_plan(config)
    tell = progress or (lambda pct, stage: None)
    tell(0, "reading the window")
    # per part of the orders: who reached each hop, and each edge's latencies
    reached_n = np.zeros(plan.n_hops, dtype=np.int64)
    lat_parts: dict[tuple[int, int], list[Any]] = {}
    with config_window(store, plan, lo, as_of, config) as db:
        for p in range(db.n_parts):
            st, facts = db.part_state(p)
            ctx = Context(st, as_of, {}, facts=facts)
            reached_n += (~np.isnan(st.comp_all)).sum(axis=0)
            for ri, req in enumerate(plan.requirements):
                u = ctx.units(req.each)
                ta = ctx.t_from(u, req.src)
                for m in req.targets:
                    tb = u.reach_first[:, m]
                    keep = ~(np.isnan(ta) | np.isnan(tb))
                    lat_parts.setdefault((ri, m), []).append((tb[keep] - ta[keep]) / 1e6)
            tell(10 + 50 * (p + 1) / db.n_parts, "funnel and edges")
    # orders that reached each hop (per-object hops: every object of the order)
    reached = {h: int(reached_n[i]) for i, h in enumerate(plan.names)}
    first = max([reached[h] for h in config.entry_hops] or [0])
    for h in config.hop_names:
        n = reached[h]
        rep.funnel.append({"hop": h, "orders": n, "share": round(n / first, 4) if first else None})
    with store.engine.connect() as conn:
        c = tables.findings.c
        active = conn.execute(
            select(c.order_id, c.kind, c.hop, c.from_hop, c.since).where(
                c.status.in_(("new", "open"))
            )
        ).fetchall()
        per_edge: dict[tuple[str, str], dict[str, int]] = {}
        for r in active:
            if r.from_hop:
                per_edge.setdefault((r.from_hop, r.hop), {}).setdefault(r.kind, 0)
                per_edge[(r.from_hop, r.hop)][r.kind] += 1
        for ri, req in enumerate(plan.requirements):
            for m, w in zip(req.targets, req.within, strict=True):
                lats = lat_parts.get((ri, m), [])
                lat = np.concatenate(lats) if lats else np.empty(0)
                pct = {
                    f"p{q}": (round(float(np.percentile(lat, q)), 1) if len(lat) else None)
                    for q in (50, 95, 99)
                }
                a, b = plan.names[req.src], plan.names[m]
                kinds = dict(per_edge.get((a, b), {}))
                if req.group:  # findings of a group edge name the group
                    for (fa, fb), counts in per_edge.items():
                        if fa == a and b in fb.split("|") and fb != b:
                            for kk, v in counts.items():
                                kinds[kk] = kinds.get(kk, 0) + v
                rep.edges.append({
                    "from": a, "to": b, "within_seconds": w / 1e6, "passed": len(lat),
                    "vanished": kinds.get("vanished", 0), "stalled": kinds.get("stalled", 0),
                    "late": kinds.get("late", 0), "latency_seconds": pct,
                    "per": req.each or "order",
                })  # fmt: skip
        for k in KINDS:
            ages = [as_of - int(r.since) for r in active if r.kind == k]
            if not ages:
                continue
            buckets = {name: 0 for name, _ in AGE_BUCKETS}
            for age in ages:
                secs = age / 1e6
                for name, limit in AGE_BUCKETS:
                    if limit is None or secs < limit:
                        buckets[name] += 1
                        break
            buckets["total"] = len(ages)
            rep.findings_by_kind[k] = buckets
        tell(80, "findings and amount at risk")
        risky = sorted({r.order_id for r in active if r.kind in AT_RISK_KINDS})
        rep.at_risk = _amount_at_risk(store, conn, risky, amount_field, lo, as_of)
        runs = conn.execute(
            select(
                tables.runs.c.id, tables.runs.c.as_of, tables.runs.c.summary, tables.runs.c.shard
            )
            .where(tables.runs.c.status == "done")
            .order_by(tables.runs.c.id)
        ).fetchall()
        rep.history = [
            {"run": r.id, "as_of": us_to_iso(int(r.as_of)), "summary": orjson.loads(r.summary)}
            for r in runs
            if not r.shard
        ][-100:]
        if runs:
            last = runs[-1].id
            ic = tables.incidents.c
            rep.incidents = [
                {
                    "kind": i.kind,
                    "hop": i.hop,
                    "since": us_to_iso(i.since),
                    "orders": i.orders,
                    "detail": i.detail,
                }
                for i in conn.execute(select(tables.incidents).where(ic.run_id == last))
            ]
    tell(100, "done")
    return rep


def _amount_at_risk(
    store: Store, conn: Any, orders: list[str], field_: str, lo: int, hi: int
) -> dict[str, Any]:
    """The amount of the orders at risk: per order the largest numeric value of ``field_`` on
    its events (numbers and numeric strings alike, on every store)."""
    if not orders:
        return {"orders": 0, "amount": 0.0, "with_amount": 0, "field": field_}
    from ordertrail.reconcile.rules import numeric
    from ordertrail.store.window import json_text

    fill_temp_orders(conn, orders)
    rows = conn.execute(
        text(
            f"SELECT e.order_id, {json_text(store.dialect, field_)} FROM _ot_orders o "
            "JOIN events e ON e.order_id = o.order_id "
            "WHERE e.occurred_at > :lo AND e.occurred_at <= :hi"
        ),
        {"lo": lo, "hi": hi},
    ).fetchall()
    best: dict[str, float] = {}
    for oid, raw in rows:
        if raw is None:
            continue
        v = numeric(orjson.loads(raw))
        if v is not None and (oid not in best or v > best[oid]):
            best[oid] = v
    total = sum(best.values())
    return {
        "orders": len(orders),
        "with_amount": len(best),
        "amount": round(total, 2),
        "field": field_,
    }
