"""One order's trail: every event across all sources, the hops expected but missing with their
deadlines, and the order's findings in plain words — what support staff need to answer a customer.
Everything is looked up through the order index; nothing scans the store."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from sqlalchemy import func, select, text

from ordertrail.reconcile.classify import classify
from ordertrail.reconcile.engine import judge_times
from ordertrail.reconcile.evidence import EdgeProgress
from ordertrail.reconcile.features import compute_features
from ordertrail.reconcile.load import PHASE_CODES
from ordertrail.report.redact import redact_attributes
from ordertrail.schemas.config import Config
from ordertrail.schemas.durations import format_duration
from ordertrail.schemas.event import OrderEvent, us_to_iso
from ordertrail.store import Store, tables

EVIDENCE_LIMIT = 10_000


@dataclass
class Expectation:
    hop: str
    after: str  # the hop (or promise) it follows from
    deadline: int
    overdue: int  # µs past the deadline at as_of (negative: still due in)
    kind: str  # edge | promise


@dataclass
class Trail:
    order_id: str
    as_of: int
    events: list[OrderEvent]
    expectations: list[Expectation]
    findings: list[dict[str, Any]]
    state: str
    timezone: str = "UTC"
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        prev: int | None = None
        evs = []
        for e in self.events:
            evs.append({
                "hop": e.hop, "phase": e.phase, "time": us_to_iso(e.occurred_at),
                "gap_seconds": None if prev is None else round((e.occurred_at - prev) / 1e6, 3),
                "source": e.source, "source_ref": e.source_ref, "event_id": e.event_id,
                "trace_id": e.trace_id, "span_id": e.span_id, "attributes": e.attributes,
            })  # fmt: skip
            prev = e.occurred_at
        return {
            "order_id": self.order_id,
            "as_of": us_to_iso(self.as_of),
            "state": self.state,
            "events": evs,
            "missing": [
                {
                    "hop": x.hop,
                    "after": x.after,
                    "kind": x.kind,
                    "deadline": us_to_iso(x.deadline),
                    "overdue_seconds": round(x.overdue / 1e6),
                }
                for x in self.expectations
            ],
            "findings": self.findings,
            "summary": self.notes,
        }


class UnknownOrder(LookupError):
    def __init__(self, order_id: str, closest: list[str]):
        self.order_id = order_id
        self.closest = closest
        hint = f"; closest known ids: {', '.join(closest)}" if closest else ""
        super().__init__(f"no events for order {order_id!r}{hint}")


def closest_ids(store: Store, order_id: str, n: int = 5) -> list[str]:
    """Known ids near ``order_id``: its neighbours in the order index, ranked by similarity."""
    c = tables.events.c
    cands: set[str] = set()
    with store.engine.connect() as conn:
        for op, order in (
            (c.order_id >= order_id, c.order_id.asc()),
            (c.order_id < order_id, c.order_id.desc()),
        ):
            q = select(c.order_id).where(op).order_by(order).limit(60)
            cands.update(r[0] for r in conn.execute(q))
        for k in (len(order_id) - 1, len(order_id) // 2):
            if k > 0:
                prefix = order_id[:k]
                q = (
                    select(c.order_id)
                    .where(c.order_id >= prefix, c.order_id < prefix + "\U0010ffff")
                    .limit(60)
                )
                cands.update(r[0] for r in conn.execute(q))
    return (
        difflib.get_close_matches(order_id, sorted(cands), n=n, cutoff=0.5)
        or sorted(cands, key=lambda x: -difflib.SequenceMatcher(None, x, order_id).ratio())[:n]
    )


def _evidence(
    store: Store, a: str, b: str, lo: int, hi: int, ta: float, deadline: float
) -> EdgeProgress:
    """EdgeProgress limited to the orders that matter for one order: reached a after it."""
    sql = text(
        "SELECT ea.occurred_at, eb.occurred_at FROM events eb "
        "JOIN events ea ON ea.order_id = eb.order_id AND ea.hop = :a AND ea.phase = 'completed' "
        "WHERE eb.hop = :b AND eb.phase IN ('completed', 'failed') AND eb.occurred_at > :d "
        "AND eb.occurred_at <= :hi AND ea.occurred_at > :x AND ea.occurred_at > :lo LIMIT :lim"
    )
    with store.engine.connect() as conn:
        rows = conn.execute(sql, {"a": a, "b": b, "d": int(deadline), "hi": hi, "x": int(ta), "lo": lo,
                                  "lim": EVIDENCE_LIMIT}).fetchall()  # fmt: skip
    arr = np.array(rows, dtype=float).reshape(-1, 2)
    return EdgeProgress(arr[:, 0], arr[:, 1])


def build_trail(
    store: Store, config: Config, order_id: str, as_of: int, *, redact: bool = False
) -> Trail:
    events = store.order_events(order_id)
    if not events:
        raise UnknownOrder(order_id, closest_ids(store, order_id))
    # a trail shows the whole order, however old: its own first event opens the window
    lo = min(as_of - config.pipeline.lookback, events[0].occurred_at - 1)
    window = [e for e in events if lo < e.occurred_at <= as_of]
    names = config.hop_names
    df = pd.DataFrame(
        {
            "order_id": np.array([e.order_id for e in window], dtype=object),
            "hop": np.array(
                [names.index(e.hop) if e.hop in names else -1 for e in window], dtype=np.int64
            ),
            "phase": np.array([PHASE_CODES.get(e.phase, 0) for e in window], dtype=np.int64),
            "t": np.array([e.occurred_at for e in window], dtype=np.int64),
            **{
                f"chk{j}": np.array(
                    [e.attributes.get(c.field) if e.hop in c.hops else None for e in window],
                    dtype=object,
                )
                for j, c in enumerate(config.checks)
            },
        }
    )
    df = df[df["hop"] >= 0]
    feats = compute_features(df, config)
    judge = judge_times(config, as_of, store.watermarks())
    expectations = _expectations(config, window, as_of)
    findings: list[dict[str, Any]] = []
    state = "unknown"
    if len(feats):
        # cross-order evidence only for this order's own overdue edges (bounded queries)
        first_reach: dict[str, int] = {}
        for e in window:
            if e.phase == "completed":
                first_reach.setdefault(e.hop, e.occurred_at)

        def evidence(a: str, b: str) -> EdgeProgress:
            ta = first_reach.get(a)
            w = config.hop(a).within.get(b, 0)
            if ta is None:
                return EdgeProgress(np.array([]), np.array([]))
            return _evidence(store, a, b, lo, as_of, ta, ta + w)

        cls = classify(
            feats,
            config,
            as_of,
            judge,
            evidence,
            last_activity=_last_activity(store, config),
        )
        state = str(cls.state[0])
        stored = _stored(store, order_id)
        for r in cls.findings.itertuples(index=False):
            key = (r.kind, r.hop, r.from_hop)
            st = stored.get(key)
            detail = st["detail"] if st and st["status"] != "resolved" else r.detail
            findings.append({
                "kind": r.kind, "hop": r.hop, "from_hop": r.from_hop or None, "since": us_to_iso(int(r.since)),
                "detail": detail, "status": st["status"] if st else "not yet recorded",
                "plain": plain_words(r.kind, r.hop, r.from_hop, int(r.since), as_of, detail),
            })  # fmt: skip
    shown = events
    if redact and config.pipeline.personal:
        shown = [_redacted(e, config.pipeline.personal) for e in events]
    notes = [f["plain"] for f in findings]
    if not findings:
        notes.append(_state_words(state, expectations, as_of))
    return Trail(
        order_id, as_of, shown, expectations, findings, state, config.pipeline.timezone, notes
    )


def _redacted(e: OrderEvent, personal: tuple[str, ...]) -> OrderEvent:
    return OrderEvent(
        e.event_id, e.order_id, e.hop, e.occurred_at, e.source, e.source_ref, e.phase, e.trace_id,
        e.span_id, redact_attributes(e.attributes, personal), e.ingested_at, e.ingest_seq,
    )  # fmt: skip


def _stored(store: Store, order_id: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    c = tables.findings.c
    q = select(c.kind, c.hop, c.from_hop, c.status, c.detail).where(c.order_id == order_id)
    with store.engine.connect() as conn:
        return {
            (r.kind, r.hop, r.from_hop): {"status": r.status, "detail": r.detail}
            for r in conn.execute(q)
        }


def _last_activity(store: Store, config: Config) -> dict[str, float | None]:
    """The last event per hop as the latest run saw it (its hop_silent incidents); unknown
    otherwise — a trace never scans the store for it."""
    out: dict[str, float | None] = dict.fromkeys(config.hop_names)
    c = tables.incidents.c
    with store.engine.connect() as conn:
        last = conn.execute(
            select(func.max(tables.runs.c.id)).where(tables.runs.c.status == "done")
        ).scalar()
        if last is None:
            return out
        for r in conn.execute(
            select(c.hop, c.detail).where(c.run_id == last, c.kind == "hop_silent")
        ):
            if f"last {r.hop} event " in r.detail:
                stamp = r.detail.split(f"last {r.hop} event ")[1][:20]
                try:
                    dt = datetime.strptime(stamp.strip(), "%Y-%m-%d %H:%M UTC").replace(tzinfo=UTC)
                except ValueError:
                    continue
                out[r.hop] = dt.timestamp() * 1e6
    return out


def _expectations(config: Config, events: list[OrderEvent], as_of: int) -> list[Expectation]:
    """Hops this order should have reached (or should still reach), with deadlines."""
    comp: dict[str, int] = {}
    reach: dict[str, int] = {}
    for e in events:
        if e.phase == "completed":
            comp.setdefault(e.hop, e.occurred_at)
        if e.phase in ("completed", "failed"):
            reach.setdefault(e.hop, e.occurred_at)
    if any(h in comp for h in config.closing_hops):
        return []
    out: list[Expectation] = []
    seen: set[str] = set()
    for a, b, w in config.edges:
        if a not in comp or b in reach or b in seen:
            continue
        if any(d in reach for d in config.descendants(b)):
            continue  # skipped, not expected any more
        d = comp[a] + w
        out.append(Expectation(b, a, d, as_of - d, "edge"))
        seen.add(b)
    for hp in config.hops:
        if hp.name in comp and hp.promise_within is not None:
            for q in hp.promises:
                if q in comp or q in seen or any(x in comp for x in config.descendants(q)):
                    continue
                d = comp[hp.name] + hp.promise_within
                out.append(Expectation(q, hp.name, d, as_of - d, "promise"))
                seen.add(q)
    return sorted(out, key=lambda x: x.deadline)


def _ago(us: int) -> str:
    return format_duration(us) + (" ago" if us >= 0 else " from now")


def plain_words(kind: str, hop: str, from_hop: str, since: int, as_of: int, detail: str) -> str:
    """One sentence a support agent can read to a customer's case."""
    age = _ago(as_of - since)
    later = ""
    if "later orders reached" in detail:
        later = "; " + detail.split("; ")[2].split(":")[0].replace("since", "since then")
    return {
        "vanished": f"{from_hop.capitalize()} done; {hop} was due {age} and never received the order{later}. "
        f"It was lost between {from_hop} and {hop}.",
        "stalled": f"{from_hop.capitalize()} done; {hop} was due {age}, but {hop} has not passed any later "
        f"order either: {hop} is stuck or backlogged, not just this order.",
        "confirmed_unfulfilled": f"The customer was told at {from_hop}; {hop} was promised by {age} and has not "
        "happened.",
        "duplicate": f"{hop.capitalize()} happened more than once ({age}): check for a double charge.",
        "skipped": f"A later hop was reached without {hop} ({age}).",
        "orphan": f"No {hop} for this order in the lookback: events arrived for an order that never started.",
        "failed": f"{hop.capitalize()} failed {age} and was neither retried successfully nor cancelled.",
        "mismatch": f"Values disagree between {from_hop} and {hop}: {detail.split(';')[0]}.",
        "out_of_order": f"{hop.capitalize()} is recorded before {from_hop} ({age}): a clock or a replay is off.",
        "late": f"{hop.capitalize()} happened, but late ({age}).",
    }.get(kind, detail)


def _state_words(state: str, exp: list[Expectation], as_of: int) -> str:
    if state == "complete":
        return "Complete: every expected hop was reached."
    if state == "closed":
        return "Closed (e.g. cancelled): nothing more is expected."
    if exp:
        x = exp[0]
        when = f"{datetime.fromtimestamp(x.deadline / 1e6, tz=UTC):%Y-%m-%d %H:%M} UTC"
        due = x.deadline - as_of
        rel = f"due in {format_duration(due)}" if due > 0 else f"{format_duration(-due)} overdue"
        return f"In flight: {x.hop} expected by {when} ({rel})."
    return "In flight."


def local_zone(name: str) -> Any:
    return UTC if name == "UTC" else ZoneInfo(name)
