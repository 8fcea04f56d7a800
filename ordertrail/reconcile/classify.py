"""Classification: per-order features -> findings, order states, per-hop waiting counts.

Every rule of DESIGN.md's semantics is a vectorized expression over all orders at once, edge by
edge; Python loops run over hops, edges and checks, never over orders. Detail texts are written
only for the orders that have findings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pandas as pd

from ordertrail.reconcile.evidence import EdgeProgress
from ordertrail.reconcile.features import COMPLETED, FAILED, Features
from ordertrail.schemas.config import Config
from ordertrail.schemas.durations import format_duration

KINDS = (
    "vanished", "stalled", "confirmed_unfulfilled", "duplicate", "skipped", "orphan",
    "failed", "mismatch", "out_of_order", "late",
)  # fmt: skip
INFORMATIONAL = frozenset({"late"})
# kinds an orphan still gets: facts about its events, not expectations along the path
ORPHAN_KEEPS = frozenset({"duplicate", "mismatch", "orphan"})

B = npt.NDArray[np.bool_]
F = npt.NDArray[np.float64]
EvidenceProvider = Callable[[str, str], EdgeProgress]


def ts(us: float) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def dur(us: float) -> str:
    return format_duration(int(us))


@dataclass
class Classification:
    findings: pd.DataFrame  # order_id, kind, hop, from_hop, since (int µs), detail
    state: npt.NDArray[np.object_]  # per order: complete | in_flight | closed | finding
    next_due: F  # per order: earliest pending deadline (NaN if none)
    waiting: dict[str, int] = field(default_factory=dict)  # hop -> orders waiting on watermark
    last_activity: Mapping[str, float | None] = field(default_factory=dict)  # hop -> last event


class _Collector:
    def __init__(self) -> None:
        self.parts: list[pd.DataFrame] = []

    def add(
        self,
        idx: npt.NDArray[np.intp],
        kind: str,
        hop: str,
        from_hop: str,
        since: F,
        details: list[str],
    ) -> None:
        if len(idx) == 0:
            return
        self.parts.append(
            pd.DataFrame(
                {"i": idx, "kind": kind, "hop": hop, "from_hop": from_hop,
                 "since": since.astype(np.int64), "detail": details}
            )
        )  # fmt: skip

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            obj = {c: pd.Series(dtype=object) for c in ("kind", "hop", "from_hop", "detail")}
            return pd.DataFrame(
                {"i": pd.Series(dtype=np.int64), **obj, "since": pd.Series(dtype=np.int64)}
            )
        return pd.concat(self.parts, ignore_index=True)


def _nanmin(arrs: list[F], n: int) -> F:
    if not arrs:
        return np.full(n, np.nan)
    with np.errstate(all="ignore"):
        stacked = np.vstack(arrs)
        out = np.where(
            np.all(np.isnan(stacked), axis=0),
            np.nan,
            np.nanmin(np.where(np.isnan(stacked), np.inf, stacked), axis=0),
        )
    return out


def classify(
    f: Features,
    config: Config,
    as_of: int,
    judge: dict[str, float],
    evidence: EvidenceProvider | None = None,
    last_activity: Mapping[str, float | None] | None = None,
    window_start: int | None = None,
) -> Classification:
    """Classify every order of ``f``. ``judge[h]`` = min(as_of, watermark of h's sources).

    ``evidence`` and ``last_activity`` (latest completed/failed event per hop) describe the
    whole window; when omitted they are taken from ``f``, which must then hold every order.
    """
    n = len(f)
    names = config.hop_names
    hx = {h: i for i, h in enumerate(names)}
    skew = config.pipeline.clock_skew
    asof = float(as_of)
    comp = f.first[:, :, COMPLETED]  # first completed
    fail_first = f.first[:, :, FAILED]
    fail_last = f.last[:, :, FAILED]
    comp_last = f.last[:, :, COMPLETED]
    with np.errstate(all="ignore"):
        reach = np.fmin(comp, fail_first)  # completed or failed: reached, for the edge into it
        any_first = np.nanmin(np.where(np.isnan(f.first), np.inf, f.first), axis=2)
    any_first[np.isinf(any_first)] = np.nan
    first_at = _nanmin([any_first[:, i] for i in range(len(names))], n)

    closed_at = _nanmin([comp[:, hx[h]] for h in config.closing_hops], n)
    is_closed = ~np.isnan(closed_at)
    entry_idx = [hx[h] for h in config.entry_hops]
    entered = np.zeros(n, dtype=bool)
    for ei in entry_idx:
        entered |= ~np.isnan(any_first[:, ei])
    orphan = ~entered
    desc = {h: config.descendants(h) for h in names}
    desc_reach = {h: _nanmin([reach[:, hx[d]] for d in desc[h]], n) for h in names}
    desc_comp = {h: _nanmin([comp[:, hx[d]] for d in desc[h]], n) for h in names}

    out = _Collector()
    pending = np.zeros(n, dtype=bool)
    next_due = np.full(n, np.nan)
    waiting: dict[str, int] = {}
    if last_activity is None:
        last_activity = {}
        for h in names:
            col = np.fmax(f.last[:, hx[h], COMPLETED], f.last[:, hx[h], FAILED])
            last_activity[h] = (
                float(np.nanmax(col)) if n and not np.all(np.isnan(col)) else float("nan")
            )

    def note_pending(mask: B, due: F) -> None:
        nonlocal next_due
        pending[mask] = True
        next_due = np.where(mask, np.fmin(next_due, due), next_due)

    # -- edges: vanished, stalled, late, out_of_order ------------------------------------
    for a, b, w in config.edges:
        ta = comp[:, hx[a]]
        rb = reach[:, hx[b]]
        has_a = ~np.isnan(ta) & ~orphan
        deadline = ta + w
        jb = judge.get(b, asof)
        has_b = has_a & ~np.isnan(rb)
        with np.errstate(invalid="ignore"):
            ooo = has_b & (rb < ta - skew)
            late = has_b & (rb > deadline)
        ix = np.flatnonzero(ooo)
        out.add(ix, "out_of_order", b, a, rb[ix], [
            f"{b} at {ts(rb[k])} is {dur(ta[k] - rb[k])} before {a} at {ts(ta[k])} "
            f"(clock skew allowed: {dur(skew)})" for k in ix
        ])  # fmt: skip
        ix = np.flatnonzero(late)
        out.add(ix, "late", b, a, rb[ix], [
            f"{b} reached {ts(rb[k])}, {dur(rb[k] - deadline[k])} after its deadline "
            f"{ts(deadline[k])} ({a} at {ts(ta[k])} + {dur(w)})" for k in ix
        ])  # fmt: skip
        missing = has_a & np.isnan(rb) & np.isnan(desc_reach[b]) & ~is_closed
        with np.errstate(invalid="ignore"):
            overdue = missing & (deadline < jb)
            waits = missing & ~overdue & (deadline < asof)
        note_pending(missing & ~overdue, deadline)
        if waits.any():
            waiting[b] = waiting.get(b, 0) + int(waits.sum())
        oi = np.flatnonzero(overdue)
        if len(oi) == 0:
            continue
        prog = evidence(a, b) if evidence else EdgeProgress(ta, rb)
        moved = prog.moved_on(ta[oi], deadline[oi])
        van = oi[moved]
        sta = oi[~moved]
        if len(van):
            cnt = prog.count_later(ta[van], deadline[van])
            out.add(van, "vanished", b, a, deadline[van], [
                f"{a} at {ts(ta[k])}; {b} was due by {ts(deadline[k])}, {dur(asof - deadline[k])} "
                f"overdue; {c:,} later orders reached {b} since: lost between {a} and {b}"
                for k, c in zip(van, cnt, strict=True)
            ])  # fmt: skip
        if len(sta):
            last_b = last_activity.get(b)  # None: not known here
            if last_b is None:
                seen = ""
            elif np.isnan(last_b):
                seen = f" (no {b} event at all)"
            else:
                seen = f" (last {b} event {ts(last_b)})"
            out.add(sta, "stalled", b, a, deadline[sta], [
                f"{a} at {ts(ta[k])}; {b} was due by {ts(deadline[k])}, {dur(asof - deadline[k])} "
                f"overdue; {b} has passed no later order since{seen}" for k in sta
            ])  # fmt: skip

    # -- promises: confirmed_unfulfilled -------------------------------------------------
    for hp in config.hops:
        if not hp.promises or hp.promise_within is None:
            continue
        tp = comp[:, hx[hp.name]]
        for q in hp.promises:
            kept = ~np.isnan(comp[:, hx[q]]) | ~np.isnan(desc_comp[q])
            missing = ~np.isnan(tp) & ~kept & ~is_closed & ~orphan
            deadline = tp + hp.promise_within
            with np.errstate(invalid="ignore"):
                overdue = missing & (deadline < judge.get(q, asof))
                waits = missing & ~overdue & (deadline < asof)
            note_pending(missing & ~overdue, deadline)
            if waits.any():
                waiting[q] = waiting.get(q, 0) + int(waits.sum())
            ix = np.flatnonzero(overdue)
            out.add(ix, "confirmed_unfulfilled", q, hp.name, deadline[ix], [
                f"{hp.name} at {ts(tp[k])} told the customer; {q} was due by {ts(deadline[k])} "
                f"and is {dur(asof - deadline[k])} overdue" for k in ix
            ])  # fmt: skip

    # -- duplicates ----------------------------------------------------------------------
    for hp in config.hops:
        if not hp.unique:
            continue
        c = f.count[:, hx[hp.name], COMPLETED]
        ix = np.flatnonzero(c >= 2)
        sec = f.second_completed[:, hx[hp.name]]
        out.add(ix, "duplicate", hp.name, "", sec[ix], [
            f"{c[k]} distinct completed {hp.name} events (first {ts(comp[k, hx[hp.name]])}, "
            f"second {ts(sec[k])})" for k in ix
        ])  # fmt: skip

    # -- skipped -------------------------------------------------------------------------
    entry = set(config.entry_hops)
    for g in names:
        if g in entry or config.hop(g).closes or not desc[g]:
            continue
        later = desc_reach[g]
        miss = np.isnan(reach[:, hx[g]]) & ~np.isnan(later) & ~orphan
        with np.errstate(invalid="ignore"):
            judged = miss & (later < judge.get(g, asof))
        note_pending(miss & ~judged, later)
        ix = np.flatnonzero(judged)
        if len(ix):
            # name the first later hop reached
            dnames = sorted(desc[g], key=names.index)
            dcols = np.vstack([reach[:, hx[d]] for d in dnames]).T
            out.add(ix, "skipped", g, "", later[ix], [
                f"{dnames[int(np.nanargmin(dcols[k]))]} reached at {ts(later[k])} without {g}"
                for k in ix
            ])  # fmt: skip

    # -- orphans -------------------------------------------------------------------------
    if entry_idx:
        j_entry = min(judge.get(h, asof) for h in config.entry_hops)
        with np.errstate(invalid="ignore"):
            orph = orphan & (first_at < j_entry)
            if window_start is not None:
                # an order whose start fell out of the window just before it is not an orphan:
                # within the longest path's time of the window start, say nothing about it
                orph &= first_at > window_start + config.longest_path
        note_pending(orphan & ~orph & (first_at >= j_entry), first_at)
        ix = np.flatnonzero(orph)
        first_hop = (
            np.nanargmin(np.where(np.isnan(any_first), np.inf, any_first), axis=1)
            if n
            else np.array([], dtype=np.intp)
        )
        ent = " or ".join(config.entry_hops)
        out.add(ix, "orphan", config.entry_hops[0], "", first_at[ix], [
            f"first seen at {names[int(first_hop[k])]} {ts(first_at[k])}; no {ent} event within "
            f"the lookback" for k in ix
        ])  # fmt: skip

    # -- failed --------------------------------------------------------------------------
    closing = " or ".join(config.closing_hops) or "closing hop"
    for hp in config.hops:
        b = hp.name
        incoming = [w for a, bb, w in config.edges if bb == b]
        outgoing = [w for a, bb, w in config.edges if a == b]
        window = max(incoming) if incoming else (min(outgoing) if outgoing else 0)
        fl = fail_last[:, hx[b]]
        cl = comp_last[:, hx[b]]
        with np.errstate(invalid="ignore"):
            failing = ~np.isnan(fl) & (np.isnan(cl) | (cl < fl)) & ~orphan
            deadline = fl + window
            closed_in_time = is_closed & (closed_at <= deadline)
            live = failing & ~closed_in_time
            judged = live & (deadline < judge.get(b, asof))
        note_pending(live & ~judged, deadline)
        ix = np.flatnonzero(judged)
        out.add(ix, "failed", b, "", fl[ix], [
            f"{b} failed at {ts(fl[k])}; no later success and no {closing} within {dur(window)}"
            for k in ix
        ])  # fmt: skip

    # -- checks: mismatch ----------------------------------------------------------------
    for j, chk in enumerate(config.checks):
        vals = f.check_values[j]
        times = f.check_times[j]
        if n == 0:
            continue
        num = np.column_stack(
            [
                pd.to_numeric(pd.Series(vals[:, p]), errors="coerce").to_numpy(dtype=float)
                for p in range(len(chk.hops))
            ]
        )
        has = np.column_stack([pd.notna(vals[:, p]) for p in range(len(chk.hops))])
        base = np.argmax(has, axis=1)  # first hop of the check with a value
        rows = np.arange(n)
        base_num = num[rows, base]
        base_str = vals[rows, base]
        for p, hname in enumerate(chk.hops):
            other = has[:, p] & (base < p) & has[rows, base]
            both_num = ~np.isnan(num[:, p]) & ~np.isnan(base_num)
            with np.errstate(invalid="ignore"):
                diff_num = both_num & (np.abs(num[:, p] - base_num) > chk.tolerance + 1e-9)
            diff_str = ~both_num & (vals[:, p].astype(str) != base_str.astype(str))
            mm = other & (diff_num | diff_str)
            ix = np.flatnonzero(mm)
            out.add(ix, "mismatch", hname, "", times[ix, p], [
                f"{chk.field} {base_str[k]!s} at {chk.hops[base[k]]}, {vals[k, p]!s} at {hname} "
                f"(tolerance {chk.tolerance:g})" for k in ix
            ])  # fmt: skip
            if len(ix):
                # from_hop is the hop the value was compared with
                out.parts[-1]["from_hop"] = [chk.hops[base[k]] for k in ix]

    fr = out.frame()
    if len(fr):
        is_orph = orphan[fr["i"].to_numpy()]
        fr = fr[~is_orph | fr["kind"].isin(ORPHAN_KEEPS)]
    fr = fr.assign(
        order_id=pd.Series(
            f.order_ids[fr["i"].to_numpy(dtype=np.intp)], dtype=object, index=fr.index
        )
    )
    serious = np.zeros(n, dtype=bool)
    if len(fr):
        serious[fr.loc[~fr["kind"].isin(INFORMATIONAL), "i"].to_numpy()] = True
    terminal = np.zeros(n, dtype=bool)
    for h in config.terminal_hops:
        terminal |= ~np.isnan(comp[:, hx[h]])
    state = np.where(
        serious, "finding",
        np.where(pending, "in_flight",
                 np.where(is_closed, "closed", np.where(terminal, "complete", "in_flight")))
    ).astype(object)  # fmt: skip
    fr = fr.sort_values(["order_id", "kind", "hop", "from_hop"], kind="stable").reset_index(
        drop=True
    )
    return Classification(
        findings=fr[["i", "order_id", "kind", "hop", "from_hop", "since", "detail"]],
        state=state,
        next_due=next_due,
        waiting=waiting,
        last_activity=last_activity,
    )
