"""The oracle: a plain-Python, one-order-at-a-time reference of ordertrail's reconciliation.

Slow and obviously right. It follows shared/DESIGN.md ("Objects and keys", "Paths",
"Reconciliation semantics") and the decisions in notes/semantics.md (section numbers in the
comments below, written "§4"). It shares no code with the engine: the property tests compare the
engine's findings with ``oracle_findings`` on generated pipelines and event sets.

Shape of the computation:

1. ``Pipeline``     -- the config, parsed: hops, edges, groups, descendants, entry hops,
                       longest path time, judge(h).
2. ``resolve``      -- links from every event up to as_of, ``orders(x)`` for every object,
                       the orders each window event belongs to, each order's objects.
3. ``OrderView``    -- one order's own little state: its events by hop, its objects, its
                       attributes, closed/orphan; the per-unit views of a hop (§2).
4. one plain function per finding kind, run over one order at a time; the one cross-order
   fact (vanished vs stalled) comes from ``EdgePopulation``, a plain loop over all units.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# -------------------------------------------------------------------------------------------
# Small value helpers
# -------------------------------------------------------------------------------------------

NEG_INF = -math.inf
COMPLETED = "completed"
FAILED = "failed"
REACH_PHASES = frozenset({COMPLETED, FAILED})  # §0: `started` reaches nothing
DONE_PHASES = frozenset({COMPLETED})

# §10: an order is an orphan when it has no window event at any entry hop, *any phase*.
# (DESIGN.md says "never reached any entry hop"; see the report: this is the semantics.md reading.)
ORPHAN_ENTRY_PHASES = frozenset({COMPLETED, FAILED, "started"})

_UNITS_US = {
    "us": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "w": 7 * 86_400_000_000,
}
_DURATION = re.compile(r"(?:\d+(?:us|ms|s|m|h|d|w))+")
_DURATION_PART = re.compile(r"(\d+)(us|ms|s|m|h|d|w)")
# A "numeric string" (§9): an optionally signed decimal, optional fraction and exponent.
_NUMERIC = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def parse_duration(value: str | int | float) -> int:
    """'90s', '15m', '2h', '3d', '1h30m' -> microseconds. A bare number counts as seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return int(value * 1_000_000)
    text = value.strip().replace(" ", "")
    if not _DURATION.fullmatch(text):
        raise ValueError(f"not a duration: {value!r}")
    return sum(int(n) * _UNITS_US[u] for n, u in _DURATION_PART.findall(text))


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def json_key(v: Any) -> tuple[str, Any]:
    """A key under which two values are equal exactly when they are equal as JSON values.

    1 == 1.0; "1" != 1; true != "true"; true != 1.
    """
    if isinstance(v, bool):
        return ("bool", v)
    if _is_number(v):
        return ("num", float(v))
    if isinstance(v, str):
        return ("str", v)
    return ("json", json.dumps(v, sort_keys=True, separators=(",", ":")))


def as_number(v: Any) -> float | None:
    """A finite number for numbers and numeric strings (§9); None otherwise."""
    if not (_is_number(v) or (isinstance(v, str) and _NUMERIC.fullmatch(v))):
        return None
    x = float(v)
    return x if math.isfinite(x) else None


def as_text(v: Any) -> str:
    """Strings as they are, other values as JSON text (§9)."""
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


# -------------------------------------------------------------------------------------------
# Events
# -------------------------------------------------------------------------------------------

Obj = tuple[str, str]  # (kind, id)


def obj_name(o: Obj) -> str:
    return f"{o[0]}:{o[1]}"


@dataclass(frozen=True)
class Event:
    source: str
    event_id: str
    order_id: str
    objects: tuple[Obj, ...]
    hop: str
    phase: str
    at: int
    attributes: dict[str, Any] = field(compare=False, hash=False)

    @property
    def key(self) -> tuple[int, str, str]:
        """§0 tie-break: (occurred_at, source, event_id)."""
        return (self.at, self.source, self.event_id)


def _event_from_dict(d: dict[str, Any]) -> Event:
    objs: set[Obj] = set()
    for kind, ids in (d.get("objects") or {}).items():
        for i in ids:
            objs.add((str(kind), str(i)))
    return Event(
        source=str(d["source"]),
        event_id=str(d["event_id"]),
        order_id=str(d.get("order_id") or ""),
        objects=tuple(sorted(objs)),
        hop=str(d["hop"]),
        phase=str(d.get("phase") or COMPLETED),
        at=int(d["occurred_at"]),
        attributes=dict(d.get("attributes") or {}),
    )


def dedupe(events: Iterable[dict[str, Any]]) -> list[Event]:
    """One Event per (source, event_id): redeliveries count once.

    Redeliveries carry identical content; should two copies differ anyway, the one with the
    smallest canonical JSON wins, so the choice does not depend on the list's order.
    """
    best: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for d in events:
        k = (str(d["source"]), str(d["event_id"]))
        canon = json.dumps(d, sort_keys=True, default=str)
        if k not in best or canon < best[k][0]:
            best[k] = (canon, d)
    return sorted((_event_from_dict(d) for _, d in best.values()), key=lambda e: e.key)


def first_time(events: Iterable[Event], phases: frozenset[str]) -> int | None:
    """Time of the first event (events come sorted by tie-break) whose phase is in `phases`."""
    for e in events:
        if e.phase in phases:
            return e.at
    return None


def last_time(events: Iterable[Event], phase: str) -> int | None:
    times = [e.at for e in events if e.phase == phase]
    return max(times) if times else None


def min_or_none(values: Iterable[int | None]) -> int | None:
    vs = [v for v in values if v is not None]
    return min(vs) if vs else None


# -------------------------------------------------------------------------------------------
# The pipeline
# -------------------------------------------------------------------------------------------


@dataclass
class Hop:
    name: str
    index: int
    next: list[str]
    next_any: list[str]
    within: dict[str, int]  # target -> µs, for every next / next_any target
    each: str | None
    unique: bool
    unique_by: str | None
    promises: list[str]
    promise_within: int | None
    closes: bool
    when: dict[str, dict[str, list[Any]]]  # target -> {attribute: [allowed values]}


@dataclass
class Check:
    field: str
    hops: list[str]
    tolerance: float
    ignore_case: bool


class Pipeline:
    """The parsed config plus the graph facts every rule needs."""

    def __init__(self, config: dict[str, Any]) -> None:
        pipe = config.get("pipeline") or {}
        self.clock_skew = parse_duration(pipe.get("clock_skew", "0s"))
        self.lookback = parse_duration(pipe.get("lookback", "30d"))
        self.via: dict[str, str | None] = {
            o["name"]: o.get("via") for o in config.get("objects") or []
        }
        self.hops: dict[str, Hop] = {}
        for i, h in enumerate(config.get("hops") or []):
            nxt = list(h.get("next") or [])
            nany = list(h.get("next_any") or [])
            w = h.get("within")
            within: dict[str, int] = {}
            for t in nxt + nany:
                if isinstance(w, dict):
                    within[t] = parse_duration(w[t])
                elif w is not None:
                    within[t] = parse_duration(w)
            when: dict[str, dict[str, list[Any]]] = {}
            for target, cond in (h.get("when") or {}).items():
                when[target] = {a: (v if isinstance(v, list) else [v]) for a, v in cond.items()}
            pw = h.get("promise_within")
            self.hops[h["name"]] = Hop(
                name=h["name"],
                index=i,
                next=nxt,
                next_any=nany,
                within=within,
                each=h.get("each"),
                unique=bool(h.get("unique", False)) or h.get("unique_by") is not None,
                unique_by=h.get("unique_by"),
                promises=list(h.get("promises") or []),
                promise_within=parse_duration(pw) if pw is not None else None,
                closes=bool(h.get("closes", False)),
                when=when,
            )
        self.order: list[str] = list(self.hops)
        self.checks = [
            Check(
                field=c["field"],
                hops=list(c["hops"]),
                tolerance=float(c.get("tolerance", 0) or 0),
                ignore_case=bool(c.get("ignore_case", False)),
            )
            for c in config.get("checks") or []
        ]
        self.sources: list[dict[str, Any]] = list(config.get("sources") or [])

        self.parents: dict[str, list[str]] = {h: [] for h in self.order}
        for a in self.order:
            for b in self.children(a):
                self.parents[b].append(a)
        self.entry = [h for h in self.order if not self.parents[h] and not self.hops[h].closes]
        self.desc: dict[str, list[str]] = {h: self._descendants(h) for h in self.order}
        self.longest_path = max((self._longest_from(h) for h in self.order), default=0)

    # graph -----------------------------------------------------------------------------------
    def children(self, a: str) -> list[str]:
        return self.hops[a].next + self.hops[a].next_any

    def _descendants(self, h: str) -> list[str]:
        """Hops reachable from h through next / next_any edges (h excluded), config order."""
        seen: set[str] = set()
        stack = list(self.children(h))
        while stack:
            x = stack.pop()
            if x not in seen:
                seen.add(x)
                stack.extend(self.children(x))
        return [x for x in self.order if x in seen]

    def _longest_from(self, h: str) -> int:
        hop = self.hops[h]
        return max((hop.within[t] + self._longest_from(t) for t in self.children(h)), default=0)

    def each(self, h: str) -> str | None:
        return self.hops[h].each

    def in_edge_withins(self, b: str) -> list[int]:
        return [self.hops[a].within[b] for a in self.parents[b]]

    def failed_window(self, b: str) -> int:
        """§8: the longest within into b; for an entry hop the shortest outgoing; else 0."""
        incoming = self.in_edge_withins(b)
        if incoming:
            return max(incoming)
        outgoing = [self.hops[b].within[t] for t in self.children(b)]
        return min(outgoing) if outgoing else 0

    # judge -----------------------------------------------------------------------------------
    def judge(self, h: str, as_of: int, watermarks: dict[str, int | None]) -> float:
        """§0: min(as_of, watermark of every source that can feed h); -inf if one has none."""
        t: float = as_of
        for s in self.sources:
            feeds = s.get("hop_field") is not None or s.get("hop") == h
            if feeds:
                wm = watermarks.get(s["name"])
                if wm is None:
                    return NEG_INF
                t = min(t, wm)
        return t


# -------------------------------------------------------------------------------------------
# Resolution (§1)
# -------------------------------------------------------------------------------------------


@dataclass
class Resolution:
    window: list[Event]
    event_orders: dict[tuple[str, str], set[str]]  # (source, event_id) -> orders
    orders_of: dict[Obj, set[str]]  # every object named by a seen event -> its orders
    order_objects: dict[str, dict[str, list[str]]]  # order -> kind -> sorted ids


def resolve(pipe: Pipeline, events: list[Event], as_of: int) -> Resolution:
    seen = [e for e in events if e.at <= as_of]
    window = [e for e in seen if as_of - pipe.lookback < e.at]

    direct: dict[Obj, set[str]] = defaultdict(set)
    linked: dict[Obj, set[Obj]] = defaultdict(set)
    known: set[Obj] = set()
    for e in seen:
        for x in e.objects:
            known.add(x)
            if e.order_id:
                direct[x].add(e.order_id)
            for y in e.objects:
                if y[0] != x[0]:
                    linked[x].add(y)

    memo: dict[Obj, set[str]] = {}

    def orders(x: Obj) -> set[str]:
        if x not in memo:
            res = set(direct.get(x, ()))
            via = pipe.via.get(x[0])
            if via is not None:
                for y in linked.get(x, ()):
                    if y[0] == via:
                        res |= orders(y)  # via kinds form no cycle: this terminates
            memo[x] = res
        return memo[x]

    orders_of = {x: orders(x) for x in sorted(known)}
    event_orders: dict[tuple[str, str], set[str]] = {}
    for e in window:
        own = {e.order_id} if e.order_id else set()
        for x in e.objects:
            own |= orders_of[x]
        event_orders[(e.source, e.event_id)] = own

    order_objects: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for x, os_ in orders_of.items():
        for o in os_:
            order_objects[o][x[0]].append(x[1])
    for kinds in order_objects.values():
        for ids in kinds.values():
            ids.sort()
    return Resolution(window, event_orders, orders_of, order_objects)


# -------------------------------------------------------------------------------------------
# One order's state (§2)
# -------------------------------------------------------------------------------------------

Unit = Obj | None  # an object of the order, or None for the order itself


class OrderView:
    def __init__(
        self, pipe: Pipeline, order_id: str, events: list[Event], objects: dict[str, list[str]]
    ) -> None:
        self.pipe = pipe
        self.order_id = order_id
        self.events = sorted(events, key=lambda e: e.key)
        self.objects = {k: list(v) for k, v in objects.items() if v}
        self.by_hop: dict[str, list[Event]] = defaultdict(list)
        for e in self.events:
            self.by_hop[e.hop].append(e)
        self.first_at = self.events[0].at
        closing = [e.at for e in self.events if e.phase == COMPLETED and self._is_closing(e.hop)]
        self.closed_at: int | None = min(closing) if closing else None
        self.orphan = not any(
            e.hop in pipe.entry and e.phase in ORPHAN_ENTRY_PHASES for e in self.events
        )

    def _is_closing(self, h: str) -> bool:
        return h in self.pipe.hops and self.pipe.hops[h].closes

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    # attributes and conditions (§3) ---------------------------------------------------------
    def attribute(self, name: str) -> Any:
        for e in self.events:
            v = e.attributes.get(name)
            if v is not None:
                return v
        return None

    def condition_holds(self, a: str, target: str) -> bool:
        cond = self.pipe.hops[a].when.get(target)
        if not cond:
            return True
        for attr, allowed in cond.items():
            v = self.attribute(attr)
            if v is None:
                continue  # missing: nothing is assumed away
            if json_key(v) not in {json_key(x) for x in allowed}:
                return False
        return True

    # units and per-unit views of a hop (§2) ------------------------------------------------
    def obj_kind(self, h: str) -> str | None:
        """The each kind of h when the order has objects of that kind, else None (ordinary)."""
        k = self.pipe.each(h)
        return k if k is not None and self.objects.get(k) else None

    def units(self, h: str) -> list[Unit]:
        k = self.obj_kind(h)
        if k is None:
            return [None]
        return [(k, i) for i in self.objects[k]]

    def unit_events(self, h: str, u: Unit) -> list[Event]:
        """The events at h that move unit u (None = the order: the any-object view)."""
        evs = self.by_hop.get(h, [])
        k = self.obj_kind(h)
        if k is None:
            assert u is None, (h, u)
            return evs
        if u is None:
            mine = {(k, i) for i in self.objects[k]}
            return [e for e in evs if mine.intersection(e.objects)]
        assert u[0] == k, (h, u)
        return [e for e in evs if u in e.objects]

    def reach_time(self, h: str, u: Unit) -> int | None:
        """First completed-or-failed event of u at h (u None: any-reached for an each hop)."""
        return first_time(self.unit_events(h, u), REACH_PHASES)

    def done_time(self, h: str, u: Unit) -> int | None:
        """First completed event of u at h (u None: earliest over the order's objects)."""
        return first_time(self.unit_events(h, u), DONE_PHASES)

    def t_order(self, h: str) -> int | None:
        """Order-level t(h): first completed; for an each hop with objects, all-reached."""
        if self.obj_kind(h) is None:
            return self.done_time(h, None)
        times = [self.done_time(h, u) for u in self.units(h)]
        if any(t is None for t in times):
            return None
        return max(t for t in times if t is not None)

    def later_hops(self, h: str, u: Unit) -> list[str]:
        """Descendants of h that count for u: an object only counts hops of its own each."""
        if u is None:
            return list(self.pipe.desc[h])
        return [d for d in self.pipe.desc[h] if self.pipe.each(d) == u[0]]

    def passed_time(self, h: str, u: Unit) -> int | None:
        """§5: when u did not reach h, the earliest time it reached a later hop that counts."""
        if self.reach_time(h, u) is not None:
            return None
        return min_or_none(self.reach_time(d, u) for d in self.later_hops(h, u))

    def keep_time(self, q: str, u: Unit) -> int | None:
        """§6: the earliest completed event of u at q or at a later hop that counts."""
        return min_or_none(self.done_time(h, u) for h in [q, *self.later_hops(q, u)])


# -------------------------------------------------------------------------------------------
# Findings
# -------------------------------------------------------------------------------------------

# Identity (§12): order, object ("kind:id" for an unlinked object's orphan, else ""), kind,
# hop, from_hop, field.
FKey = tuple[str | None, str, str, str, str | None, str | None]


class Findings:
    """One finding per identity; units of the same identity are merged (objects, since=min)."""

    def __init__(self) -> None:
        self.items: dict[FKey, dict[str, Any]] = {}

    def add(
        self,
        order_id: str | None,
        kind: str,
        hop: str,
        from_hop: str | None,
        since: int,
        unit: Unit = None,
        field: str | None = None,
        objects: list[str] | None = None,
        unlinked: str = "",
    ) -> None:
        key: FKey = (order_id, unlinked, kind, hop, from_hop, field)
        f = self.items.setdefault(
            key,
            {
                "order_id": order_id,
                "kind": kind,
                "hop": hop,
                "from_hop": from_hop,
                "since": since,
                "objects": [],
                "field": field,
            },
        )
        f["since"] = min(f["since"], since)
        names = list(objects or [])
        if unit is not None:
            names.append(obj_name(unit))
        f["objects"] = sorted(set(f["objects"]) | set(names))

    def merge(self, other: Findings, prefer_existing: bool = False) -> None:
        for key, f in other.items.items():
            if key not in self.items:
                self.items[key] = dict(f)
            elif not prefer_existing:
                mine = self.items[key]
                mine["since"] = min(mine["since"], f["since"])
                mine["objects"] = sorted(set(mine["objects"]) | set(f["objects"]))

    def sorted(self) -> list[dict[str, Any]]:
        def sort_key(f: dict[str, Any]) -> tuple[Any, ...]:
            return (
                f["order_id"] or "",
                f["kind"],
                f["hop"],
                f["from_hop"] or "",
                f["field"] or "",
                f["objects"],
            )

        return sorted(self.items.values(), key=sort_key)


# -------------------------------------------------------------------------------------------
# Edges and the cross-order population (§3, §4)
# -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edge:
    a: str
    members: tuple[str, ...]  # (b,) for a `next` edge, the group for a `next_any` edge
    group: bool


def edges_of(pipe: Pipeline) -> list[Edge]:
    out: list[Edge] = []
    for a in pipe.order:
        hop = pipe.hops[a]
        out.extend(Edge(a, (b,), False) for b in hop.next)
        if hop.next_any:
            out.append(Edge(a, tuple(hop.next_any), True))
    return out


def edge_t_a(view: OrderView, edge: Edge, u: Unit) -> int | None:
    """§4 t_a(u): per object when a has the same each as the edge's target, else t(a)."""
    pipe = view.pipe
    same_each = pipe.each(edge.a) is not None and pipe.each(edge.a) == pipe.each(edge.members[0])
    if same_each and u is not None:
        return view.done_time(edge.a, u)
    return view.t_order(edge.a)


def edge_reach(view: OrderView, edge: Edge, u: Unit) -> int | None:
    """§4 reach(u, R): u's first reach of b, or of any member of the group (active or not)."""
    return min_or_none(view.reach_time(m, u) for m in edge.members)


def edge_passed(view: OrderView, edge: Edge, u: Unit) -> bool:
    """u reached none of R but a later hop of some member (§3, §5)."""
    if edge_reach(view, edge, u) is not None:
        return False
    return any(view.passed_time(m, u) is not None for m in edge.members)


class EdgePopulation:
    """Per edge, every unit over all orders with t_a and reach(R) both defined (§4)."""

    def __init__(self, views: list[OrderView]) -> None:
        self.views = views
        self.cache: dict[Edge, list[tuple[int, int]]] = {}

    def pairs(self, edge: Edge) -> list[tuple[int, int]]:
        if edge not in self.cache:
            out: list[tuple[int, int]] = []
            for v in self.views:  # orphans and closed orders included, conditions ignored
                for u in v.units(edge.members[0]):
                    ta = edge_t_a(v, edge, u)
                    r = edge_reach(v, edge, u)
                    if ta is not None and r is not None:
                        out.append((ta, r))
            self.cache[edge] = out
        return self.cache[edge]

    def later_units(self, edge: Edge, t_a: int, deadline: int) -> int:
        """How many units reached a later than t_a and reached R after `deadline`."""
        return sum(1 for ta, r in self.pairs(edge) if ta > t_a and r > deadline)


# -------------------------------------------------------------------------------------------
# Rules: one plain function per finding kind, over one order
# -------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    pipe: Pipeline
    as_of: int
    watermarks: dict[str, int | None]
    population: EdgePopulation
    # orders with an event of their own (their order id) at or before the window start
    started_before: frozenset[str] = frozenset()

    def judge(self, h: str) -> float:
        return self.pipe.judge(h, self.as_of, self.watermarks)


def active_members(view: OrderView, edge: Edge) -> list[str]:
    return [m for m in edge.members if view.condition_holds(edge.a, m)]


def rule_vanished_stalled(ctx: Ctx, view: OrderView, out: Findings) -> None:
    if view.orphan or view.closed:
        return
    pipe = ctx.pipe
    for edge in edges_of(pipe):
        active = active_members(view, edge)
        if not active:
            continue
        label = "|".join(active)
        within = max(pipe.hops[edge.a].within[m] for m in active)
        judge = min(ctx.judge(m) for m in active)
        for u in view.units(edge.members[0]):
            ta = edge_t_a(view, edge, u)
            if ta is None:
                continue
            if edge_reach(view, edge, u) is not None or edge_passed(view, edge, u):
                continue
            deadline = ta + within
            if not deadline < judge:
                continue
            later = ctx.population.later_units(edge, ta, deadline)
            kind = "vanished" if later > 0 else "stalled"
            out.add(view.order_id, kind, label, edge.a, deadline, u)


def rule_late_edges(ctx: Ctx, view: OrderView, out: Findings) -> None:
    if view.orphan:
        return
    pipe = ctx.pipe
    for edge in edges_of(pipe):
        active = active_members(view, edge)
        if not active:
            continue
        label = "|".join(active)
        within = max(pipe.hops[edge.a].within[m] for m in active)
        for u in view.units(edge.members[0]):
            ta = edge_t_a(view, edge, u)
            r = edge_reach(view, edge, u)
            if ta is not None and r is not None and r > ta + within:
                out.add(view.order_id, "late", label, edge.a, r, u)


def rule_out_of_order(ctx: Ctx, view: OrderView, out: Findings) -> None:
    if view.orphan:
        return
    pipe = ctx.pipe
    skew = pipe.clock_skew
    for edge in edges_of(pipe):
        active = active_members(view, edge)
        if not active:
            continue
        label = "|".join(active)
        units = view.units(edge.members[0])
        same_each = pipe.each(edge.a) is not None and pipe.each(edge.a) == pipe.each(
            edge.members[0]
        )
        if same_each and units[0] is not None:
            for u in units:
                ta = view.done_time(edge.a, u)
                r = edge_reach(view, edge, u)
                if ta is not None and r is not None and r < ta - skew:
                    out.add(view.order_id, "out_of_order", label, edge.a, r, u)
        else:
            first_a = view.done_time(edge.a, None)
            first_r = edge_reach(view, edge, None)
            if first_a is not None and first_r is not None and first_r < first_a - skew:
                out.add(view.order_id, "out_of_order", label, edge.a, first_r)


def rule_skipped(ctx: Ctx, view: OrderView, out: Findings) -> None:
    if view.orphan:
        return
    pipe = ctx.pipe
    # A hop that is an active `next` target of some parent.
    for g in pipe.order:
        if g in pipe.entry or pipe.hops[g].closes:
            continue
        required = any(
            g in pipe.hops[a].next and view.condition_holds(a, g) for a in pipe.parents[g]
        )
        if not required:
            continue
        for u in view.units(g):
            t = view.passed_time(g, u)
            if t is not None and t < ctx.judge(g):
                out.add(view.order_id, "skipped", g, None, t, u)
    # A member of an active group of which the unit reached no member.
    for a in pipe.order:
        group = pipe.hops[a].next_any
        if not group:
            continue
        active = [m for m in group if view.condition_holds(a, m)]
        if not active:
            continue
        judge = min(ctx.judge(m) for m in group)
        for u in view.units(group[0]):
            if any(view.reach_time(m, u) is not None for m in group):
                continue
            passed = [
                m
                for m in group
                if m not in pipe.entry
                and not pipe.hops[m].closes
                and view.passed_time(m, u) is not None
            ]
            if not passed:
                continue
            named = [m for m in passed if m in active] or passed
            t = min_or_none(view.passed_time(m, u) for m in named)
            if t is not None and t < judge:
                out.add(view.order_id, "skipped", "|".join(named), None, t, u)


def rule_promises(ctx: Ctx, view: OrderView, out: Findings, late_out: Findings) -> None:
    """confirmed_unfulfilled into `out`; promise `late` findings into `late_out` (§6)."""
    if view.orphan:
        return
    pipe = ctx.pipe
    for p in pipe.order:
        hop = pipe.hops[p]
        if not hop.promises or hop.promise_within is None:
            continue
        tp = view.t_order(p)
        if tp is None:
            continue
        deadline = tp + hop.promise_within
        for q in hop.promises:
            if not view.condition_holds(p, q):
                continue
            judge = ctx.judge(q)
            for u in view.units(q):
                kept = view.keep_time(q, u)
                if kept is None:
                    if not view.closed and deadline < judge:
                        out.add(view.order_id, "confirmed_unfulfilled", q, p, deadline, u)
                elif kept > deadline:
                    late_out.add(view.order_id, "late", q, p, kept, u)


def rule_duplicate(ctx: Ctx, view: OrderView, out: Findings) -> None:
    pipe = ctx.pipe
    for h in pipe.order:
        hop = pipe.hops[h]
        if not hop.unique:
            continue
        for u in view.units(h):
            done = [e for e in view.unit_events(h, u) if e.phase == COMPLETED]
            since: int | None = None
            if hop.unique_by is None:
                if len(done) >= 2:
                    since = done[1].at
            else:
                values: set[tuple[str, Any]] = set()
                for e in done:
                    v = e.attributes.get(hop.unique_by)
                    if v is None:
                        continue
                    values.add(json_key(v))
                    if len(values) == 2:
                        since = e.at
                        break
            if since is not None:
                out.add(view.order_id, "duplicate", h, None, since, u)


def rule_failed(ctx: Ctx, view: OrderView, out: Findings) -> None:
    if view.orphan:
        return
    pipe = ctx.pipe
    for b in pipe.order:
        window = pipe.failed_window(b)
        judge = ctx.judge(b)
        for u in view.units(b):
            evs = view.unit_events(b, u)
            fl = last_time(evs, FAILED)
            cl = last_time(evs, COMPLETED)
            if fl is None or (cl is not None and cl >= fl):
                continue
            deadline = fl + window
            if view.closed_at is not None and view.closed_at <= deadline:
                continue
            if deadline < judge:
                out.add(view.order_id, "failed", b, None, fl, u)


def _values_differ(x: Any, y: Any, tolerance: float, ignore_case: bool) -> bool:
    nx, ny = as_number(x), as_number(y)
    if nx is not None and ny is not None:
        return abs(nx - ny) > tolerance + 1e-9
    tx, ty = as_text(x), as_text(y)
    if ignore_case:
        return tx.casefold() != ty.casefold()
    return tx != ty


def rule_mismatch(ctx: Ctx, view: OrderView, out: Findings) -> None:
    for check in ctx.pipe.checks:
        values: list[tuple[str, Any, int]] = []  # (hop, value, time of the value's event)
        for h in check.hops:
            for e in view.by_hop.get(h, []):
                if e.phase == COMPLETED and e.attributes.get(check.field) is not None:
                    values.append((h, e.attributes[check.field], e.at))
                    break
        if not values:
            continue
        base_hop, base_value, _ = values[0]
        for h, v, at in values[1:]:
            if _values_differ(base_value, v, check.tolerance, check.ignore_case):
                out.add(view.order_id, "mismatch", h, base_hop, at, field=check.field)


def rule_orphan_order(ctx: Ctx, view: OrderView, out: Findings) -> None:
    pipe = ctx.pipe
    if not view.orphan or not pipe.entry:
        return
    entry_judge = min(ctx.judge(h) for h in pipe.entry)
    window_start = ctx.as_of - pipe.lookback
    if view.order_id in ctx.started_before:
        return  # its start fell out of the window: not an orphan
    if view.first_at < entry_judge and view.first_at > window_start + pipe.longest_path:
        out.add(view.order_id, "orphan", pipe.entry[0], None, view.first_at)


def rule_unlinked(ctx: Ctx, res: Resolution, out: Findings) -> None:
    first: dict[Obj, Event] = {}
    for e in res.window:  # sorted by tie-break
        for x in e.objects:
            if x not in first:
                first[x] = e
    for x, e in first.items():
        if not res.orders_of.get(x) and e.at + ctx.pipe.longest_path < ctx.as_of:
            name = obj_name(x)
            out.add(None, "orphan", e.hop, None, e.at, objects=[name], unlinked=name)


# -------------------------------------------------------------------------------------------
# Entry point
# -------------------------------------------------------------------------------------------


def build_views(pipe: Pipeline, res: Resolution) -> list[OrderView]:
    per_order: dict[str, list[Event]] = defaultdict(list)
    for e in res.window:
        for o in res.event_orders[(e.source, e.event_id)]:
            per_order[o].append(e)
    return [
        OrderView(pipe, o, per_order[o], res.order_objects.get(o, {})) for o in sorted(per_order)
    ]


def oracle_findings(
    config: dict[str, Any],
    events: list[dict[str, Any]],
    as_of: int,
    watermarks: dict[str, int | None],
) -> list[dict[str, Any]]:
    pipe = Pipeline(config)
    res = resolve(pipe, dedupe(events), as_of)
    views = build_views(pipe, res)
    all_events = dedupe(events)
    window_start = as_of - pipe.lookback
    started_before = frozenset(
        e.order_id for e in all_events if e.order_id and e.at <= window_start
    )
    ctx = Ctx(pipe, as_of, dict(watermarks), EdgePopulation(views), started_before)

    found = Findings()
    for view in views:
        edge_late = Findings()
        promise_late = Findings()
        rule_vanished_stalled(ctx, view, found)
        rule_late_edges(ctx, view, edge_late)
        rule_out_of_order(ctx, view, found)
        rule_skipped(ctx, view, found)
        rule_promises(ctx, view, found, promise_late)
        rule_duplicate(ctx, view, found)
        rule_failed(ctx, view, found)
        rule_mismatch(ctx, view, found)
        rule_orphan_order(ctx, view, found)
        # §6: a promise `late` with the identity of an edge `late` gives way to the edge's.
        edge_late.merge(promise_late, prefer_existing=True)
        found.merge(edge_late)
    rule_unlinked(ctx, res, found)
    return found.sorted()
