"""Classification: run every rule over a state and group the unit rows into findings — one per
(order, kind, hop, from_hop, field), listing the objects concerned — plus each order's state."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ordertrail.reconcile.rules import (
    INFORMATIONAL,
    KINDS,
    ORPHAN_KEEPS,
    RULES,
    Context,
    duplicate,
    mismatch,
)
from ordertrail.reconcile.state import COMPLETED

FINDING_COLUMNS = [
    "o", "order_id", "object", "kind", "hop", "from_hop", "field", "since", "objects", "evidence",
]  # fmt: skip
IDENTITY = ["order_id", "object", "kind", "hop", "from_hop", "field"]


@dataclass
class Classification:
    findings: pd.DataFrame  # FINDING_COLUMNS; order_id "" and object "kind:id" for unlinked
    state: npt.NDArray[np.object_]  # per order: complete | in_flight | closed | finding
    next_due: npt.NDArray[np.float64]  # per order: earliest pending deadline (NaN: none)
    waiting: dict[str, int] = field(default_factory=dict)
    last_activity: Mapping[str, float | None] = field(default_factory=dict)


def classify(
    ctx: Context,
    *,
    unique_values: dict[str, dict[int, Any]] | None = None,
    check_values: list[pd.DataFrame] | None = None,
    on_rule: Callable[[str, int, int], None] | None = None,
) -> Classification:
    """Every rule over ``ctx.state``; findings of the judged orders only. ``on_rule(kind, i,
    n)`` is told before each of the n rules runs."""
    st = ctx.state
    frames = []
    for i, kind in enumerate(KINDS):
        if on_rule is not None:
            on_rule(kind, i, len(KINDS))
        rule = RULES[kind]
        if rule is duplicate:
            rows = duplicate(ctx, unique_values)
        elif rule is mismatch:
            rows = mismatch(ctx, check_values)
        else:
            rows = rule(ctx)
        frames.append(rows.frame())
    raw = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(raw):
        o = raw["o"].to_numpy(dtype=np.int64)
        has_o = o >= 0
        keep = ~has_o
        keep[has_o] = st.judged[o[has_o]]
        orph = np.zeros(len(raw), dtype=bool)
        orph[has_o] = ctx.orphan[o[has_o]]
        keep &= ~orph | raw["kind"].isin(ORPHAN_KEEPS).to_numpy()
        raw = raw[keep]
    findings = _group(ctx, raw)
    serious = np.zeros(len(st), dtype=bool)
    if len(findings):
        s = findings[(findings["o"] >= 0) & ~findings["kind"].isin(INFORMATIONAL)]
        serious[s["o"].to_numpy(dtype=np.int64)] = True
    comp_all = st.comp_all
    terminal = np.zeros(len(st), dtype=bool)
    for h in ctx.plan.terminal:
        terminal |= ~np.isnan(comp_all[:, h])
    pending = ~np.isnan(ctx.pending_due)
    state = np.where(
        serious, "finding",
        np.where(pending, "in_flight",
                 np.where(ctx.closed, "closed", np.where(terminal, "complete", "in_flight")))
    ).astype(object)  # fmt: skip
    return Classification(findings, state, ctx.pending_due, ctx.waiting, ctx.last_activity)


def _group(ctx: Context, raw: pd.DataFrame) -> pd.DataFrame:
    """Unit rows -> findings: objects listed, since the earliest, evidence of the earliest unit.

    A promise kept late and the edge into the same hop late share an identity: the edge's
    finding is kept."""
    st = ctx.state
    if raw.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in FINDING_COLUMNS})
    o = raw["o"].to_numpy(dtype=np.int64)
    raw = raw.assign(
        order_id=[st.order_ids[i] if i >= 0 else "" for i in o],
        object=[
            x if oo < 0 and isinstance(x, str) else "" for oo, x in zip(o, raw["obj"], strict=True)
        ],
        promise=[bool(e.get("promise")) for e in raw["evidence"]],
    )
    raw = raw.sort_values(["since"], kind="stable")
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in raw.itertuples(index=False):
        key = (r.order_id, r.object, r.kind, r.hop, r.from_hop, r.field)
        cur = out.get(key)
        if cur is not None and cur["promise"] != r.promise:
            if cur["promise"] and not r.promise:  # the edge's late wins
                out[key] = _new(r)
            continue
        if cur is None:
            out[key] = _new(r)
        elif isinstance(r.obj, str) and r.obj not in cur["objects"]:
            cur["objects"].append(r.obj)
    rows = []
    for key, f in out.items():
        objects = sorted(f["objects"])
        ev = dict(f["evidence"])
        if objects and f["o"] >= 0:
            kinds = sorted({x.partition(":")[0] for x in objects})
            ev["objects_total"] = {
                k: int(st.objects_total[k][f["o"]]) for k in kinds if k in st.objects_total
            }
        rows.append(
            {
                "o": f["o"],
                "order_id": key[0],
                "object": key[1],
                "kind": key[2],
                "hop": key[3],
                "from_hop": key[4],
                "field": key[5],
                "since": int(f["since"]),
                "objects": objects,
                "evidence": ev,
            }
        )
    df = pd.DataFrame(rows, columns=FINDING_COLUMNS)
    return df.sort_values(IDENTITY, kind="stable").reset_index(drop=True)


def _new(r: Any) -> dict[str, Any]:
    return {
        "o": int(r.o),
        "since": float(r.since),
        # pandas may read None back as NaN from an object column
        "objects": [r.obj] if isinstance(r.obj, str) else [],
        "evidence": r.evidence,
        "promise": r.promise,
    }


def last_activity(ctx: Context) -> dict[str, float | None]:
    """The latest completed or failed event per hop among the state's events."""
    data = ctx.state.data
    out: dict[str, float | None] = {}
    ok = data.phase != 1
    for h, name in enumerate(ctx.plan.names):
        sel = ok & (data.hop == h)
        out[name] = float(data.t[sel].max()) if sel.any() else None
    return out


__all__ = ["COMPLETED", "IDENTITY", "INFORMATIONAL", "KINDS", "Classification", "classify"]
