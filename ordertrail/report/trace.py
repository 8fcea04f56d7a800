"""One order's trail: every event across all sources (its own and those of its items, parcels
and shipments), the hops expected but missing with their deadlines, and its findings in plain
words — what support staff need to answer a customer. The findings come from the one engine
(:mod:`ordertrail.reconcile`) run over this order alone, as of ``--as-of``; nothing scans the
store except to tell vanished from stalled for an overdue edge."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import select

from ordertrail.reconcile.backend import ProbeProgress, SqlBackend
from ordertrail.reconcile.engine import Evaluation, evaluate, finish_findings, judge_times
from ordertrail.reconcile.plan import Plan, compile_plan
from ordertrail.reconcile.rules import expectations
from ordertrail.report.redact import redact_attributes, redact_finding
from ordertrail.schemas.config import Config
from ordertrail.schemas.durations import format_duration
from ordertrail.schemas.event import OrderEvent, us_to_iso
from ordertrail.store import Store, tables
from ordertrail.store import window as w

if TYPE_CHECKING:
    from ordertrail.reconcile.columnar import WindowDB


@dataclass
class Expectation:
    hop: str
    after: str  # the hop (or promise) it follows from
    deadline: int
    overdue: int  # µs past the deadline at as_of (negative: still due in)
    kind: str  # edge | promise
    objects: list[str] = field(default_factory=list)


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
    looked_up: str | None = None  # the object id the order was found by, if not its own id

    def as_dict(self) -> dict[str, Any]:
        prev: int | None = None
        evs = []
        for e in self.events:
            evs.append({
                "hop": e.hop, "phase": e.phase, "time": us_to_iso(e.occurred_at),
                "gap_seconds": None if prev is None else round((e.occurred_at - prev) / 1e6, 3),
                "source": e.source, "source_ref": e.source_ref, "event_id": e.event_id,
                "order_id": e.order_id or None, "objects": e.objects,
                "trace_id": e.trace_id, "span_id": e.span_id, "attributes": e.attributes,
            })  # fmt: skip
            prev = e.occurred_at
        return {
            "order_id": self.order_id,
            "found_by": self.looked_up,
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
                    "objects": x.objects,
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
    cands.discard("")  # events of no order: not an id anyone can look up
    return (
        difflib.get_close_matches(order_id, sorted(cands), n=n, cutoff=0.5)
        or sorted(cands, key=lambda x: -difflib.SequenceMatcher(None, x, order_id).ratio())[:n]
    )


def resolve_id(
    store: Store, config: Config, ident: str, as_of: int
) -> tuple[list[str], str | None]:
    """The orders an id names: an order id, or an object id (``kind:id`` or a bare id of any
    kind) -> the orders it belongs to. Returns (orders, the object it was found by); ([], None)
    when the id names nothing stored. ``kind:id`` is read as an object of that kind only when
    one was stored: else the whole id is looked up as an id of any kind (an item's id may
    itself contain a colon, even begin with a kind's name)."""
    if not ident:  # events of no order have the empty order id: it names none
        return [], None
    via = {o.name: o.via for o in config.objects}
    with store.engine.connect() as conn:
        if w.orders_like(conn, ident):
            return [ident], None
        kind, sep, oid = ident.partition(":")
        candidates: list[tuple[str | None, str]] = []
        if sep and kind in via and oid:
            candidates.append((kind, oid))
        candidates.append((None, ident))
        for k, i in candidates:
            kinds = w.object_kinds_of(conn, i, [k] if k else list(via))
            found: set[str] = set()
            for kk in kinds:
                found.update(w.orders_of_object(conn, kk, i, via, as_of))
            if kinds:
                label = f"{kinds[0]}:{i}" if len(kinds) == 1 else i
                return sorted(found), label
    return [], None


def build_trails(
    store: Store, config: Config, ident: str, as_of: int, *, redact: bool = False,
    shared: Shared | None = None,
) -> list[Trail]:  # fmt: skip
    """The trail of every order ``ident`` names (an order id or any object id)."""
    orders, by = resolve_id(store, config, ident, as_of)
    if not orders and by is None:
        raise UnknownOrder(ident, closest_ids(store, ident))
    if not orders:
        return [_unlinked_trail(store, config, ident, by or ident, as_of, redact)]
    trails = [build_trail(store, config, o, as_of, redact=redact, shared=shared) for o in orders]
    for t in trails:
        t.looked_up = by
    return trails


class Shared(Protocol):
    """What a long-running caller (``serve``) may share between trails instead of reading it
    from the store for each one: both are about the whole window, not the order."""

    def last(self, plan: Plan, lo: int, hi: int) -> dict[str, float | None]:
        """The latest completed or failed event per hop in the window."""
        ...

    def progress(self, backend: SqlBackend, plan: Plan, lo: int, hi: int) -> Any:
        """The vanished-vs-stalled evidence provider (see ProbeProgress)."""
        ...


def build_trail(
    store: Store, config: Config, order_id: str, as_of: int, *, redact: bool = False,
    shared: Shared | None = None,
) -> Trail:  # fmt: skip
    """One order's trail, judged as of ``as_of`` by the engine's rules over this order alone."""
    plan = compile_plan(config)
    backend = SqlBackend(store)
    # judged as reconcile judges it, on the lookback window; shown whole, however old
    lo = as_of - config.pipeline.lookback
    with store.engine.connect() as conn:
        oldest = w.first_event_time(conn, order_id, as_of)
    shown_from = oldest - 1 if oldest is not None and oldest <= lo else lo
    judge = judge_times(config, as_of, store.watermarks())
    last: Mapping[str, float | None]
    if shared is not None:
        got = shared.last(plan, lo, as_of)
        last = {h: got.get(h) for h in plan.names}
        progress = shared.progress(backend, plan, lo, as_of)
    else:
        # read per hop and only when a rule asks (stalled vs vanished of an overdue edge): the
        # whole window's GROUP BY costs seconds on a large store
        last = w.LazyLastActivity(store.engine.connect, plan.names, lo, as_of)
        progress = ProbeProgress(backend, plan, lo, as_of)

    def judged(db: WindowDB, start: int) -> Evaluation:
        return evaluate(
            plan, db, as_of, judge, window_start=start, chosen=[order_id], backend=backend,
            progress=progress, last=last, keep_contexts=True,
        )  # fmt: skip

    with backend.window(plan, lo, as_of, orders=[order_id]) as db:
        db.resolve()
        in_window = db.event_count() > 0
        if not in_window and shown_from == lo:
            raise UnknownOrder(order_id, closest_ids(store, order_id))
        if in_window:
            ev = judged(db, lo)
        seqs = db.member_seqs(order_id)
    if shown_from < lo:  # events before the window: in the trail, not judged
        with backend.window(plan, shown_from, as_of, orders=[order_id]) as db:
            db.resolve()
            seqs = db.member_seqs(order_id)
            if not in_window:  # wholly before it: judged whole only to tell a finished order
                ev = judged(db, shown_from)
    findings = finish_findings(ev.findings if in_window else ev.findings.iloc[:0], backend)
    exp: list[Expectation] = []
    state = "unknown"
    for ctx in ev.contexts if in_window else ():
        ids = ctx.state.order_ids.tolist()
        if order_id in ids:
            oi = ids.index(order_id)
            exp = [
                Expectation(x["hop"], x["after"], int(x["deadline"]), as_of - int(x["deadline"]),
                            x["kind"], sorted(x["objects"]))
                for x in expectations(ctx) if x["o"] == oi
            ]  # fmt: skip
    for p in ev.parts:
        ids = p.order_ids.tolist()
        if order_id in ids:
            state = str(p.state[ids.index(order_id)])
    if not in_window and state not in ("complete", "closed"):
        state = "outside_window"  # reconcile no longer judges it: neither findings nor due hops
    stored = _stored(store, order_id)
    out: list[dict[str, Any]] = []
    for r in findings[findings["order_id"] == order_id].itertuples(index=False):
        key = (r.kind, r.hop, r.from_hop, r.field)
        st_ = stored.get(key)
        f = {
            "kind": r.kind, "hop": r.hop, "from_hop": r.from_hop or None,
            "since": us_to_iso(int(r.since)), "detail": r.detail, "objects": r.objects,
            "field": r.field or None, "evidence": r.evidence,
            "status": st_ if st_ else "not yet recorded",
        }  # fmt: skip
        if redact:
            f = redact_finding(f, config.pipeline.personal)
        f["plain"] = plain_words(
            r.kind, r.hop, r.from_hop, int(r.since), as_of, f["evidence"], r.objects
        )
        out.append(f)
    with store.engine.connect() as conn:
        events = w.events_by_seq(conn, seqs)
    if redact and config.pipeline.personal:
        events = [_redacted(e, config.pipeline.personal) for e in events]
    notes = [f["plain"] for f in out]
    start = f"{datetime.fromtimestamp(lo / 1e6, tz=UTC):%Y-%m-%d %H:%M} UTC"
    span = format_duration(config.pipeline.lookback)
    if state == "outside_window":
        notes.append(
            f"Every event of this order is older than the lookback window ({span}, from {start}): "
            "reconcile no longer judges it."
        )
    elif shown_from < lo and in_window:
        notes.append(
            f"Events before {start} are shown but not judged: reconcile judges the {span} "
            "before as-of, so an order that started earlier is judged on its later events."
        )
    if not out and state != "outside_window":
        notes.append(_state_words(state, exp, as_of))
    return Trail(order_id, as_of, events, exp, out, state, config.pipeline.timezone, notes)


def _unlinked_trail(
    store: Store, config: Config, ident: str, label: str, as_of: int, redact: bool
) -> Trail:
    """An object that belongs to no order: its events, and its orphan finding if it has one."""
    kind, _, oid = label.partition(":")
    with store.engine.connect() as conn:
        kinds = [kind] if oid else w.object_kinds_of(conn, ident, config.object_names)
        objs = [(k, oid or ident) for k in kinds]
        lo = as_of - config.pipeline.lookback
        ev_table, _, _ = w.chosen_window(conn, config.hop_names, lo, as_of, [], objs)
        events = w.events_by_seq(conn, ev_table.column("seq").to_pylist())
    if redact and config.pipeline.personal:
        events = [_redacted(e, config.pipeline.personal) for e in events]
    c = tables.findings.c
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(c.kind, c.hop, c.since, c.detail, c.status).where(
                c.object.in_([f"{k}:{i}" for k, i in objs])
            )
        ).fetchall()
    findings = [
        {"kind": r.kind, "hop": r.hop, "from_hop": None, "since": us_to_iso(r.since),
         "detail": r.detail, "status": r.status, "objects": [label], "field": None,
         "plain": f"{label} is linked to no order: no event names it together with an order id."}
        for r in rows
    ]  # fmt: skip
    notes = [f"{label} belongs to no order yet: no event names it together with an order id."]
    return Trail(label, as_of, events, [], findings, "unlinked", config.pipeline.timezone, notes,
                 looked_up=label)  # fmt: skip


def _redacted(e: OrderEvent, personal: tuple[str, ...]) -> OrderEvent:
    return OrderEvent(
        e.event_id, e.order_id, e.hop, e.occurred_at, e.source, e.source_ref, e.phase, e.trace_id,
        e.span_id, redact_attributes(e.attributes, personal), e.ingested_at, e.ingest_seq,
        e.objects,
    )  # fmt: skip


def _stored(store: Store, order_id: str) -> dict[tuple[str, str, str, str], str]:
    c = tables.findings.c
    q = select(c.kind, c.hop, c.from_hop, c.field, c.status).where(c.order_id == order_id)
    with store.engine.connect() as conn:
        return {(r.kind, r.hop, r.from_hop, r.field): r.status for r in conn.execute(q)}


def _ago(us: int) -> str:
    return format_duration(us) + (" ago" if us >= 0 else " from now")


def plain_words(
    kind: str, hop: str, from_hop: str, since: int, as_of: int, evidence: dict[str, Any],
    objects: list[str] | None = None,
) -> str:  # fmt: skip
    """One sentence a support agent can read to a customer's case."""
    from ordertrail.reconcile.render import objects_phrase

    age = _ago(as_of - since)
    what = f" ({objects_phrase(objects, evidence.get('objects_total', {}))})" if objects else ""
    later = ""
    what_lost = "the order"
    if objects:
        what_lost = objects_phrase(objects, evidence.get("objects_total", {}))
    if kind == "vanished":
        n = int(evidence.get("later_orders", 0))
        noun = "order" if not objects else objects[0].partition(":")[0]
        reached = " or ".join(evidence.get("later_reached") or [hop])
        later = f"; {n:,} later {noun}{'s' if n != 1 else ''} reached {reached} since then"
    return {
        "vanished": f"{(from_hop or '').capitalize()} done; {hop} was due {age} and never received "
        f"{what_lost}{later}. It was lost between {from_hop} and {hop}.",
        "stalled": f"{(from_hop or '').capitalize()} done; {hop} was due {age}{what}, but {hop} "
        f"has not passed any later order either: {hop} is stuck or backlogged, not just this order.",
        "confirmed_unfulfilled": f"The customer was told at {from_hop}; {hop} was promised by "
        f"{age}{what} and has not happened.",
        "duplicate": f"{hop.capitalize()} happened more than once ({age}){what}: check for a "
        "double charge.",
        "skipped": f"A later hop ({evidence.get('later_hop')}) was reached without {hop} "
        f"({age}){what}.",
        "orphan": f"No {hop} for this order in the lookback: events arrived for an order that "
        "never started.",
        "failed": f"{hop.capitalize()} failed {age}{what} and was neither retried successfully "
        "nor cancelled.",
        "mismatch": f"Values disagree between {from_hop} and {hop}: {evidence.get('field')} "
        f"{evidence.get('base_value')!s} vs {evidence.get('value')!s}.",
        "out_of_order": f"{hop.capitalize()} is recorded before {from_hop} ({age}){what}: a clock "
        "or a replay is off.",
        "late": f"{hop.capitalize()} happened, but late ({age}){what}.",
    }.get(kind, kind)


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
