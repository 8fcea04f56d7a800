"""Read queries of the web view and ``/metrics``: the latest run and its incidents, active
findings per kind and hop, the orders behind an incident and their customers. Each is one
indexed query or a small aggregate, cheap enough to run on every page view or scrape."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, func, select

from ordertrail.store import tables as t

ACTIVE = ("new", "open")


def latest_run(conn: Connection, shard: str = "") -> dict[str, Any] | None:
    """The newest finished run of ``shard`` ("" for whole-store runs)."""
    c = t.runs.c
    row = (
        conn.execute(
            select(t.runs)
            .where(c.status == "done", c.shard == shard)
            .order_by(c.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def run_incidents(conn: Connection, run_id: int) -> list[dict[str, Any]]:
    c = t.incidents.c
    q = select(c.kind, c.hop, c.since, c.orders, c.detail).where(c.run_id == run_id)
    return [dict(r) for r in conn.execute(q.order_by(c.kind, c.hop)).mappings()]


def active_counts(conn: Connection) -> list[tuple[str, str, int]]:
    """(kind, hop, active findings), from the (status, kind) index."""
    c = t.findings.c
    q = (
        select(c.kind, c.hop, func.count())
        .where(c.status.in_(ACTIVE))
        .group_by(c.kind, c.hop)
        .order_by(c.kind, c.hop)
    )
    return [(r[0], r[1], int(r[2])) for r in conn.execute(q)]


def order_summaries(conn: Connection, orders: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per order: its last event (hop, phase, time, source) and the kinds of its active
    findings — for a list of orders to choose from."""
    out: dict[str, dict[str, Any]] = {o: {"last": None, "findings": []} for o in orders}
    e, f = t.events.c, t.findings.c
    for k in range(0, len(orders), 500):
        part = list(orders[k : k + 500])
        for r in conn.execute(
            select(e.order_id, e.hop, e.phase, e.occurred_at, e.source)
            .where(e.order_id.in_(part))
            .order_by(e.order_id, e.occurred_at)
        ):
            out[r.order_id]["last"] = {"hop": r.hop, "phase": r.phase, "at": int(r.occurred_at),
                                       "source": r.source}  # fmt: skip
        for k_ in conn.execute(
            select(f.order_id, f.kind).where(f.order_id.in_(part), f.status.in_(ACTIVE)).distinct()
        ):
            out[k_.order_id]["findings"].append(k_.kind)
    for v in out.values():
        v["findings"].sort()
    return out


def first_attributes(
    conn: Connection, orders: Sequence[str], wanted: Callable[[str], bool]
) -> dict[str, dict[str, Any]]:
    """Per order: the first value (in time order) of each attribute whose key is ``wanted`` on
    its own events — who the customer is, for a list of orders to contact."""
    out: dict[str, dict[str, Any]] = {o: {} for o in orders}
    e = t.events.c
    for k in range(0, len(orders), 500):
        part = list(orders[k : k + 500])
        for r in conn.execute(
            select(e.order_id, e.attributes)
            .where(e.order_id.in_(part))
            .order_by(e.order_id, e.occurred_at, e.source, e.event_id)
        ):
            if not r.attributes or r.attributes == "{}":
                continue
            have = out[r.order_id]
            for key, value in orjson.loads(r.attributes).items():
                if key not in have and value is not None and wanted(key):
                    have[key] = value
    return out


def stalled_at(
    conn: Connection, hop: str, limit: int | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """(how many, the first ``limit``) active ``stalled`` findings at ``hop``, the longest
    overdue first: the orders a ``hop_silent`` incident holds."""
    c = t.findings.c
    where = (c.kind == "stalled", c.hop == hop, c.status.in_(ACTIVE))
    n = int(conn.execute(select(func.count()).where(*where)).scalar_one())
    q = (
        select(c.order_id, c.from_hop, c.since, c.objects, c.status)
        .where(*where)
        .order_by(c.since, c.order_id)
    )
    if limit is not None:
        q = q.limit(limit)
    rows = [
        {"order_id": r.order_id, "from_hop": r.from_hop, "since": int(r.since),
         "objects": orjson.loads(r.objects) if r.objects else [], "status": r.status}
        for r in conn.execute(q)
    ]  # fmt: skip
    return n, rows
