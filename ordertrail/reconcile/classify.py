"""Classification in two steps. Per part of the orders: every rule that needs only that part, and
the part's overdue units and edge populations. Over every part: vanished vs stalled (the one
cross-order rule), then the unit rows grouped into findings — one per (order, kind, hop,
from_hop, field), listing the objects concerned."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ordertrail.reconcile.evidence import EdgeProgress
from ordertrail.reconcile.rules import (
    INFORMATIONAL,
    KINDS,
    ORPHAN_KEEPS,
    PART_RULES,
    Context,
    _moved,
    edge_point_orders,
    edge_points,
    overdue,
    stalled,
    vanished,
)
from ordertrail.reconcile.state import COMPLETED

FINDING_COLUMNS = [
    "last_seq", "order_id", "object", "kind", "hop", "from_hop", "field", "since", "objects",
    "evidence",
]  # fmt: skip
IDENTITY = ["order_id", "object", "kind", "hop", "from_hop", "field"]
F = npt.NDArray[np.float64]


@dataclass
class PartResult:
    """What one part of the orders gives: rule rows, overdue units, edge populations, states."""

    rows: pd.DataFrame
    overdue: pd.DataFrame
    points: dict[int, tuple[F, F]]
    order_ids: npt.NDArray[np.object_]
    judged: npt.NDArray[np.bool_]
    state: npt.NDArray[np.object_]  # per order: complete | in_flight | closed | finding
    next_due: F  # per order: earliest pending deadline (NaN: none)
    waiting: dict[str, int] = field(default_factory=dict)
    owners: dict[int, npt.NDArray[np.object_]] = field(default_factory=dict)  # points' orders


def judge_part(ctx: Context, on_rule: Callable[[str, int, int], None] | None = None) -> PartResult:
    """Every rule of one part of the orders (vanished and stalled are only prepared)."""
    st = ctx.state
    frames = []
    for i, (kind, rule) in enumerate(PART_RULES.items()):
        if on_rule is not None:
            on_rule(kind, i, len(PART_RULES))
        frames.append(rule(ctx).frame())
    raw = pd.concat(frames, ignore_index=True)
    over = overdue(ctx)
    if len(raw):
        o = raw["o"].to_numpy(dtype=np.int64)
        has_o = o >= 0
        keep = ~has_o
        keep[has_o] = st.judged[o[has_o]]
        orph = np.zeros(len(raw), dtype=bool)
        orph[has_o] = ctx.orphan[o[has_o]]
        keep &= ~orph | raw["kind"].isin(ORPHAN_KEEPS).to_numpy()
        raw = raw[keep]
    if len(over):
        ov = over["o"].to_numpy(dtype=np.int64)
        over = over[st.judged[ov]]
    serious = np.zeros(len(st), dtype=bool)
    s = raw[(raw["o"] >= 0) & ~raw["kind"].isin(INFORMATIONAL)] if len(raw) else raw
    if len(s):
        serious[s["o"].to_numpy(dtype=np.int64)] = True
    if len(over):  # an overdue unit is vanished or stalled: serious either way
        serious[over["o"].to_numpy(dtype=np.int64)] = True
    terminal = np.zeros(len(st), dtype=bool)
    for h in ctx.plan.terminal:
        terminal |= ~np.isnan(st.comp_all[:, h])
    pending = ~np.isnan(ctx.pending_due)
    state = np.where(
        serious, "finding",
        np.where(pending, "in_flight",
                 np.where(ctx.closed, "closed", np.where(terminal, "complete", "in_flight")))
    ).astype(object)  # fmt: skip
    return PartResult(raw, over, edge_points(ctx), st.order_ids, st.judged, state,
                      ctx.pending_due, dict(ctx.waiting), edge_point_orders(ctx))  # fmt: skip


def finish(
    parts: list[PartResult],
    progress: Callable[[int], EdgeProgress],
    last_activity: Mapping[str, float | None],
    *,
    release: bool = False,
) -> pd.DataFrame:
    """Vanished vs stalled over the whole window, then every part's rows as findings.
    ``release``: the parts give up their rows and overdue units as they are taken (a window's
    run holds each unit once, not also in its part)."""
    over = [p.overdue for p in parts if len(p.overdue)]
    rows = [p.rows for p in parts if len(p.rows)]
    if release:
        for p in parts:
            p.rows, p.overdue = p.rows.iloc[:0].copy(), p.overdue.iloc[:0].copy()
    if over:
        ov = pd.concat(over, ignore_index=True)
        over.clear()
        moved, later = _moved(ov, progress)
        rows.append(vanished(ov, moved, later).frame())
        rows.append(stalled(ov, moved, last_activity).frame())
        del ov
    raw = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    rows.clear()
    return group(raw)


def group(raw: pd.DataFrame) -> pd.DataFrame:
    """Unit rows -> findings: objects listed, since the earliest, evidence of the earliest unit.

    A promise kept late and the edge into the same hop late share an identity: the edge's
    finding is kept."""
    if raw.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in FINDING_COLUMNS})
    o = raw["o"].to_numpy(dtype=np.int64)
    raw = raw.assign(
        object=[
            x if oo < 0 and isinstance(x, str) else "" for oo, x in zip(o, raw["obj"], strict=True)
        ],
        promise=[bool(e.get("promise")) for e in raw["evidence"]],
    )
    raw = raw.sort_values(["since"], kind="stable")
    # most findings are one unit row: those become findings column by column; only the rows of
    # an identity that occurs more than once go through the loop below
    many = raw.duplicated(IDENTITY, keep=False).to_numpy()
    one = raw[~many]
    rows = _single(one) if len(one) else []
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in raw[many].itertuples(index=False):
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
    for key, f in out.items():
        rows.append(
            _finding(f["last_seq"], key, int(f["since"]), sorted(f["objects"]), f["evidence"])
        )
    df = pd.DataFrame(rows, columns=FINDING_COLUMNS)
    return df.sort_values(IDENTITY, kind="stable").reset_index(drop=True)


def _single(one: pd.DataFrame) -> list[dict[str, Any]]:
    """Findings of one unit row each (what the loop in :func:`group` makes of such a row)."""
    cols = [one[c].tolist() for c in ("last_seq", *IDENTITY, "since", "obj", "evidence")]
    return [
        # pandas may read None back as NaN from an object column
        _finding(int(seq), tuple(key), int(float(since)), [x] if isinstance(x, str) else [], ev)
        for seq, *key, since, x, ev in zip(*cols, strict=True)
    ]


def _finding(
    last_seq: int, key: tuple[Any, ...], since: int, objects: list[str], evidence: dict[str, Any]
) -> dict[str, Any]:
    """One finding's row: a finding of no objects has no ``objects_total`` in its evidence."""
    ev = dict(evidence)
    if not objects:
        ev.pop("objects_total", None)
    return {"last_seq": last_seq, **dict(zip(IDENTITY, key, strict=True)), "since": since,
            "objects": objects, "evidence": ev}  # fmt: skip


def _new(r: Any) -> dict[str, Any]:
    return {
        "last_seq": int(r.last_seq),
        "since": float(r.since),
        # pandas may read None back as NaN from an object column
        "objects": [r.obj] if isinstance(r.obj, str) else [],
        "evidence": r.evidence,
        "promise": r.promise,
    }


__all__ = ["COMPLETED", "IDENTITY", "INFORMATIONAL", "KINDS", "PartResult", "finish", "judge_part"]
