"""What each page of the web view shows, as plain data for its template: the order page (trail,
objects, what is missing, findings, what to tell the customer), the incidents with the orders and
customers they touch, and the status of every hop in words a customer-facing team can read."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ordertrail.report.redact import is_personal, mask, redact_value
from ordertrail.report.trace import Trail, local_zone
from ordertrail.schemas.config import Config
from ordertrail.schemas.durations import format_duration
from ordertrail.schemas.event import us_to_iso
from ordertrail.store import Store, serving
from ordertrail.store import window as w

S = 1_000_000
INCIDENT_ROWS = 200  # orders listed per incident on the page; the CSV has them all
# findings that are facts for engineers, not news for the customer
INTERNAL = frozenset({"late", "out_of_order", "mismatch"})


def words(hop: str) -> str:
    """A hop name as words: ``ready_for_pickup`` -> ``ready for pickup``; a group
    ``shipped|ready_for_pickup`` -> ``shipped or ready for pickup``."""
    return " or ".join(h.replace("_", " ") for h in hop.split("|"))


def fmt_time(us: int | None, tz: str = "UTC") -> str:
    if us is None:
        return "never"
    dt = datetime.fromtimestamp(us / S, tz=UTC).astimezone(local_zone(tz))
    return dt.strftime("%Y-%m-%d %H:%M ") + (dt.tzname() or tz)


def fmt_day(us: int, tz: str = "UTC") -> str:
    """For customers: ``25 Feb, 11:57 UTC``."""
    dt = datetime.fromtimestamp(us / S, tz=UTC).astimezone(local_zone(tz))
    return dt.strftime("%-d %b, %H:%M ") + (dt.tzname() or tz)


def ago(us: int) -> str:
    return f"{format_duration(us)} ago" if us >= 0 else f"in {format_duration(-us)}"


def iso_us(iso: str | None) -> int | None:
    if not iso:
        return None
    dt = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return int(dt.timestamp() * S)


def _what(objects: Sequence[str]) -> str:
    if not objects:
        return ""
    parts = [f"{k} {i}" for k, _, i in (o.partition(":") for o in objects[:3])]
    more = f" and {len(objects) - 3} more" if len(objects) > 3 else ""
    return " (" + ", ".join(parts) + more + ")"


# -- the order page --------------------------------------------------------------------------------


@dataclass
class OrderPage:
    trail: Trail
    state: str  # a word for the badge
    tell: str  # what to tell the customer
    events: list[dict[str, Any]]
    objects: list[dict[str, Any]]
    missing: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


STATE_WORDS = {
    "complete": "Complete",
    "in_flight": "On its way",
    "closed": "Closed",
    "finding": "Needs attention",
    "unlinked": "Not linked to an order",
    "unknown": "Unknown",
    "outside_window": "Older than the lookback window",
}


def order_page(store: Store, config: Config, trail: Trail, now: int, *, redact: bool) -> OrderPage:
    tz = config.pipeline.timezone
    personal = config.pipeline.personal
    events = []
    prev: int | None = None
    for e in trail.events:
        attrs = e.attributes
        if redact and personal:
            attrs = {k: redact_value(k, v, personal) for k, v in attrs.items()}
        events.append({
            "hop": e.hop, "phase": e.phase, "at": e.occurred_at, "time": fmt_time(e.occurred_at),
            "local": fmt_time(e.occurred_at, tz) if tz != "UTC" else "",
            "gap": "" if prev is None else "+" + format_duration(e.occurred_at - prev),
            "source": e.source, "source_ref": e.source_ref,
            "objects": [f"{k}:{i}" for k, ids in e.objects.items() for i in ids],
            "order_id": e.order_id if e.order_id and e.order_id != trail.order_id else "",
            "trace_id": e.trace_id or "",
            "attributes": [(k, v if isinstance(v, str) else _json(v)) for k, v in attrs.items()],
        })  # fmt: skip
        prev = e.occurred_at
    missing = [
        {"hop": x.hop, "after": x.after, "kind": x.kind, "deadline": fmt_time(x.deadline),
         "overdue": x.overdue > 0,
         "when": f"{format_duration(x.overdue)} overdue" if x.overdue > 0
         else f"due in {format_duration(-x.overdue)}",
         "objects": x.objects}
        for x in trail.expectations
    ]  # fmt: skip
    findings = [
        {**f, "since_text": fmt_time(iso_us(f["since"])), "internal": f["kind"] in INTERNAL}
        for f in trail.findings
    ]
    objects = _objects(store, config, trail) if trail.state != "unlinked" else []
    return OrderPage(
        trail=trail,
        state=STATE_WORDS.get(trail.state, trail.state),
        tell=customer_words(config, trail, now),
        events=events,
        objects=objects,
        missing=missing,
        findings=findings,
        notes=[n for n in trail.notes if n not in {f["plain"] for f in trail.findings}],
    )


def _json(v: Any) -> str:
    import orjson

    return orjson.dumps(v).decode()


def _objects(store: Store, config: Config, trail: Trail) -> list[dict[str, Any]]:
    """The order's objects (items, parcels, tracking numbers) and where each one is: the last
    event that names it."""
    via = {o.name: o.via for o in config.objects}
    with store.engine.connect() as conn:
        mine = w.objects_of_orders(conn, [trail.order_id], via, trail.as_of)
    last: dict[tuple[str, str], Any] = {}
    for e in trail.events:  # in time order: the last one wins
        for k, ids in e.objects.items():
            for i in ids:
                if (k, i) in mine:
                    last[(k, i)] = e
    order = {name: n for n, name in enumerate(config.object_names)}
    out = []
    for k, i in sorted(mine, key=lambda x: (order.get(x[0], 99), x[1])):
        ev = last.get((k, i))
        out.append({
            "kind": k, "id": i,
            "where": words(ev.hop) + ("" if ev.phase == "completed" else f" ({ev.phase})")
            if ev else "",
            "at": fmt_time(ev.occurred_at) if ev else "",
            "source": f"{ev.source} {ev.source_ref}" if ev else "",
        })  # fmt: skip
    return out


def customer_words(config: Config, trail: Trail, now: int) -> str:
    """One or two sentences to read to the customer: no jargon, no internal ids."""
    tz = config.pipeline.timezone
    done = [e for e in trail.events if e.phase == "completed"]
    last = done[-1] if done else (trail.events[-1] if trail.events else None)
    if trail.state == "unlinked":
        return (
            "We cannot match this number to an order yet; please ask for the order number "
            "or the e-mail address it was placed with."
        )
    if trail.state == "outside_window":
        news_ = f" is {words(last.hop)} on {fmt_day(last.occurred_at, tz)}" if last else ""
        return (
            f"The last news we have of this order{news_}. It is older than the period we check "
            "automatically: please tell us what is missing and we will look into it."
        )
    if trail.state == "closed":
        closing = [e for e in done if e.hop in config.closing_hops]
        e = closing[-1] if closing else last
        when = f" on {fmt_day(e.occurred_at, tz)}" if e else ""
        return f"This order was {words(e.hop) if e else 'closed'}{when}; nothing more will happen with it."
    news = [f for f in trail.findings if f["kind"] not in INTERNAL]
    for kind in ("duplicate", "confirmed_unfulfilled", "vanished", "stalled", "failed",
                 "skipped", "orphan"):  # fmt: skip
        f = next((x for x in news if x["kind"] == kind), None)
        if f is None:
            continue
        hop, frm, what = words(f["hop"]), words(f["from_hop"] or ""), _what(f["objects"])
        since = iso_us(f["since"])
        due = fmt_day(since, tz) if since else "?"
        if kind == "duplicate":
            return (
                f"You may have been charged twice for this order ({hop}). We are checking it "
                "and will refund any double charge."
            )
        if kind == "confirmed_unfulfilled":
            return (
                f"We let you know at {frm}, but {hop}{what} has not happened yet — it was due "
                f"by {due}. We are sorry; we are looking into it now and will get back to you."
            )
        if kind == "vanished":
            return (
                f"Your order{what} has not reached {hop}, although it should have by {due}. "
                "We are sorry; we are looking into it now and will get back to you."
            )
        if kind == "stalled":
            return (
                f"{hop.capitalize()} is delayed for many orders at the moment, not only yours"
                f"{what}; it was due by {due}. We are on it and will let you know as soon as it "
                "moves."
            )
        if kind == "failed":
            return (
                f"The {hop} step did not go through ({due}). We are looking into it; you may be "
                "asked to try again."
            )
        if kind == "skipped":
            return f"Your order went on without the {hop} step; we are checking that everything is right."
        return "We cannot find how this order started; we are checking it and will get back to you."
    if trail.state == "complete":
        e = last
        return (
            f"Your order is complete: {words(e.hop)} on {fmt_day(e.occurred_at, tz)}."
            if e
            else "Your order is complete."
        )
    if trail.expectations:
        x = min(trail.expectations, key=lambda x: x.deadline)
        step = f"{words(last.hop)} on {fmt_day(last.occurred_at, tz)}; " if last else ""
        if x.deadline >= now:
            return f"Your order is on its way: {step}next, {words(x.hop)} by {fmt_day(x.deadline, tz)}."
        return (
            f"Your order is on its way: {step}{words(x.hop)} was due by "
            f"{fmt_day(x.deadline, tz)} and we are checking why it is late."
        )
    if last:
        return f"Your order is on its way: {words(last.hop)} on {fmt_day(last.occurred_at, tz)}."
    return "We have no news of this order yet."


# -- incidents -------------------------------------------------------------------------------------


def incident_title(kind: str, hop: str) -> str:
    if kind == "hop_silent":
        return f"{words(hop).capitalize()} has gone silent"
    if kind == "source_lagging":
        return "A source is behind" if hop == "*" else f"The data for {words(hop)} is behind"
    return f"{kind} at {words(hop)}"


def incident_words(inc: dict[str, Any], tz: str) -> str:
    since = fmt_time(inc["since"], tz) if inc["since"] is not None else "the start"
    n = int(inc["orders"])
    if inc["kind"] == "hop_silent":
        return (
            f"{words(inc['hop']).capitalize()} has handled no order since {since}; {n:,} "
            f"order{'s' if n != 1 else ''} wait for it. This is a hold-up, not lost orders: tell "
            "the customers affected that it is delayed."
        )
    return (
        f"ordertrail is missing recent data (complete up to {since}), so {n:,} "
        f"order{'s' if n != 1 else ''} cannot be judged yet. Nothing is known to be wrong with "
        "them."
    )


@dataclass
class Incident:
    kind: str
    hop: str
    since: int | None
    orders: int
    detail: str
    title: str
    text: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # the stalled orders
    total: int = 0  # stalled orders in all (the page lists INCIDENT_ROWS)


def open_incidents(
    store: Store, config: Config, *, redact: bool, limit: int | None = INCIDENT_ROWS
) -> tuple[dict[str, Any] | None, list[Incident], list[str]]:
    """(latest run, its incidents with the orders and customers each one touches, the customer
    columns). The orders of a ``hop_silent`` incident are the active ``stalled`` findings at its
    hop; a ``source_lagging`` incident holds orders that are not judged, so it lists none."""
    tz = config.pipeline.timezone
    with store.engine.connect() as conn:
        run = serving.latest_run(conn)
        incs = serving.run_incidents(conn, int(run["id"])) if run else []
    out: list[Incident] = []
    columns: list[str] = []
    for i in incs:
        inc = Incident(i["kind"], i["hop"], i["since"], int(i["orders"]), i["detail"],
                       incident_title(i["kind"], i["hop"]), incident_words(i, tz))  # fmt: skip
        if i["kind"] == "hop_silent":
            with store.engine.connect() as conn:
                inc.total, shown = serving.stalled_at(conn, i["hop"], limit)
            people = customers(store, config, [f["order_id"] for f in shown if f["order_id"]],
                               redact=redact)  # fmt: skip
            for f in shown:
                who = people.get(f["order_id"], {})
                for k in who:
                    if k not in columns:
                        columns.append(k)
                inc.rows.append({
                    "order_id": f["order_id"], "objects": f["objects"], "from_hop": f["from_hop"],
                    "due": fmt_time(f["since"]), "due_iso": us_to_iso(f["since"]),
                    "customer": who, "status": f["status"],
                })  # fmt: skip
        out.append(inc)
    return run, out, columns


def customers(
    store: Store, config: Config, orders: Sequence[str], *, redact: bool
) -> dict[str, dict[str, Any]]:
    """Per order, its customer: the first value of each personal attribute (``[pipeline]
    personal``) on its events, masked when ``redact``."""
    personal = config.pipeline.personal
    if not personal or not orders:
        return {}
    with store.engine.connect() as conn:
        found = serving.first_attributes(conn, orders, lambda k: is_personal(k, personal))
    if redact:
        found = {o: {k: mask(v) for k, v in d.items()} for o, d in found.items()}
    return found


def incidents_csv(run: dict[str, Any] | None, incidents: list[Incident], columns: list[str]) -> str:
    """Every order of every open incident, one line each, for contacting the customers."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\r\n")
    out.writerow(["incident", "hop", "incident_since", "order_id", "due", "from_hop",
                  "objects", *columns, "finding_status"])  # fmt: skip
    for inc in incidents:
        since = fmt_time(inc.since) if inc.since is not None else ""
        for r in inc.rows:
            out.writerow([_cell(x) for x in (
                inc.kind, inc.hop, since, r["order_id"], r["due_iso"], r["from_hop"],
                " ".join(r["objects"]), *(r["customer"].get(c, "") for c in columns), r["status"],
            )])  # fmt: skip
    return buf.getvalue()


def _cell(v: Any) -> str:
    """A CSV cell that a spreadsheet never runs as a formula."""
    s = "" if v is None else v if isinstance(v, str) else _json(v)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


# -- status ----------------------------------------------------------------------------------------


@dataclass
class HopStatus:
    hop: str
    state: str  # healthy | silent | lagging
    text: str
    last: str  # the last event at the hop
    findings: list[tuple[str, int]]  # (kind, active findings)


def hop_status(
    config: Config, run: dict[str, Any] | None, incidents: list[dict[str, Any]],
    counts: list[tuple[str, str, int]], last: dict[str, int], now: int,
) -> list[HopStatus]:  # fmt: skip
    tz = config.pipeline.timezone
    silent: dict[str, dict[str, Any]] = {}
    lagging: dict[str, dict[str, Any]] = {}
    for i in incidents:
        for h in i["hop"].split("|"):
            (silent if i["kind"] == "hop_silent" else lagging)[h] = i
    per_hop: dict[str, list[tuple[str, int]]] = {}
    for kind, hop, n in counts:
        for h in hop.split("|"):
            per_hop.setdefault(h, []).append((kind, n))
    out = []
    for h in config.hop_names:
        t = last.get(h)
        seen = fmt_time(t, tz) + f" ({ago(now - t)})" if t is not None else "none in the window"
        if h in silent:
            i = silent[h]
            n = int(i["orders"])
            state, text = (
                "silent",
                (
                    f"Silent: no {words(h)} since {fmt_time(i['since'], tz)}; {n:,} "
                    f"order{'s' if n != 1 else ''} wait for it."
                ),
            )
        elif h in lagging or "*" in lagging:
            i = lagging.get(h) or lagging["*"]
            state, text = (
                "lagging",
                (
                    "Waiting for data: a source of this step is behind, so its orders are not "
                    "judged yet."
                ),
            )
        elif run is None:
            state, text = "unknown", "Not checked yet: no reconcile run."
        else:
            state, text = "healthy", "Healthy: orders pass through as expected."
        out.append(HopStatus(h, state, text, seen, sorted(per_hop.get(h, []))))
    return out


FINDING_WORDS = {
    "vanished": "lost between two steps",
    "stalled": "held up",
    "confirmed_unfulfilled": "promised, not done",
    "duplicate": "happened twice",
    "skipped": "a step skipped",
    "orphan": "no start found",
    "failed": "failed",
    "mismatch": "values disagree",
    "out_of_order": "out of order",
    "late": "late",
}
