"""Run history: the runs table, the findings lifecycle (new / open / resolved), incidents and
the orders still in flight."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import orjson
import pandas as pd
from sqlalchemy import Connection, and_, bindparam, select, text

from ordertrail.reconcile.rules import isos
from ordertrail.store import tables as t
from ordertrail.store.bulk import insert_rows
from ordertrail.store.writer import now_us, order_bucket

ACTIVE = ("new", "open")
IDENTITY = ["order_id", "object", "kind", "hop", "from_hop", "field"]
STORED = ["since", "detail", "objects", "evidence"]


def _tuples(result: Any) -> list[tuple[Any, ...]]:
    """Rows as plain tuples: pandas probes each row object for a dtype, and a SQLAlchemy Row
    answers an unknown attribute with an exception (seconds for 100k rows)."""
    return [tuple(r) for r in result.fetchall()]


def start_run(
    conn: Connection, as_of: int, mode: str, shard: str, config_hash: str, max_seq: int,
    started_at: int | None = None,
) -> int:  # fmt: skip
    res = conn.execute(
        t.runs.insert().values(
            started_at=started_at or now_us(),
            as_of=as_of, mode=mode, shard=shard, config_hash=config_hash,
            max_ingest_seq=max_seq, orders=0, events=0, summary="{}", status="running",
        ).returning(t.runs.c.id)
    )  # fmt: skip
    return int(res.scalar_one())


def finish_run(
    conn: Connection, run_id: int, orders: int, events: int, summary: dict[str, Any],
    unlinked: int = 0,
) -> None:  # fmt: skip
    conn.execute(
        t.runs.update()
        .where(t.runs.c.id == run_id)
        .values(finished_at=now_us(), orders=orders, events=events, unlinked=unlinked,
                summary=orjson.dumps(summary).decode(), status="done")
    )  # fmt: skip


def last_run(conn: Connection, shard: str | None) -> dict[str, Any] | None:
    """The latest finished run of a shard ("" unsharded; None: of any)."""
    c = t.runs.c
    cond = c.status == "done" if shard is None else and_(c.status == "done", c.shard == shard)
    row = conn.execute(select(t.runs).where(cond).order_by(c.id.desc()).limit(1)).mappings().first()
    return dict(row) if row else None


def finding_columns(findings: pd.DataFrame) -> list[list[Any]]:
    """A run's findings as plain column lists (identity, then stored), for
    :func:`update_findings` to consume."""
    return [findings[k].astype(object).tolist() for k in (*IDENTITY, *STORED)]


def update_findings(
    conn: Connection,
    run_id: int,
    data: list[list[Any]],
    in_scope: Callable[[pd.DataFrame], np.ndarray],
    present: Callable[[pd.DataFrame], np.ndarray],
) -> pd.DataFrame:
    """Upsert this run's findings (``data``: :func:`finding_columns`); the active ones in scope
    that are gone become ``resolved``, or ``expired`` when their order (``present`` is False)
    left the lookback window. Returns what :func:`read_findings` would read back: this run's
    findings with their status, and those it resolved or expired, sorted (without reading every
    finding again).

    ``data`` is consumed: a finding's stored columns are released once it is written, as its
    copy read back replaces them, so a large run holds its findings once, not twice.
    The active findings are streamed once: of those this run finds again only the first run is
    kept, of the others (gone) the whole row — never every active finding's text at once."""
    c = t.findings.c
    missing = object()
    first: dict[tuple[Any, ...], Any] = dict.fromkeys(zip(*data[:6], strict=True), missing)
    gone_ids: list[int] = []
    q = select(c.id, *(getattr(c, k) for k in IDENTITY), c.first_run).where(c.status.in_(ACTIVE))
    # the statement's option, not the connection's (that would stream every later statement)
    for row in conn.execute(q.execution_options(yield_per=20_000)):
        key = tuple(row[1:7])
        if key in first:
            first[key] = row[7]
        else:
            gone_ids.append(row[0])
    # the text of only those gone: most active findings are found again
    gone_rows: list[tuple[Any, ...]] = []
    gq = select(
        c.id, *(getattr(c, k) for k in IDENTITY), c.first_run, *(getattr(c, k) for k in STORED)
    )
    for k in range(0, len(gone_ids), 5000):
        gone_rows.extend(tuple(r) for r in conn.execute(gq.where(c.id.in_(gone_ids[k : k + 5000]))))
    gone_rows.sort()  # by id: the updates below walk the table forward
    cols = [*IDENTITY, "since", "detail", "objects", "evidence", "status", "first_run", "last_run"]
    out: list[tuple[Any, ...]] = []
    batch = 20_000
    for k in range(0, len(data[0]), batch):
        rows = []
        for r in zip(*(d[k : k + batch] for d in data), strict=True):
            was = first[r[:6]]
            active = was is not missing
            rows.append((
                *r[:6], int(r[6]), r[7], orjson.dumps(r[8]).decode(), orjson.dumps(r[9]).decode(),
                "open" if active else "new", int(was if active and was is not None else run_id),
                run_id,
            ))  # fmt: skip
        insert_rows(conn, "findings", cols, rows, conflict=IDENTITY, update=cols[6:], batch=batch)
        # as read back: the stored JSON parsed again
        out.extend((*r[:8], orjson.loads(r[8]), orjson.loads(r[9]), r[10], r[11]) for r in rows)
        for d in data[6:]:
            d[k : k + batch] = [None] * len(rows)
    del first
    if gone_rows:
        gone = pd.DataFrame(gone_rows, columns=["id", *IDENTITY, "first_run", *STORED])
        gone = gone[in_scope(gone)]
        still = present(gone) if len(gone) else np.zeros(0, dtype=bool)
        upd = (
            t.findings.update()
            .where(c.id == bindparam("k_id"))
            .values(status=bindparam("st"), last_run=run_id)
        )
        gcols = [gone[k].tolist() for k in (*IDENTITY, *STORED, "first_run", "id")]
        params = []
        for r, s_ in zip(zip(*gcols, strict=True), still, strict=True):
            st = "resolved" if s_ else "expired"
            params.append({"k_id": r[11], "st": st})
            out.append((*r[:6], int(r[6]), r[7], orjson.loads(r[8]) if r[8] else [],
                        orjson.loads(r[9]) if r[9] else {}, st, int(r[10])))  # fmt: skip
        for k in range(0, len(params), 5000):
            conn.execute(upd, params[k : k + 5000])
    df = pd.DataFrame(out, columns=cols[:-1])
    del out
    return df.sort_values(IDENTITY, kind="stable").reset_index(drop=True)


def read_findings(
    conn: Connection, run_id: int, in_scope: Callable[[pd.DataFrame], np.ndarray] | None = None
) -> pd.DataFrame:
    """Active findings plus those this run resolved or expired, sorted."""
    c = t.findings.c
    q = select(
        c.order_id, c.object, c.kind, c.hop, c.from_hop, c.field, c.since, c.detail, c.objects,
        c.evidence, c.status, c.first_run,
    ).where(
        (c.status.in_(ACTIVE)) | (c.status.in_(("resolved", "expired")) & (c.last_run == run_id))
    )  # fmt: skip
    df = pd.DataFrame(
        _tuples(conn.execute(q)),
        columns=[*IDENTITY, "since", "detail", "objects", "evidence", "status", "first_run"],
    )
    if in_scope is not None and len(df):
        df = df[in_scope(df)]
    df["objects"] = [orjson.loads(x) if x else [] for x in df["objects"]]
    df["evidence"] = [orjson.loads(x) if x else {} for x in df["evidence"]]
    return df.sort_values(IDENTITY, kind="stable").reset_index(drop=True)


def run_row(conn: Connection, run_id: int) -> dict[str, Any]:
    row = conn.execute(select(t.runs).where(t.runs.c.id == run_id)).mappings().first()
    assert row is not None
    return dict(row)


def read_active(conn: Connection, exclude_kinds: Sequence[str] = ()) -> pd.DataFrame:
    """Every active finding as stored (objects and evidence parsed), but those of
    ``exclude_kinds``."""
    c = t.findings.c
    cond: Any = c.status.in_(ACTIVE)
    if exclude_kinds:
        cond = and_(cond, c.kind.notin_(list(exclude_kinds)))
    q = select(
        c.order_id, c.object, c.kind, c.hop, c.from_hop, c.field, c.since, c.detail, c.objects,
        c.evidence,
    ).where(cond)  # fmt: skip
    df = pd.DataFrame(_tuples(conn.execute(q)), columns=[*IDENTITY, *STORED])
    df["objects"] = [orjson.loads(x) if x else [] for x in df["objects"]]
    df["evidence"] = [orjson.loads(x) if x else {} for x in df["evidence"]]
    return df


def write_incidents(conn: Connection, run_id: int, incidents: list[dict[str, Any]]) -> None:
    from ordertrail.collectors.timestamps import parse_timestamp

    rows = [
        {
            **i,
            "run_id": run_id,
            "since": None if i["since"] is None else parse_timestamp(i["since"]),
        }
        for i in incidents
    ]
    if rows:
        conn.execute(t.incidents.insert(), rows)


def replace_pending(
    conn: Connection, run_id: int, scope_sql: str | None, orders: Iterable[str] | None,
    pending: list[tuple[str, int | None]],
) -> None:  # fmt: skip
    """Replace the in-flight orders of the evaluated scope with this run's."""
    if orders is not None:
        ids = list(orders)
        for k in range(0, len(ids), 500):
            conn.execute(
                t.pending_orders.delete().where(t.pending_orders.c.order_id.in_(ids[k : k + 500]))
            )
    elif scope_sql:
        conn.execute(text(f"DELETE FROM pending_orders WHERE {scope_sql}"))
    else:
        conn.execute(t.pending_orders.delete())
    insert_rows(
        conn, "pending_orders", ["order_id", "order_bucket", "due", "run_id"],
        [(o, order_bucket(o), d, run_id) for o, d in pending],
    )  # fmt: skip


def pending_order_ids(conn: Connection) -> list[str]:
    return [r[0] for r in conn.execute(select(t.pending_orders.c.order_id))]


def active_finding_orders(conn: Connection) -> list[str]:
    c = t.findings.c
    return [r[0] for r in conn.execute(select(c.order_id).where(c.status.in_(ACTIVE)).distinct())]


def active_object_findings(conn: Connection) -> list[str]:
    """The objects of active findings of no order (an unlinked object's orphan): the only
    objects a run asks about — is the finding resolved, or has it expired."""
    c = t.findings.c
    rows = conn.execute(select(c.object).where(c.status.in_(ACTIVE), c.order_id == ""))
    return sorted({r[0] for r in rows})


def finding_dict(r: Any, us_to_iso: Callable[[int], str | None]) -> dict[str, Any]:
    """A stored finding in the shape of reconcile's JSON."""
    return _json_finding(
        r.order_id, r.kind, r.hop, r.from_hop, us_to_iso(int(r.since)), r.detail, r.status,
        r.objects, r.field, r.evidence,
    )  # fmt: skip


def finding_dicts(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Stored findings (a frame) in the shape of reconcile's JSON, columns read as plain lists
    (iterating Arrow-backed columns element by element is slow) and times formatted as a
    column."""
    c = {k: df[k].tolist() for k in df.columns}
    since = isos(np.asarray(c["since"], dtype=np.int64))
    return [
        _json_finding(*r)
        for r in zip(
            c["order_id"], c["kind"], c["hop"], c["from_hop"], since, c["detail"], c["status"],
            c["objects"], c["field"], c["evidence"], strict=True,
        )
    ]  # fmt: skip


def _json_finding(
    order_id: str, kind: str, hop: str, from_hop: str, since: str | None, detail: str,
    status: str, objects: Any, field: str, evidence: Any,
) -> dict[str, Any]:  # fmt: skip
    return {
        "order_id": order_id or None, "kind": kind, "hop": hop, "from_hop": from_hop or None,
        "since": since, "detail": detail, "status": status,
        "objects": objects if isinstance(objects, list) else orjson.loads(objects or "[]"),
        "field": field or None,
        "evidence": evidence if isinstance(evidence, dict) else orjson.loads(evidence or "{}"),
    }  # fmt: skip


def list_findings(
    store: Any, *, kinds: Iterable[str] = (), hops: Iterable[str] = (), status: str = "active",
    limit: int | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Stored findings as dicts (the shape of reconcile's JSON), newest problems first."""
    from ordertrail.schemas.event import us_to_iso

    c = t.findings.c
    q = select(
        c.order_id, c.object, c.kind, c.hop, c.from_hop, c.field, c.since, c.detail, c.objects,
        c.evidence, c.status, c.first_run, c.last_run,
    )  # fmt: skip
    if status == "active":
        q = q.where(c.status.in_(ACTIVE))
    elif status != "all":
        q = q.where(c.status == status)
    kinds, hops = list(kinds), list(hops)
    if kinds:
        q = q.where(c.kind.in_(kinds))
    if hops:
        q = q.where(c.hop.in_(hops))
    q = q.order_by(c.since.desc(), c.order_id, c.object, c.kind, c.hop, c.from_hop, c.field)
    if limit:
        q = q.limit(limit)
    with store.engine.connect() as conn:
        return [
            {**finding_dict(r, us_to_iso), "first_run": r.first_run, "last_run": r.last_run}
            for r in conn.execute(q)
        ]
