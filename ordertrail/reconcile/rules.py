"""The rules: one function per finding kind over the per-order state, vectorized over orders and
their object units. Each returns unit rows (order, hop, from_hop, field, since, object,
evidence); :func:`judge_all` groups them into findings, one per (order, kind, hop, from_hop,
field), listing the objects concerned. Details are rendered later, from the evidence."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ordertrail.reconcile.evidence import EdgeProgress
from ordertrail.reconcile.plan import Plan, Requirement
from ordertrail.reconcile.state import COMPLETED, State, Units, condition_mask, distinct_codes
from ordertrail.schemas.event import us_to_iso

F = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
I64 = npt.NDArray[np.int64]

KINDS = (
    "vanished", "stalled", "confirmed_unfulfilled", "duplicate", "skipped", "orphan",
    "failed", "mismatch", "out_of_order", "late",
)  # fmt: skip
INFORMATIONAL = frozenset({"late"})
# kinds an orphan still gets: facts about its events, not expectations along the path
ORPHAN_KEEPS = frozenset({"duplicate", "mismatch", "orphan"})

# (requirement, unit kind, t_a of every unit, reach of every unit) -> the edge's population
ProgressProvider = Callable[[Requirement, F, F], EdgeProgress]
# event indexes -> (source, event_id) per event (for tie-breaks)
EventKeys = Callable[[Any], tuple[list[str], list[str]]]


def iso(us: float) -> str | None:
    return None if us is None or np.isnan(us) else us_to_iso(int(us))


# the microsecond range numpy's datetime64 and ``us_to_iso`` both format: years 1..9999
_ISO_LO, _ISO_HI = -62_135_596_800_000_000, 253_402_300_799_999_999


def isos(us: Any) -> list[str | None]:
    """:func:`iso` over a whole column at once (the same strings; NaN -> None): evidence formats
    a time per unit, and numpy's formatter does a column in one call."""
    a = np.asarray(us)
    if a.size == 0:
        return []
    nan = np.isnan(a) if a.dtype.kind == "f" else np.zeros(a.shape, dtype=bool)
    finite = np.where(nan, 0, a)
    if a.dtype.kind not in "fi" or not (finite.min() >= _ISO_LO and finite.max() <= _ISO_HI):
        # other types, and times numpy does not format as us_to_iso does (inf, years past
        # 9999): one by one, with us_to_iso's error
        return [iso(x) for x in a.tolist()]
    iv = finite.astype(np.int64)  # truncates toward zero, as int() does
    dt = iv.astype("datetime64[us]")
    frac = iv % 1_000_000 != 0
    if not frac.any() and not nan.any():
        return np.datetime_as_string(dt, unit="s", timezone="UTC").tolist()
    out = np.datetime_as_string(dt, unit="s", timezone="UTC").astype(object)
    if frac.any():
        out[frac] = np.datetime_as_string(dt[frac], unit="us", timezone="UTC")
    out[nan] = None
    return out.tolist()


def _nanmin(arrs: Iterable[F], n: int) -> F:
    out = np.full(n, np.nan)
    for a in arrs:
        out = np.fmin(out, a)
    return out


@dataclass
class Rows:
    """Unit rows of one kind, before grouping into findings. Rows carry their order's id (""
    for an unlinked object), so the rows of one finding may come from any part of the window;
    an object row's evidence says how many objects of its kind the order has."""

    kind: str
    state: State | None = None
    o: list[I64] = field(default_factory=list)
    order_id: list[Any] = field(default_factory=list)
    last_seq: list[I64] = field(default_factory=list)  # the order's last event (evidence)
    hop: list[Any] = field(default_factory=list)
    from_hop: list[Any] = field(default_factory=list)
    since: list[F] = field(default_factory=list)
    obj: list[Any] = field(default_factory=list)
    evidence: list[list[dict[str, Any]]] = field(default_factory=list)
    field_: list[Any] = field(default_factory=list)

    def add(
        self, o: I64, hop: Any, from_hop: Any, since: F, obj: Any, evidence: list[dict[str, Any]],
        fld: Any = "", order_id: Any = None, last_seq: Any = None,
    ) -> None:  # fmt: skip
        if len(o) == 0:
            return
        n = len(o)
        o = np.asarray(o, dtype=np.int64)
        objs = np.asarray(obj, dtype=object)
        st = self.state
        if order_id is None:
            assert st is not None
            order_id = np.array([st.order_ids[i] if i >= 0 else "" for i in o], dtype=object)
        if last_seq is None:
            last_seq = (
                np.where(o >= 0, st.last_seq[np.maximum(o, 0)], -1)
                if st is not None and len(st.last_seq)
                else np.full(n, -1, dtype=np.int64)
            )
        if st is not None:
            for i, x, e in zip(o, objs, evidence, strict=True):
                if isinstance(x, str) and i >= 0:
                    k = x.partition(":")[0]
                    if k in st.objects_total:
                        e["objects_total"] = {k: int(st.objects_total[k][i])}
        self.o.append(o)
        self.order_id.append(np.asarray(order_id, dtype=object))
        self.last_seq.append(np.asarray(last_seq, dtype=np.int64))
        self.hop.append(
            np.asarray(hop, dtype=object)
            if not isinstance(hop, str)
            else np.full(n, hop, dtype=object)
        )
        self.from_hop.append(
            np.full(n, from_hop, dtype=object)
            if isinstance(from_hop, str)
            else np.asarray(from_hop, dtype=object)
        )
        self.since.append(np.asarray(since, dtype=np.float64))
        self.obj.append(objs)
        self.evidence.append(evidence)
        self.field_.append(
            np.full(n, fld, dtype=object) if isinstance(fld, str) else np.asarray(fld, dtype=object)
        )

    def frame(self) -> pd.DataFrame:
        cols = ("order_id", "hop", "from_hop", "field", "obj", "evidence")
        if not self.o:
            return pd.DataFrame(
                {c: pd.Series(dtype=object) for c in cols}
                | {
                    "o": pd.Series(dtype=np.int64),
                    "since": pd.Series(dtype=np.float64),
                    "last_seq": pd.Series(dtype=np.int64),
                }
            ).assign(kind=pd.Series(dtype=object))
        ev: list[dict[str, Any]] = [e for part in self.evidence for e in part]
        return pd.DataFrame(
            {
                "o": np.concatenate(self.o),
                "last_seq": np.concatenate(self.last_seq),
                "order_id": np.concatenate(self.order_id),
                "kind": self.kind,
                "hop": np.concatenate(self.hop),
                "from_hop": np.concatenate(self.from_hop),
                "field": np.concatenate(self.field_),
                "since": np.concatenate(self.since),
                "obj": np.concatenate(self.obj),
                "evidence": ev,
            }
        )


@dataclass
class Context:
    """What the rules read: the state, the plan, times, and cross-order providers."""

    state: State
    as_of: int
    judge: dict[int, float]  # hop index -> judge time
    window_start: int | None = None
    facts: Any = None  # columnar.Facts: duplicates, check values, unlinked objects (from SQL)
    event_keys: EventKeys | None = None
    # order ids -> those with an event of their own at or before the window start
    started_before: Callable[[list[str]], set[str]] | None = None
    last_activity: Mapping[str, float | None] = field(default_factory=dict)  # hop -> last event
    waiting: dict[str, int] = field(default_factory=dict)  # hop -> units waiting on watermarks
    pending_due: F = field(init=False)

    def __post_init__(self) -> None:
        self.pending_due = np.full(len(self.state), np.nan)

    @property
    def plan(self) -> Plan:
        return self.state.plan

    @property
    def n(self) -> int:
        return len(self.state)

    @property
    def skew(self) -> int:
        return self.plan.config.pipeline.clock_skew

    def j(self, h: int) -> float:
        return self.judge.get(h, float(self.as_of))

    def note_pending(self, o: I64, due: F) -> None:
        """Orders with an expectation not yet judged: in flight, next due at ``due``."""
        if len(o):
            np.fmin.at(self.pending_due, o, due)

    @cached_property
    def entered(self) -> B:
        af = self.state.any_first
        out = np.zeros(self.n, dtype=bool)
        for e in self.plan.entry:
            out |= ~np.isnan(af[:, e])
        return out

    @property
    def orphan(self) -> B:
        """Orders with no event at an entry hop: they get no expectation findings."""
        return ~self.entered

    @cached_property
    def closed_at(self) -> F:
        comp = self.state.first[:, :, COMPLETED]
        return _nanmin((comp[:, c] for c in self.plan.closing), self.n)

    @cached_property
    def closed(self) -> B:
        return ~np.isnan(self.closed_at)

    def condition(self, cond: Any) -> tuple[B, list[tuple[str, ...]] | None]:
        key = repr(cond)
        cache = self.__dict__.setdefault("_cond_cache", {})
        if key not in cache:
            cache[key] = condition_mask(self.state, cond)
        return cache[key]

    # -- unit helpers ----------------------------------------------------------------------
    def units(self, kind: str | None) -> Units:
        return self.state.units[kind]

    def t_from(self, u: Units, a: int) -> F:
        """The time an edge counts from, per unit: the object's own time at ``a`` when ``a`` has
        the unit's kind, else the order's (all objects reached) time."""
        if u.kind is not None and self.plan.each[a] == u.kind:
            return u.comp_first[:, a]
        return self.state.comp_all[u.order, a]

    def passed(self, u: Units, h: int, *, completed: bool = False) -> tuple[F, I64]:
        """Earliest time each unit reached a later hop (same-kind hops for objects, any hop for
        an order unit), and which hop (-1 none). ``completed``: completed events only."""
        later, which = self._later(u, completed)
        return later[:, h], which[:, h]

    def _later(self, u: Units, completed: bool) -> tuple[F, I64]:
        """For every hop at once: the earliest reach of any descendant, per unit — a dynamic
        program over the hops in reverse topological order (one pass over the edges, so a chain
        of thousands of hops costs no more than its edges)."""
        key = (u.kind, completed)
        cache = self.__dict__.setdefault("_later_cache", {})
        if key in cache:
            return cache[key]
        st, plan = self.state, self.plan
        nu, nh = len(u), plan.n_hops
        is_obj = u.is_obj
        src_u = u.comp_first if completed else u.reach_first
        src_o = st.comp_any if completed else st.reach_any
        # the value a unit has at each hop as a later hop of another (never: +inf while the
        # program runs, so that plain comparisons order it last)
        val = np.empty((nh, nu))
        for d in range(nh):
            same = u.kind is not None and plan.each[d] == u.kind
            val[d] = np.where(is_obj, src_u[:, d] if same else np.nan, src_o[u.order, d])
        val[np.isnan(val)] = np.inf
        later = np.full((nh, nu), np.inf)
        which = np.full((nh, nu), nh, dtype=np.int64)  # nh: none (above every hop index)
        for h in reversed(plan.topo):
            lh, wh = later[h], which[h]
            for c in plan.children[h]:
                for cand, cw in ((val[c], c), (later[c], which[c])):
                    # earlier, or as early through a lower hop index (a tie-break that does not
                    # depend on the order the children are listed in)
                    better = (cand < lh) | ((cand == lh) & (cw < wh))
                    np.copyto(lh, cand, where=better)
                    np.copyto(wh, cw, where=better)
        never = np.isinf(later)
        later[never] = np.nan
        which[never] = -1
        out = (np.ascontiguousarray(later.T), np.ascontiguousarray(which.T))
        cache[key] = out
        return out

    def reach(self, u: Units, h: int) -> F:
        return u.reach_first[:, h]


def _ev(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


# -- edges ------------------------------------------------------------------------------------


@dataclass
class EdgeFacts:
    req: Requirement
    u: Units
    ta: F
    reach: F
    deadline: F
    label: npt.NDArray[np.object_]
    judge: F
    overdue: B
    late: B
    ooo_unit: B | None  # per unit (same each), else None
    ooo_order: B | None  # per order
    ooo_first_a: F | None
    ooo_first_b: F | None
    missing_attrs: list[tuple[str, ...]] | None


def _const(value: Any, n: int) -> npt.NDArray[np.object_]:
    """n copies of one value as a read-only view (an object array of a million equal strings
    costs a million reference counts)."""
    one = np.empty(1, dtype=object)
    one[0] = value
    return np.broadcast_to(one, (n,))


def _label_table(plan: Plan, req: Requirement, act: list[B]) -> npt.NDArray[np.object_]:
    """Per order, the hop a finding names: the target, or the group's active members."""
    n = len(act[0]) if act else 0
    if not req.group:
        return _const(plan.names[req.targets[0]], n)
    code = np.zeros(n, dtype=np.int64)
    for i, a in enumerate(act):
        code |= a.astype(np.int64) << i
    labels = {}
    for c in np.unique(code):
        members = [plan.names[m] for i, m in enumerate(req.targets) if (int(c) >> i) & 1]
        labels[int(c)] = "|".join(members)
    return (
        np.array([labels[int(c)] for c in code], dtype=object) if n else np.empty(0, dtype=object)
    )


def _missing_for(
    missing: list[list[tuple[str, ...]] | None], n: int
) -> list[tuple[str, ...]] | None:
    if all(m is None for m in missing):
        return None
    out: list[tuple[str, ...]] = []
    for i in range(n):
        s: list[str] = []
        for m in missing:
            if m is not None:
                s.extend(x for x in m[i] if x not in s)
        out.append(tuple(s))
    return out


def edge_facts(ctx: Context) -> list[EdgeFacts]:
    cache = ctx.__dict__.get("_edge_facts")
    if cache is not None:
        return cache
    plan, st = ctx.plan, ctx.state
    out: list[EdgeFacts] = []
    for req in plan.requirements:
        u = ctx.units(req.each)
        uo = u.order
        conds = [ctx.condition(c) for c in req.conds]
        act = [c[0] for c in conds]
        any_act = np.zeros(ctx.n, dtype=bool)
        within = np.full(ctx.n, np.nan)
        judge = np.full(ctx.n, np.nan)
        for a, w, m in zip(act, req.within, req.targets, strict=True):
            any_act |= a
            within = np.where(a, np.fmax(within, w), within)
            judge = np.where(a, np.fmin(judge, ctx.j(m)), judge)
        labels = _label_table(plan, req, act)
        missing_attrs = _missing_for([c[1] for c in conds], ctx.n)
        ta = ctx.t_from(u, req.src)
        reach = _nanmin((u.reach_first[:, m] for m in req.targets), len(u))
        passed = _nanmin((ctx.passed(u, m)[0] for m in req.targets), len(u))
        satisfied = ~np.isnan(reach) | ~np.isnan(passed)
        deadline = ta + within[uo]
        jd = judge[uo]
        live = any_act[uo] & ~ctx.orphan[uo]
        missing = live & ~np.isnan(ta) & ~satisfied & ~ctx.closed[uo]
        with np.errstate(invalid="ignore"):
            overdue = missing & (deadline < jd)
            late = live & ~np.isnan(ta) & ~np.isnan(reach) & (reach > deadline)
        ctx.note_pending(uo[missing & ~overdue], deadline[missing & ~overdue])
        waits = missing & ~overdue & (deadline < ctx.as_of)
        if waits.any():
            for lab, cnt in pd.Series(labels[uo[waits]]).value_counts().items():
                ctx.waiting[str(lab)] = ctx.waiting.get(str(lab), 0) + int(cnt)
        # out of order: per object when both hops have the object's kind, else per order
        ooo_unit = ooo_order = first_a = first_b = None
        same = req.each is not None and plan.each[req.src] == req.each
        with np.errstate(invalid="ignore"):
            if same:
                ooo_unit = live & (reach < ta - ctx.skew)
            else:
                first_b = _nanmin((st.reach_any[:, m] for m in req.targets), ctx.n)
                first_a = st.comp_any[:, req.src]
                ooo_order = any_act & ~ctx.orphan & (first_b < first_a - ctx.skew)
        out.append(
            EdgeFacts(
                req,
                u,
                ta,
                reach,
                deadline,
                labels[uo],
                jd,
                overdue,
                late,
                ooo_unit,
                ooo_order,
                first_a,
                first_b,
                missing_attrs,
            )
        )
    ctx.__dict__["_edge_facts"] = out
    return out


def overdue(ctx: Context) -> pd.DataFrame:
    """Every unit overdue on an edge (not yet told vanished from stalled: that needs the whole
    window's population), with its evidence so far: columns order_id, o, req, hop (the label),
    from_hop, obj, ta, deadline, evidence."""
    plan = ctx.plan
    parts = []
    for f in edge_facts(ctx):
        ix = np.flatnonzero(f.overdue)
        if not len(ix):
            continue
        a = plan.names[f.req.src]
        rows = Rows("overdue", ctx.state)
        ev = []
        ta, dl, ju = isos(f.ta[ix]), isos(f.deadline[ix]), isos(f.judge[ix])
        for k, i in enumerate(ix):
            o = int(f.u.order[i])
            e = _ev(
                from_hop=a, from_at=ta[k], deadline=dl[k],
                overdue_s=round((ctx.as_of - f.deadline[i]) / 1e6), judged_until=ju[k],
            )  # fmt: skip
            if f.missing_attrs is not None and f.missing_attrs[o]:
                e["missing_attributes"] = list(f.missing_attrs[o])
            if f.req.group:  # the later-units count runs over every member of the group
                e["later_reached"] = [plan.names[m] for m in f.req.targets]
            ev.append(e)
        rows.add(f.u.order[ix], f.label[ix], a, f.deadline[ix], f.u.obj[ix], ev)
        df = rows.frame().assign(
            req=plan.requirements.index(f.req), ta=f.ta[ix], deadline=f.deadline[ix]
        )
        parts.append(df)
    if not parts:
        return (
            Rows("overdue")
            .frame()
            .assign(
                req=pd.Series(dtype=np.int64),
                ta=pd.Series(dtype=float),
                deadline=pd.Series(dtype=float),
            )
        )
    return pd.concat(parts, ignore_index=True)


def edge_points(ctx: Context) -> dict[int, tuple[F, F]]:
    """Per requirement, its population in this part: (time at its source hop, first reach of
    its target) of every unit that has both — conditions, closing and orphans aside."""
    out: dict[int, tuple[F, F]] = {}
    for k, f in enumerate(edge_facts(ctx)):
        ok = ~np.isnan(f.ta) & ~np.isnan(f.reach)
        out[k] = (f.ta[ok], f.reach[ok])
    return out


def edge_point_orders(ctx: Context) -> dict[int, npt.NDArray[np.object_]]:
    """The order of each point of :func:`edge_points`, in the same order."""
    out: dict[int, npt.NDArray[np.object_]] = {}
    for k, f in enumerate(edge_facts(ctx)):
        ok = ~np.isnan(f.ta) & ~np.isnan(f.reach)
        out[k] = ctx.state.order_ids[f.u.order[ok]]
    return out


def _moved(overdue_: pd.DataFrame, progress: Callable[[int], EdgeProgress]) -> tuple[B, I64]:
    """For each overdue unit: did the edge's target pass, after its deadline, a unit that reached
    the source later (vanished), and how many (exact)."""
    moved = np.zeros(len(overdue_), dtype=bool)
    later = np.zeros(len(overdue_), dtype=np.int64)
    if not len(overdue_):
        return moved, later
    req = overdue_["req"].to_numpy(dtype=np.int64)
    ta = overdue_["ta"].to_numpy(dtype=float)
    dl = overdue_["deadline"].to_numpy(dtype=float)
    for r in np.unique(req):
        ix = np.flatnonzero(req == r)
        prog = progress(int(r))
        mv = prog.moved_on(ta[ix], dl[ix])
        moved[ix] = mv
        vi = ix[mv]
        if len(vi):
            later[vi] = prog.count_later(ta[vi], dl[vi])
    return moved, later


def _edge_rows(kind: str, overdue_: pd.DataFrame, pick: B, extra: list[dict[str, Any]]) -> Rows:
    rows = Rows(kind)
    ix = np.flatnonzero(pick)
    if len(ix):
        sub = overdue_.iloc[ix]
        ev = [{**e, **x} for e, x in zip(sub["evidence"], [extra[i] for i in ix], strict=True)]
        rows.add(sub["o"].to_numpy(dtype=np.int64), sub["hop"].to_numpy(dtype=object),
                 sub["from_hop"].to_numpy(dtype=object), sub["deadline"].to_numpy(dtype=float),
                 sub["obj"].to_numpy(dtype=object), ev,
                 order_id=sub["order_id"].to_numpy(dtype=object),
                 last_seq=sub["last_seq"].to_numpy(dtype=np.int64))  # fmt: skip
    return rows


def vanished(overdue_: pd.DataFrame, moved: B, later: I64) -> Rows:
    """Overdue on an edge, and the next hop has since passed an order (or object) that reached
    the edge's first hop later: the pipeline moved on past this one — lost between them."""
    return _edge_rows("vanished", overdue_, moved, [{"later_orders": int(n)} for n in later])


def stalled(overdue_: pd.DataFrame, moved: B, last_activity: Mapping[str, float | None]) -> Rows:
    """Overdue on an edge, and the next hop has passed nothing that reached the first hop later:
    the hop (or the link to it) is stopped or backlogged."""
    seen: dict[str, str | None] = {}
    for lab in set(overdue_["hop"].tolist()):
        known = [x for x in (last_activity.get(m) for m in str(lab).split("|")) if x is not None]
        seen[lab] = iso(max(known)) if known else None
    extra = [{"last_hop_event": seen[lab]} for lab in overdue_["hop"].tolist()]
    return _edge_rows("stalled", overdue_, ~moved, extra)


def out_of_order(ctx: Context) -> Rows:
    """The next hop reached before the edge's first hop by more than the clock skew."""
    rows = Rows("out_of_order", ctx.state)
    plan = ctx.plan
    for f in edge_facts(ctx):
        a = plan.names[f.req.src]
        if f.ooo_unit is not None:
            ix = np.flatnonzero(f.ooo_unit)
            ev = [_ev(reached_at=iso(f.reach[i]), from_hop=a, from_at=iso(f.ta[i]),
                      skew_s=ctx.skew // 1_000_000) for i in ix]  # fmt: skip
            rows.add(f.u.order[ix], f.label[ix], a, f.reach[ix], f.u.obj[ix], ev)
        elif f.ooo_order is not None and f.ooo_first_a is not None and f.ooo_first_b is not None:
            ix = np.flatnonzero(f.ooo_order)
            labels = _label_table(plan, f.req, [ctx.condition(c)[0] for c in f.req.conds])
            fa, fb = f.ooo_first_a, f.ooo_first_b
            ev = [_ev(reached_at=iso(fb[i]), from_hop=a, from_at=iso(fa[i]),
                      skew_s=ctx.skew // 1_000_000) for i in ix]  # fmt: skip
            rows.add(ix, labels[ix], a, fb[ix], np.full(len(ix), None, dtype=object), ev)
    return rows


# -- promises ---------------------------------------------------------------------------------


@dataclass
class PromiseFacts:
    src: int
    target: int
    u: Units
    tp: F
    deadline: F
    keep: F
    unkept_overdue: B
    late: B
    missing_attrs: list[tuple[str, ...]] | None
    waiting: B  # active, made, not kept, order not closed


def promise_facts(ctx: Context) -> list[PromiseFacts]:
    cache = ctx.__dict__.get("_promise_facts")
    if cache is not None:
        return cache
    out = []
    plan, st = ctx.plan, ctx.state
    for p in plan.promises:
        u = ctx.units(plan.each[p.target])
        uo = u.order
        act, missing_attrs = ctx.condition(p.cond)
        tp = st.comp_all[uo, p.src]
        later, _ = ctx.passed(u, p.target, completed=True)
        keep = np.fmin(u.comp_first[:, p.target], later)
        deadline = tp + p.within
        live = act[uo] & ~ctx.orphan[uo] & ~np.isnan(tp)
        missing = live & np.isnan(keep) & ~ctx.closed[uo]
        with np.errstate(invalid="ignore"):
            overdue = missing & (deadline < ctx.j(p.target))
            late = live & ~np.isnan(keep) & (keep > deadline)
        ctx.note_pending(uo[missing & ~overdue], deadline[missing & ~overdue])
        waits = missing & ~overdue & (deadline < ctx.as_of)
        if waits.any():
            name = plan.names[p.target]
            ctx.waiting[name] = ctx.waiting.get(name, 0) + len(np.unique(uo[waits]))
        out.append(
            PromiseFacts(
                p.src, p.target, u, tp, deadline, keep, overdue, late, missing_attrs, missing
            )
        )
    ctx.__dict__["_promise_facts"] = out
    return out


def confirmed_unfulfilled(ctx: Context) -> Rows:
    """A promising hop told the customer; a promised hop was not reached (by every object) in
    time."""
    rows = Rows("confirmed_unfulfilled", ctx.state)
    plan = ctx.plan
    for f in promise_facts(ctx):
        ix = np.flatnonzero(f.unkept_overdue)
        ev = []
        tp, dl = isos(f.tp[ix]), isos(f.deadline[ix])
        for k, i in enumerate(ix):
            e = _ev(promised_at=tp[k], deadline=dl[k],
                    overdue_s=round((ctx.as_of - f.deadline[i]) / 1e6))  # fmt: skip
            o = int(f.u.order[i])
            if f.missing_attrs is not None and f.missing_attrs[o]:
                e["missing_attributes"] = list(f.missing_attrs[o])
            ev.append(e)
        rows.add(f.u.order[ix], plan.names[f.target], plan.names[f.src], f.deadline[ix],
                 f.u.obj[ix], ev)  # fmt: skip
    return rows


def late(ctx: Context) -> Rows:
    """Informational: a hop reached after its deadline; a promise kept after its deadline."""
    rows = Rows("late", ctx.state)
    plan = ctx.plan
    for f in edge_facts(ctx):
        ix = np.flatnonzero(f.late)
        ra, dl, ta = isos(f.reach[ix]), isos(f.deadline[ix]), isos(f.ta[ix])
        ev = [_ev(reached_at=ra[k], deadline=dl[k],
                  late_s=round((f.reach[i] - f.deadline[i]) / 1e6), from_at=ta[k])
              for k, i in enumerate(ix)]  # fmt: skip
        rows.add(f.u.order[ix], f.label[ix], plan.names[f.req.src], f.reach[ix], f.u.obj[ix], ev)
    for p in promise_facts(ctx):
        ix = np.flatnonzero(p.late)
        ke, dl, tp = isos(p.keep[ix]), isos(p.deadline[ix]), isos(p.tp[ix])
        ev = [_ev(kept_at=ke[k], deadline=dl[k], promise=True,
                  late_s=round((p.keep[i] - p.deadline[i]) / 1e6), promised_at=tp[k])
              for k, i in enumerate(ix)]  # fmt: skip
        rows.add(
            p.u.order[ix], plan.names[p.target], plan.names[p.src], p.keep[ix], p.u.obj[ix], ev
        )
    return rows


# -- skipped ----------------------------------------------------------------------------------


def skipped(ctx: Context) -> Rows:
    """A later hop reached while a required earlier hop on its path never was."""
    rows = Rows("skipped", ctx.state)
    plan = ctx.plan
    entry = set(plan.entry)
    # a hop required through an active `next` edge
    for g in range(plan.n_hops):
        if g in entry or g in plan.closing:
            continue
        parents = [r for r in plan.requirements if not r.group and r.targets == (g,)]
        if not parents:
            continue
        required = np.zeros(ctx.n, dtype=bool)
        for r in parents:
            required |= ctx.condition(r.conds[0])[0]
        u = ctx.units(plan.each[g])
        uo = u.order
        later, which = ctx.passed(u, g)
        miss = required[uo] & np.isnan(u.reach_first[:, g]) & ~np.isnan(later) & ~ctx.orphan[uo]
        _emit_skip(ctx, rows, u, miss, later, which, _const(plan.names[g], len(u)), ctx.j(g))
    # a group none of whose members was reached, though a later hop was
    for r in plan.requirements:
        if not r.group:
            continue
        u = ctx.units(r.each)
        uo = u.order
        acts = [ctx.condition(c)[0][uo] for c in r.conds]
        reached = np.zeros(len(u), dtype=bool)
        for m in r.targets:
            reached |= ~np.isnan(u.reach_first[:, m])
        passed = [ctx.passed(u, m) for m in r.targets]
        has_p = [~np.isnan(p[0]) for p in passed]
        any_act = np.zeros(len(u), dtype=bool)
        for a in acts:
            any_act |= a
        any_p = np.zeros(len(u), dtype=bool)
        for hp in has_p:
            any_p |= hp
        miss = any_act & ~reached & any_p & ~ctx.orphan[uo]
        # the members to name: passed and active, else passed
        act_p = [hp & a for hp, a in zip(has_p, acts, strict=True)]
        any_act_p = np.zeros(len(u), dtype=bool)
        for x in act_p:
            any_act_p |= x
        chosen = [np.where(any_act_p, ap, hp) for ap, hp in zip(act_p, has_p, strict=True)]
        code = np.zeros(len(u), dtype=np.int64)
        for i, c in enumerate(chosen):
            code |= c.astype(np.int64) << i
        names: dict[int, str] = {}
        for c in np.unique(code[miss]):
            names[int(c)] = "|".join(
                plan.names[m] for i, m in enumerate(r.targets) if (int(c) >> i) & 1
            )
        label = np.array([names.get(int(c), "") for c in code], dtype=object)
        later = np.full(len(u), np.nan)
        which = np.full(len(u), -1, dtype=np.int64)
        jd = np.full(len(u), np.inf)
        for c, (t, w), m in zip(chosen, passed, r.targets, strict=True):
            better = c & ~np.isnan(t) & (np.isnan(later) | (t < later))
            later = np.where(better, t, later)
            which = np.where(better, w, which)
            jd = np.minimum(jd, ctx.j(m))  # judged once every member's sources are
        _emit_skip(ctx, rows, u, miss, later, which, label, jd)
    return rows


def _emit_skip(
    ctx: Context, rows: Rows, u: Units, miss: B, later: F, which: I64, label: Any, jd: Any
) -> None:
    with np.errstate(invalid="ignore"):
        judged = miss & (later < jd)
    pend = miss & ~judged
    ctx.note_pending(u.order[pend], later[pend])
    ix = np.flatnonzero(judged)
    plan = ctx.plan
    ev = [_ev(later_hop=plan.names[int(which[i])], later_at=iso(later[i])) for i in ix]
    rows.add(u.order[ix], np.asarray(label, dtype=object)[ix], "", later[ix], u.obj[ix], ev)


# -- duplicate --------------------------------------------------------------------------------


def duplicate(ctx: Context) -> Rows:
    """A unique hop reached by two or more distinct completed events (or distinct values of its
    ``unique_by`` attribute): per unit, from the counts the columnar backend reduced."""
    rows = Rows("duplicate", ctx.state)
    plan = ctx.plan
    dup = ctx.facts.dup if ctx.facts is not None else {}
    for h, hp in enumerate(plan.config.hops):
        df = dup.get(h)
        if df is None or df.empty:
            continue
        u = ctx.units(hp.each)
        ui = df["u"].to_numpy(dtype=np.int64)
        ev = [
            _ev(count=int(n), first_at=iso(float(a)), second_at=iso(float(b)), by=hp.unique_by)
            for n, a, b in zip(df["n"], df["first_t"], df["second_t"], strict=True)
        ]
        rows.add(u.order[ui], hp.name, "", df["second_t"].to_numpy(dtype=float), u.obj[ui], ev)
    return rows


def failed(ctx: Context) -> Rows:
    """A failed phase with no later success there and no closing hop within the edge's time."""
    rows = Rows("failed", ctx.state)
    plan = ctx.plan
    for h in range(plan.n_hops):
        u = ctx.units(plan.each[h])
        uo = u.order
        fl = u.fail_last[:, h]
        cl = u.comp_last[:, h]
        window = plan.fail_window[h]
        with np.errstate(invalid="ignore"):
            failing = ~np.isnan(fl) & (np.isnan(cl) | (cl < fl)) & ~ctx.orphan[uo]
            deadline = fl + window
            closed_in_time = ctx.closed[uo] & (ctx.closed_at[uo] <= deadline)
            live = failing & ~closed_in_time
            judged = live & (deadline < ctx.j(h))
        ctx.note_pending(uo[live & ~judged], deadline[live & ~judged])
        ix = np.flatnonzero(judged)
        ev = [_ev(failed_at=iso(fl[i]), window_s=window // 1_000_000, deadline=iso(deadline[i]))
              for i in ix]  # fmt: skip
        rows.add(uo[ix], plan.names[h], "", fl[ix], u.obj[ix], ev)
    return rows


# -- mismatch ---------------------------------------------------------------------------------


_NUMERIC = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def numeric(v: Any) -> float | None:
    """A number, or a string that is exactly a decimal number ("12.50", "-3", "1e3"); booleans
    are not numbers."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float) or (isinstance(v, str) and _NUMERIC.fullmatch(v)):
        f = float(v)
    else:
        return None
    return f if np.isfinite(f) else None


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    import orjson

    return orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()


def _numbers(vals: npt.NDArray[np.object_]) -> F:
    """Each value as a number (NaN: not a number or a numeric string), judged once per
    distinct value (a currency, a status, the same price repeat)."""
    codes, reps = distinct_codes(vals)
    nums = np.array([np.nan if (n := numeric(v)) is None else n for v in reps], dtype=np.float64)
    return nums[codes]


def _differ(
    x: npt.NDArray[np.object_], y: npt.NDArray[np.object_], tolerance: float, ignore_case: bool
) -> B:
    """Vectorized :func:`values_differ` over pairs of values."""
    nx, ny = _numbers(x), _numbers(y)
    both = ~np.isnan(nx) & ~np.isnan(ny)
    with np.errstate(invalid="ignore"):
        out = both & (np.abs(nx - ny) > tolerance + 1e-9)
    rest = np.flatnonzero(~both)
    if len(rest):
        tx = [_text(v) for v in x[rest]]
        ty = [_text(v) for v in y[rest]]
        if ignore_case:
            tx, ty = [t.casefold() for t in tx], [t.casefold() for t in ty]
        out[rest] = np.array(tx, dtype=object) != np.array(ty, dtype=object)
    return out


def values_differ(x: Any, y: Any, tolerance: float, ignore_case: bool) -> bool:
    nx, ny = numeric(x), numeric(y)
    if nx is not None and ny is not None:
        return abs(nx - ny) > tolerance + 1e-9
    a, b = _text(x), _text(y)
    if ignore_case:
        a, b = a.casefold(), b.casefold()
    return a != b


def mismatch(ctx: Context) -> Rows:
    """A checked attribute differs across its hops beyond the tolerance.

    ``check_values[j]``: per check, rows (o, hop, t, v) — the value on the order's first
    completed event at each hop of the check that has one."""
    rows = Rows("mismatch", ctx.state)
    plan = ctx.plan
    check_values = ctx.facts.check_values if ctx.facts is not None else None
    for j, chk in enumerate(plan.config.checks):
        vals = check_values[j] if check_values else None
        if vals is None or vals.empty:
            continue
        pos = {plan.hx[h]: p for p, h in enumerate(chk.hops)}
        vals = vals.assign(p=vals["hop"].map(pos)).sort_values(["o", "p"], kind="stable")
        base = vals.drop_duplicates("o")[["o", "p", "hop", "v"]]
        base = base.rename(columns={"p": "bp", "hop": "bhop", "v": "bv"})
        cmp = vals.merge(base, on="o")
        cmp = cmp[cmp["p"] != cmp["bp"]]
        if cmp.empty:
            continue
        differ = _differ(cmp["bv"].to_numpy(dtype=object), cmp["v"].to_numpy(dtype=object),
                         chk.tolerance, chk.ignore_case)  # fmt: skip
        hit = cmp[differ]
        if hit.empty:
            continue
        names = np.array(plan.names, dtype=object)
        hop_names = names[hit["hop"].to_numpy(dtype=np.int64)]
        base_names = names[hit["bhop"].to_numpy(dtype=np.int64)]
        ev = [
            _ev(field=chk.field, base_hop=bh, base_value=bv, value=v, tolerance=chk.tolerance,
                ignore_case=chk.ignore_case or None)
            for bh, bv, v in zip(base_names, hit["bv"], hit["v"], strict=True)
        ]  # fmt: skip
        rows.add(hit["o"].to_numpy(dtype=np.int64), hop_names, base_names,
                 hit["t"].to_numpy(dtype=float), np.full(len(hit), None, dtype=object), ev,
                 chk.field)  # fmt: skip
    return rows


# -- orphan -----------------------------------------------------------------------------------


def orphan(ctx: Context) -> Rows:
    """Events for an order that never reached an entry hop; objects that belong to no order."""
    rows = Rows("orphan", ctx.state)
    plan, st = ctx.plan, ctx.state
    af = st.any_first
    first_at = _nanmin((af[:, h] for h in range(plan.n_hops)), ctx.n)
    if plan.entry:
        j_entry = min(ctx.j(h) for h in plan.entry)
        with np.errstate(invalid="ignore"):
            orph = ctx.orphan & (first_at < j_entry)
            if ctx.window_start is not None:
                # an order whose start fell out of the window just before it is not an orphan
                orph &= first_at > ctx.window_start + plan.longest_path
            pend = ctx.orphan & ~orph & (first_at >= j_entry)
        ctx.note_pending(np.flatnonzero(pend), first_at[pend])
        if ctx.started_before is not None and orph.any():
            # nor is one with events of its own before the window: its start fell out of it
            cand = np.flatnonzero(orph & st.judged)
            old = ctx.started_before([str(x) for x in st.order_ids[cand]])
            if old:
                orph &= ~np.isin(st.order_ids, np.array(sorted(old), dtype=object))
        ix = np.flatnonzero(orph)
        first_hop = (
            np.nanargmin(np.where(np.isnan(af), np.inf, af), axis=1)
            if ctx.n
            else np.array([], dtype=np.int64)
        )
        entry_names = [plan.names[h] for h in plan.entry]
        ev = [_ev(first_hop=plan.names[int(first_hop[i])], first_at=iso(first_at[i]),
                  entry_hops=entry_names) for i in ix]  # fmt: skip
        rows.add(
            ix,
            plan.names[plan.entry[0]],
            "",
            first_at[ix],
            np.full(len(ix), None, dtype=object),
            ev,
        )
    # unlinked objects: candidates for each one's first window event, at its earliest time
    unl = ctx.facts.unlinked if ctx.facts is not None else None
    if unl is not None and len(unl):
        cand = unl
        if ctx.event_keys is not None and cand["obj"].duplicated().any():
            src, eid = ctx.event_keys(cand["seq"].astype(np.int64).tolist())
            cand = cand.assign(src=src, eid=eid).sort_values(["obj", "src", "eid"], kind="stable")
        else:
            cand = cand.sort_values(["obj", "seq"], kind="stable")
        firsts = cand.drop_duplicates("obj")
        firsts = firsts[firsts["t"].to_numpy(dtype=float) + plan.longest_path < ctx.as_of]
        hops = np.array([plan.names[int(h)] for h in firsts["hop"]], dtype=object)
        ev = [
            _ev(first_at=iso(float(tt)), first_hop=h)
            for tt, h in zip(firsts["t"], hops, strict=True)
        ]
        rows.add(np.full(len(firsts), -1, dtype=np.int64), hops, "",
                 firsts["t"].to_numpy(dtype=float), firsts["obj"].to_numpy(dtype=object), ev)  # fmt: skip
    return rows


# the rules of one part of the window; vanished and stalled are decided over every part
PART_RULES: dict[str, Callable[[Context], Rows]] = {
    "confirmed_unfulfilled": confirmed_unfulfilled,
    "duplicate": duplicate,
    "skipped": skipped,
    "orphan": orphan,
    "failed": failed,
    "mismatch": mismatch,
    "out_of_order": out_of_order,
    "late": late,
}


def expectations(ctx: Context) -> list[dict[str, Any]]:
    """What each judged order still waits for: edges and promises not yet reached (overdue or
    not), with their deadlines and the objects concerned — from the same facts as the rules."""
    plan = ctx.plan
    out: dict[tuple[int, str, str, str], dict[str, Any]] = {}

    def add(o: int, hop: str, after: str, kind: str, deadline: float, obj: Any) -> None:
        # one line per missing hop: the edge into it, else the promise of it
        if kind == "promise" and any(k[0] == o and k[1] == hop and k[3] == "edge" for k in out):
            return
        key = (o, hop, after, kind)
        cur = out.get(key)
        if cur is None:
            cur = out[key] = {"o": o, "hop": hop, "after": after, "kind": kind,
                              "deadline": deadline, "objects": []}  # fmt: skip
        cur["deadline"] = min(cur["deadline"], deadline)
        if obj is not None:
            cur["objects"].append(obj)

    for f in edge_facts(ctx):
        uo = f.u.order
        act = np.zeros(ctx.n, dtype=bool)
        for c in f.req.conds:
            act |= ctx.condition(c)[0]
        passed = _nanmin((ctx.passed(f.u, m)[0] for m in f.req.targets), len(f.u))
        waiting = (
            act[uo] & ~ctx.orphan[uo] & ~ctx.closed[uo] & ~np.isnan(f.ta)
            & np.isnan(f.reach) & np.isnan(passed)
        )  # fmt: skip
        for i in np.flatnonzero(waiting & ctx.state.judged[uo]):
            add(
                int(uo[i]),
                str(f.label[i]),
                plan.names[f.req.src],
                "edge",
                float(f.deadline[i]),
                f.u.obj[i],
            )
    for p in promise_facts(ctx):
        uo = p.u.order
        for i in np.flatnonzero(p.waiting & ctx.state.judged[uo]):
            add(
                int(uo[i]),
                plan.names[p.target],
                plan.names[p.src],
                "promise",
                float(p.deadline[i]),
                p.u.obj[i],
            )
    return sorted(out.values(), key=lambda x: (x["o"], x["deadline"]))
