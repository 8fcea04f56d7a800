"""Per-order state, vectorized: which orders each event belongs to (through objects and links),
the order's objects as units of their own, and first/last times per hop for orders and units.

Everything is arrays over orders (or units); there is no Python loop over orders or events.
Times are float64 µs (exact to year 2255), NaN = never.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ordertrail.reconcile.plan import Plan, condition_holds
from ordertrail.store.window import AttributeValues, WindowData

COMPLETED, STARTED, FAILED = 0, 1, 2
F = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]
Obj = npt.NDArray[np.object_]


@dataclass
class Units:
    """The units one kind of hop is judged on: every K object of an order (an object unit), and
    each order without K objects (an order unit). For kind None: every order."""

    kind: str | None
    order: I64  # order index of each unit
    obj: Obj  # object "kind:id", None for an order unit
    comp_first: F  # [units, hops]: meaningful at hops of this kind
    comp_last: F
    fail_last: F
    reach_first: F
    obj_code: I64 = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # -1: order unit

    @property
    def is_obj(self) -> B:
        return np.array([o is not None for o in self.obj], dtype=bool)

    def __len__(self) -> int:
        return len(self.order)


@dataclass
class State:
    plan: Plan
    order_ids: Obj  # [n]
    judged: B  # [n]: orders to report on (all, or the chosen ones)
    first: F  # [n, hops, 3 phases] first time, every event of the order at the hop
    last: F  # [n, hops, 3]
    comp_all: F  # [n, hops] all-reached completed time (each hops: the last object's)
    comp_any: F  # [n, hops] earliest completed (any object)
    reach_any: F  # [n, hops] earliest completed or failed (any object)
    units: dict[str | None, Units]
    attrs: dict[str, Obj]  # when-attribute -> value per order (MISSING when absent)
    event_count: I64  # [n]
    last_seq: I64  # [n] the order's last event (by time, then seq)
    member_order: I64  # membership: order index per (event, order) pair
    member_event: I64  # membership: event index per pair
    data: WindowData
    objects_total: dict[str, I64] = field(default_factory=dict)  # kind -> [n] count
    unlinked: pd.DataFrame = field(default_factory=pd.DataFrame)  # obj, event (first)

    def __len__(self) -> int:
        return len(self.order_ids)

    @property
    def any_first(self) -> F:
        with np.errstate(all="ignore"):
            a = np.nanmin(np.where(np.isnan(self.first), np.inf, self.first), axis=2)
        a[np.isinf(a)] = np.nan
        return a  # [n, hops]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def _scatter(n_rows: int, width: int, row: I64, col: I64, vals: Any) -> F:
    out = np.full(n_rows * width, np.nan)
    out[row * width + col] = vals
    return out.reshape(n_rows, width)


def _reduce(row: I64, hop: I64, phase: I64, t: I64, n_rows: int, n_hops: int) -> tuple[F, F]:
    """First and last time per (row, hop, phase) -> two [rows, hops, 3] arrays."""
    first = np.full((n_rows, n_hops, 3), np.nan)
    last = np.full((n_rows, n_hops, 3), np.nan)
    if len(row) == 0:
        return first, last
    key = (row * n_hops + hop) * 3 + phase
    g = pd.DataFrame({"k": key, "t": t}).groupby("k", sort=False)["t"].agg(["min", "max"])
    k = g.index.to_numpy(dtype=np.int64)
    first.reshape(-1)[k] = g["min"].to_numpy(dtype=np.float64)
    last.reshape(-1)[k] = g["max"].to_numpy(dtype=np.float64)
    return first, last


def kind_index(plan: Plan, data: WindowData) -> I64:
    """Per object code, the index of its kind in ``plan.kinds`` (-1: a kind no longer declared)."""
    kx = {k: i for i, k in enumerate(plan.kinds)}
    return np.array([kx.get(k, -1) for k in data.obj_kind], dtype=np.int64)


def resolve(plan: Plan, data: WindowData, okind: I64) -> pd.DataFrame:
    """Objects -> orders through links and ``via``: a frame (obj, order) of codes."""
    direct = pd.DataFrame(
        {"obj": data.l_obj[data.l_order >= 0], "order": data.l_order[data.l_order >= 0]}
    )
    pm = data.l_other >= 0
    pairs = pd.DataFrame({"obj": data.l_obj[pm], "other": data.l_other[pm]})
    dk = okind[direct["obj"].to_numpy(dtype=np.int64)] if len(direct) else np.empty(0, np.int64)
    pk = okind[pairs["obj"].to_numpy(dtype=np.int64)] if len(pairs) else np.empty(0, np.int64)
    ok_ = okind[pairs["other"].to_numpy(dtype=np.int64)] if len(pairs) else np.empty(0, np.int64)
    done: dict[int, pd.DataFrame] = {}
    kx = {k: i for i, k in enumerate(plan.kinds)}
    for k in _via_order(plan):
        ki = kx[k]
        own = direct[dk == ki]
        v = plan.via.get(k)
        if v is not None and kx.get(v) in done and len(pairs):
            vi = kx[v]
            vp = pairs[(pk == ki) & (ok_ == vi)]
            through = vp.merge(done[vi].rename(columns={"obj": "other"}), on="other")[
                ["obj", "order"]
            ]
            own = pd.concat([own, through], ignore_index=True)
        done[ki] = own.drop_duplicates()
    # kinds no longer declared: direct links only
    frames = [*done.values(), direct[dk < 0].drop_duplicates()]
    return pd.concat(frames, ignore_index=True)


def _via_order(plan: Plan) -> list[str]:
    """Object kinds so that a kind comes after the kind it is ``via``."""
    out: list[str] = []
    pending = list(plan.kinds)
    while pending:
        for k in list(pending):
            v = plan.via.get(k)
            if v is None or v in out or v not in plan.kinds:
                out.append(k)
                pending.remove(k)
    return out


def build_state(
    plan: Plan,
    data: WindowData,
    attr_values: Mapping[str, AttributeValues],
    *,
    chosen: Sequence[str] | None = None,
) -> State:
    """The state of every order some event of ``data`` belongs to (only ``chosen`` ones judged).

    ``attr_values`` holds the when-attributes' values (any event of the window).
    """
    n_h = plan.n_hops
    okind = kind_index(plan, data)
    obj_orders = resolve(plan, data, okind)
    # event -> orders: its own, and its objects' (a duplicate of its own dropped first)
    own = np.flatnonzero(data.order >= 0)
    via = pd.DataFrame({"ev": data.m_event, "obj": data.m_obj}).merge(obj_orders, on="obj")
    vev = via["ev"].to_numpy(dtype=np.int64)
    vor = via["order"].to_numpy(dtype=np.int64)
    extra = vor != data.order[vev] if len(vev) else np.zeros(0, dtype=bool)
    vpairs = pd.DataFrame({"ev": vev[extra], "order": vor[extra]}).drop_duplicates()
    member_event = np.concatenate([own, vpairs["ev"].to_numpy(dtype=np.int64)])
    member_code = np.concatenate([data.order[own], vpairs["order"].to_numpy(dtype=np.int64)])
    codes, member_order = np.unique(member_code, return_inverse=True)
    member_order = member_order.astype(np.int64)
    order_ids = data.order_names[codes] if len(codes) else np.empty(0, dtype=object)
    n = len(codes)
    code_to_o = np.full(len(data.order_names), -1, dtype=np.int64)
    code_to_o[codes] = np.arange(n, dtype=np.int64)
    judged = np.ones(n, dtype=bool)
    if chosen is not None:
        judged = np.isin(order_ids, np.array(list(chosen), dtype=object))

    hop = data.hop[member_event]
    phase = data.phase[member_event]
    t = data.t[member_event]
    first, last = _reduce(member_order, hop, phase, t, n, n_h)
    event_count = np.bincount(member_order, minlength=n).astype(np.int64)
    # the order's last event: latest time, then highest seq
    last_seq = np.full(n, -1, dtype=np.int64)
    if len(member_order):
        srt = np.lexsort((data.seq[member_event], t, member_order))
        ends = np.r_[np.flatnonzero(np.diff(member_order[srt])), len(srt) - 1]
        last_seq[member_order[srt][ends]] = data.seq[member_event][srt][ends]

    comp = first[:, :, COMPLETED]
    reach = np.fmin(first[:, :, COMPLETED], first[:, :, FAILED])
    comp_all = comp.copy()
    comp_any = comp.copy()
    reach_any = reach.copy()

    # the judged window's objects: (order index, object code)
    oo_o = (
        code_to_o[obj_orders["order"].to_numpy(dtype=np.int64)]
        if len(obj_orders)
        else np.empty(0, np.int64)
    )
    oo_obj = obj_orders["obj"].to_numpy(dtype=np.int64)
    keep = oo_o >= 0
    oo = pd.DataFrame({"o": oo_o[keep], "obj": oo_obj[keep]}).drop_duplicates()
    oo_kind = okind[oo["obj"].to_numpy(dtype=np.int64)] if len(oo) else np.empty(0, np.int64)
    units: dict[str | None, Units] = {
        None: Units(
            None,
            np.arange(n, dtype=np.int64),
            np.full(n, None, dtype=object),
            comp,
            last[:, :, COMPLETED],
            last[:, :, FAILED],
            reach,
            np.full(n, -1, dtype=np.int64),
        )
    }
    objects_total: dict[str, I64] = {}
    m_kind = okind[data.m_obj] if len(data.m_obj) else np.empty(0, np.int64)
    m_hop = data.hop[data.m_event] if len(data.m_event) else np.empty(0, np.int64)
    member = pd.DataFrame({"ev": member_event, "o": member_order})
    for kind in plan.unit_kinds:
        if kind is None:
            continue
        ki = plan.kinds.index(kind)
        ko = oo[oo_kind == ki].sort_values(["o", "obj"])
        ko_o = ko["o"].to_numpy(dtype=np.int64)
        ko_obj = ko["obj"].to_numpy(dtype=np.int64)
        has = np.zeros(n, dtype=bool)
        has[ko_o] = True
        objects_total[kind] = np.bincount(ko_o, minlength=n).astype(np.int64)
        plain = np.flatnonzero(~has)
        n_obj_units = len(ko)
        u_order = np.concatenate([ko_o, plain])
        u_obj = np.concatenate([data.obj_names[ko_obj], np.full(len(plain), None, dtype=object)])
        u_code = np.concatenate([ko_obj, np.full(len(plain), -1, dtype=np.int64)])
        nu = len(u_order)
        # events of this kind's hops that name one of the order's objects
        kind_hops = np.array([i for i, e in enumerate(plan.each) if e == kind], dtype=np.int64)
        sel = (m_kind == ki) & np.isin(m_hop, kind_hops)
        pair = pd.DataFrame({"ev": data.m_event[sel], "obj": data.m_obj[sel]}).merge(
            member, on="ev"
        )
        uidx = pd.DataFrame({"o": ko_o, "obj": ko_obj, "u": np.arange(n_obj_units, dtype=np.int64)})
        pair = pair.merge(uidx, on=["o", "obj"])
        ue = pair["ev"].to_numpy(dtype=np.int64)
        uf, ul = _reduce(
            pair["u"].to_numpy(dtype=np.int64), data.hop[ue], data.phase[ue], data.t[ue], nu, n_h
        )
        # order units take the order's own events
        uf[n_obj_units:] = first[plain]
        ul[n_obj_units:] = last[plain]
        u = Units(
            kind,
            u_order,
            u_obj,
            uf[:, :, COMPLETED],
            ul[:, :, COMPLETED],
            ul[:, :, FAILED],
            np.fmin(uf[:, :, COMPLETED], uf[:, :, FAILED]),
            u_code,
        )
        units[kind] = u
        # order-level views of this kind's hops, for orders with such objects
        if n_obj_units and len(kind_hops):
            rows = u.order[:n_obj_units]
            for h in kind_hops:
                df = pd.DataFrame(
                    {
                        "o": rows,
                        "c": u.comp_first[:n_obj_units, h],
                        "r": u.reach_first[:n_obj_units, h],
                    }
                )
                g = df.groupby("o", sort=False).agg(
                    cmax=("c", "max"), cmin=("c", "min"), rmin=("r", "min"), cn=("c", "count"),
                    n=("c", "size"),
                )  # fmt: skip
                gi = g.index.to_numpy(dtype=np.int64)
                all_done = (g["cn"] == g["n"]).to_numpy()
                comp_all[gi, h] = np.where(all_done, g["cmax"].to_numpy(dtype=float), np.nan)
                comp_any[gi, h] = g["cmin"].to_numpy(dtype=float)
                reach_any[gi, h] = g["rmin"].to_numpy(dtype=float)

    # when-attributes: the first non-null value on the order's events (time, source, event id)
    attrs: dict[str, Obj] = {}
    for a in plan.condition_attrs:
        col = np.full(n, MISSING, dtype=object)
        av = attr_values.get(a)
        if av is not None and len(av.seq) and len(data.seq):
            pos = np.minimum(np.searchsorted(data.seq, av.seq), len(data.seq) - 1)
            ok = data.seq[pos] == av.seq
            vals = pd.DataFrame(
                {
                    "ev": pos[ok],
                    "t": av.t[ok],
                    "src": av.source[ok],
                    "eid": av.event_id[ok],
                    "v": av.value[ok],
                }
            ).merge(member, on="ev")
            vals = vals.sort_values(["o", "t", "src", "eid"], kind="stable").drop_duplicates("o")
            col[vals["o"].to_numpy(dtype=np.int64)] = vals["v"].to_numpy(dtype=object)
        attrs[a] = col

    # objects named in the window that belong to no order
    linked = np.zeros(len(data.obj_names), dtype=bool)
    linked[obj_orders["obj"].to_numpy(dtype=np.int64)] = True
    unl = ~linked[data.m_obj] if len(data.m_obj) else np.zeros(0, dtype=bool)
    unlinked = pd.DataFrame(
        {
            "obj": data.obj_names[data.m_obj[unl]] if unl.any() else np.empty(0, dtype=object),
            "ev": data.m_event[unl],
        }
    )
    return State(
        plan=plan,
        order_ids=order_ids.astype(object),
        judged=judged,
        first=first,
        last=last,
        comp_all=comp_all,
        comp_any=comp_any,
        reach_any=reach_any,
        units=units,
        attrs=attrs,
        event_count=event_count,
        last_seq=last_seq,
        member_order=member_order,
        member_event=member_event,
        data=data,
        objects_total=objects_total,
        unlinked=unlinked,
    )


def condition_mask(state: State, cond: Any) -> tuple[B, list[tuple[str, ...]] | None]:
    """Per order: does ``cond`` hold (missing attributes count as holding), and which were
    missing (None when no order misses any)."""
    n = len(state)
    if cond is None:
        return np.ones(n, dtype=bool), None
    cols = {a: state.attrs.get(a, np.full(n, MISSING, dtype=object)) for a in cond}
    # orders share few distinct attribute combinations: evaluate each combination once
    keys = list(zip(*(cols[a] for a in cond), strict=True)) if n else []
    cache: dict[tuple[Any, ...], tuple[bool, tuple[str, ...]]] = {}
    holds = np.zeros(n, dtype=bool)
    missing: list[tuple[str, ...]] = []
    names = list(cond)
    for i, k in enumerate(keys):
        hk = tuple(_hashable(x) for x in k)
        r = cache.get(hk)
        if r is None:
            present = {a: v for a, v in zip(names, k, strict=True) if v is not MISSING}
            r = condition_holds(cond, present)
            cache[hk] = r
        holds[i] = r[0]
        missing.append(r[1])
    return holds, missing if any(missing) else None


def _hashable(v: Any) -> Any:
    if v is MISSING:
        return ("\x00missing",)
    if isinstance(v, dict | list):
        import orjson

        return ("\x00json", orjson.dumps(v, option=orjson.OPT_SORT_KEYS))
    return (type(v).__name__ if isinstance(v, bool) else "v", v)


def value_map(av: AttributeValues) -> dict[int, Any]:
    """seq -> attribute value (for ``unique_by``)."""
    return dict(zip(av.seq.tolist(), av.value.tolist(), strict=True))


def first_values(state: State, av: AttributeValues, hops: Sequence[int]) -> pd.DataFrame:
    """Per order and hop of ``hops``: the value on the order's first completed event there that
    has one (time, then source and event id break ties) — rows (o, hop, t, v)."""
    data = state.data
    if not len(av.seq) or not len(data.seq):
        return pd.DataFrame({"o": [], "hop": [], "t": [], "v": []})
    pos = np.minimum(np.searchsorted(data.seq, av.seq), len(data.seq) - 1)
    ok = data.seq[pos] == av.seq
    vals = pd.DataFrame(
        {
            "ev": pos[ok],
            "t": av.t[ok],
            "src": av.source[ok],
            "eid": av.event_id[ok],
            "v": av.value[ok],
        }
    )
    vals = vals[
        np.isin(data.hop[vals["ev"].to_numpy(dtype=np.int64)], np.asarray(hops, dtype=np.int64))
        & (data.phase[vals["ev"].to_numpy(dtype=np.int64)] == COMPLETED)
    ]
    vals = vals.merge(pd.DataFrame({"ev": state.member_event, "o": state.member_order}), on="ev")
    vals = vals.assign(hop=data.hop[vals["ev"].to_numpy(dtype=np.int64)])
    vals = vals.sort_values(["o", "hop", "t", "src", "eid"], kind="stable")
    return vals.drop_duplicates(["o", "hop"])[["o", "hop", "t", "v"]].reset_index(drop=True)
