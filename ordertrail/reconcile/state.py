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
    obj_code: I64 = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # -1: order unit

    @property
    def is_obj(self) -> B:
        return np.array([o is not None for o in self.obj], dtype=bool)

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
