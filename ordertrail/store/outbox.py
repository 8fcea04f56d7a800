"""The notifications outbox (``notifications`` table): what each ``[[notify]]`` target is to be
told, claimed for sending, and marked sent or failed. The policy lives in
:mod:`ordertrail.serve.notify`; this module only reads and writes rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, and_, func, select

from ordertrail.store import tables as t
from ordertrail.store.writer import _dialect_insert

EPISODE_RUNS = 10_000  # how far back an incident's first run is looked for


@dataclass(frozen=True)
class Outgoing:
    """One pending row, as claimed for sending."""

    id: int
    event: str
    key: str
    payload: dict[str, Any]
    attempts: int


def add(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Insert notification rows; a row already there (same target, event, key) is kept as it
    is — that is what makes each one sent once. Returns the rows added."""
    if not rows:
        return 0
    stmt = _dialect_insert(conn, t.notifications).on_conflict_do_nothing(
        index_elements=["target", "event", "key"]
    )
    added = 0
    for r in rows:
        payload = r["payload"]
        res = conn.execute(stmt.values(**{**r, "payload": orjson.dumps(payload).decode()}))
        added += max(res.rowcount or 0, 0)
    return added


def open_incidents(conn: Connection, target: str, shard: str) -> dict[str, str]:
    """subject -> key of the incidents whose start was recorded for ``target`` (in runs of
    ``shard``) and whose end was not yet."""
    n = t.notifications.alias("n")
    e = t.notifications.alias("e")
    ended = (
        select(e.c.id)
        .where(e.c.target == n.c.target, e.c.event == "incident_ended", e.c.key == n.c.key)
        .exists()
    )
    q = select(n.c.subject, n.c.key).where(
        n.c.target == target,
        n.c.event == "incident_started",
        n.c.subject.startswith(shard + "|", autoescape=True),
        ~ended,
    )
    return {r.subject: r.key for r in conn.execute(q)}


def episode_start(
    conn: Connection, kind: str, hop: str, shard: str, run_id: int
) -> tuple[int, int | None]:
    """(first run, its ``since``) of the incident ``kind``/``hop`` that run ``run_id`` has: the
    earliest run of an unbroken series of runs of ``shard``, up to this one, that had it."""
    r = t.runs.c
    ids = [
        int(x[0])
        for x in conn.execute(
            select(r.id)
            .where(r.status == "done", r.shard == shard, r.id <= run_id)
            .order_by(r.id.desc())
            .limit(EPISODE_RUNS)
        )
    ]
    if not ids:
        return run_id, None
    i = t.incidents.c
    seen = {
        int(x.run_id): x.since
        for x in conn.execute(
            select(i.run_id, i.since).where(
                i.kind == kind, i.hop == hop, i.run_id >= ids[-1], i.run_id <= run_id
            )
        )
    }
    first, since = run_id, seen.get(run_id)
    for rid in ids:
        if rid not in seen:
            break
        first, since = rid, seen[rid]
    return first, None if since is None else int(since)


def claim(conn: Connection, target: str, now: int, lease_until: int, limit: int) -> list[Outgoing]:
    """The oldest pending rows of ``target``, claimed until ``lease_until`` so that no other
    process sends them meanwhile. Empty when none is pending or the oldest one is not due yet
    (a target in backoff waits as a whole: what it is told keeps its order). Raises
    :class:`Contended` when another process claimed some of them first."""
    c = t.notifications.c
    rows = conn.execute(
        select(c.id, c.event, c.key, c.payload, c.attempts, c.next_attempt_at)
        .where(c.target == target, c.status == "pending")
        .order_by(c.id)
        .limit(limit)
    ).all()
    if not rows or rows[0].next_attempt_at > now:
        return []
    ids = [r.id for r in rows]
    res = conn.execute(
        t.notifications.update()
        .where(c.id.in_(ids), c.status == "pending", c.next_attempt_at <= now)
        .values(next_attempt_at=lease_until)
    )
    if res.rowcount != len(ids):
        raise Contended(target)
    return [
        Outgoing(int(r.id), r.event, r.key, orjson.loads(r.payload), int(r.attempts)) for r in rows
    ]


class Contended(RuntimeError):
    """Another process claimed some of the same rows first."""


def mark_sent(conn: Connection, ids: Iterable[int], now: int) -> None:
    c = t.notifications.c
    conn.execute(
        t.notifications.update()
        .where(c.id.in_(list(ids)))
        .values(status="sent", sent_at=now, attempts=c.attempts + 1, last_error="")
    )


def mark_failed(conn: Connection, rows: Sequence[Outgoing], retry_at: int, error: str) -> None:
    c = t.notifications.c
    conn.execute(
        t.notifications.update()
        .where(c.id.in_([r.id for r in rows]))
        .values(next_attempt_at=retry_at, attempts=c.attempts + 1, last_error=error[:500])
    )


def last_sent(conn: Connection, target: str) -> int | None:
    c = t.notifications.c
    v = conn.execute(select(func.max(c.sent_at)).where(c.target == target)).scalar()
    return None if v is None else int(v)


def summary(conn: Connection) -> list[dict[str, Any]]:
    """Per target and status: rows, oldest creation, last error and last sent time."""
    c = t.notifications.c
    q = select(
        c.target, c.status, func.count(), func.min(c.created_at), func.max(c.sent_at),
        func.max(c.attempts),
    ).group_by(c.target, c.status)  # fmt: skip
    out = [
        {"target": r[0], "status": r[1], "rows": int(r[2]), "oldest": r[3], "last_sent": r[4],
         "max_attempts": int(r[5] or 0)}
        for r in conn.execute(q)
    ]  # fmt: skip
    errs = conn.execute(
        select(c.target, c.last_error)
        .where(and_(c.status == "pending", c.last_error != ""))
        .order_by(c.id.desc())
    ).all()
    last_error: dict[str, str] = {}
    for target, err in errs:
        last_error.setdefault(target, err)
    for row in out:
        row["last_error"] = last_error.get(row["target"], "") if row["status"] == "pending" else ""
    return out


def rows(conn: Connection, target: str | None = None) -> list[dict[str, Any]]:
    """Every row (for tests and tools), oldest first, payload decoded."""
    c = t.notifications.c
    q = select(t.notifications).order_by(c.id)
    if target is not None:
        q = q.where(c.target == target)
    return [{**dict(r), "payload": orjson.loads(r["payload"])} for r in conn.execute(q).mappings()]
