"""Per-order state, vectorized: first/last times per hop for orders and for their objects as
units of their own, and the attributes conditions read. Built by :mod:`columnar` (DuckDB SQL).

Everything is arrays over orders (or units); there is no Python loop over orders or events.
Times are float64 µs (exact to year 2255), NaN = never.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ordertrail.reconcile.plan import Plan, condition_holds

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
    obj_code: I64  # [units] the object's index, -1 for an order unit

    @property
    def is_obj(self) -> B:
        return self.obj_code >= 0

    def __len__(self) -> int:
        return len(self.order)


@dataclass
class State:
    """One part of the orders, reduced: times per order and hop, per object unit and hop, and
    the attributes conditions read."""

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
    objects_total: dict[str, I64] = field(default_factory=dict)  # kind -> [n] count

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


def condition_mask(state: State, cond: Any) -> tuple[B, list[tuple[str, ...]] | None]:
    """Per order: does ``cond`` hold (missing attributes count as holding), and which were
    missing (None when no order misses any)."""
    n = len(state)
    if cond is None:
        return np.ones(n, dtype=bool), None
    names = list(cond)
    # orders share few distinct values: code each attribute's values, judge each distinct
    # combination of codes once
    coded = [_coded(state, a) for a in names]
    if not n:
        return np.zeros(0, dtype=bool), None
    if len(coded) == 1:
        combos, inverse = np.arange(len(coded[0][1]))[:, None], coded[0][0]
    else:
        combos, inverse = np.unique(
            np.stack([c for c, _ in coded], axis=1), axis=0, return_inverse=True
        )
        inverse = inverse.reshape(-1)
    holds_c = np.zeros(len(combos), dtype=bool)
    missing_c = np.empty(len(combos), dtype=object)
    for j, combo in enumerate(combos):
        present = {}
        for a, (_, reps), code in zip(names, coded, combo, strict=True):
            v = reps[int(code)]
            if v is not MISSING:
                present[a] = v
        holds_c[j], missing_c[j] = condition_holds(cond, present)
    # every combination comes from some order, so any missing one is some order's
    return holds_c[inverse], (missing_c[inverse].tolist() if any(missing_c) else None)


def _coded(state: State, attr: str) -> tuple[I64, list[Any]]:
    """An attribute's value per order as :func:`distinct_codes`, kept on the state for the next
    condition."""
    cache = state.__dict__.setdefault("_coded", {})
    if attr not in cache:
        col = state.attrs.get(attr)
        cache[attr] = distinct_codes(
            np.full(len(state), MISSING, dtype=object) if col is None else col
        )
    return cache[attr]


def distinct_codes(vals: Any) -> tuple[I64, list[Any]]:
    """Values as codes into the list of their distinct values (1, 1.0 and true apart; lists
    and objects by their JSON): what is judged per distinct value is judged once."""
    ids: dict[Any, int] = {}
    reps: list[Any] = []
    codes = np.empty(len(vals), dtype=np.int64)
    for i, v in enumerate(vals):
        try:
            key: Any = (type(v), v)
            c = ids.get(key)
        except TypeError:  # a list or an object
            key = _hashable(v)
            c = ids.get(key)
        if c is None:
            c = ids[key] = len(reps)
            reps.append(v)
        codes[i] = c
    return codes, reps


def _hashable(v: Any) -> Any:
    if v is MISSING:
        return ("\x00missing",)
    if isinstance(v, dict | list):
        import orjson

        return ("\x00json", orjson.dumps(v, option=orjson.OPT_SORT_KEYS))
    return (type(v).__name__ if isinstance(v, bool) else "v", v)
