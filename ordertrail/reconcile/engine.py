"""The reconciliation run: load the window in hash-partitioned chunks (spread over processes),
reduce each to per-order features, classify all orders at once, record the run."""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select, text

from ordertrail.errors import ConfigError
from ordertrail.reconcile import runs
from ordertrail.reconcile.classify import INFORMATIONAL, KINDS, Classification, classify, dur, ts
from ordertrail.reconcile.evidence import EdgeProgress
from ordertrail.reconcile.features import Features, compute_features
from ordertrail.reconcile.load import (
    Part,
    bucket_filter,
    edge_points,
    fill_orders_table,
    in_part,
    load_events,
)
from ordertrail.schemas.config import Config
from ordertrail.schemas.event import us_to_iso
from ordertrail.store import Store, tables
from ordertrail.store.writer import order_bucket

logger = logging.getLogger(__name__)

EVENTS_PER_CHUNK = 1_500_000
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class RunResult:
    """What ``reconcile`` returns: the JSON shape of DESIGN.md, plus helpers."""

    run: dict[str, Any]
    summary: dict[str, int]
    findings: list[dict[str, Any]]
    incidents: list[dict[str, Any]]
    by_hop: dict[str, dict[str, int]] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "summary": self.summary,
            "findings": self.findings,
            "incidents": self.incidents,
        }

    def active(self) -> list[dict[str, Any]]:
        return [f for f in self.findings if f["status"] != "resolved"]


def _chunk_features(
    url: str, config: Config, lo: int, hi: int, shard: Part | None, chunk: Part | None, scan: bool
) -> tuple[Features, int]:
    """Worker: one chunk of orders -> features (runs in a child process for big windows)."""
    store = Store(url, create=False)
    try:
        with store.engine.connect() as conn:
            df = load_events(conn, config, lo, hi, shard=shard, chunk=chunk, scan=scan)
    finally:
        store.close()
    return compute_features(df, config), len(df)


def judge_times(config: Config, as_of: int, watermarks: dict[str, int | None]) -> dict[str, float]:
    """Per hop: min(as_of, watermark of every source that feeds it)."""
    out: dict[str, float] = {}
    for h in config.hop_names:
        j = float(as_of)
        for s in config.sources_feeding(h):
            wm = watermarks.get(s)
            j = min(j, float("-inf") if wm is None else float(wm))
        out[h] = j
    return out


def parse_shard(text_: str | None) -> Part | None:
    if not text_:
        return None
    try:
        i, n = (int(x) for x in text_.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like I/N (e.g. 0/4), not {text_!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {text_}: need 0 <= I < N")
    return (i, n)


def reconcile(
    store: Store,
    config: Config,
    *,
    as_of: int | None = None,
    incremental: bool = False,
    workers: int | None = None,
    shard: Part | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Reconcile the orders in the lookback window ending at ``as_of`` (µs; default now)."""
    t_start = time.perf_counter()
    as_of = as_of if as_of is not None else time.time_ns() // 1000
    hi = as_of
    lo = as_of - config.pipeline.lookback
    shard_label = f"{shard[0]}/{shard[1]}" if shard else ""
    watermarks = store.watermarks()
    judge = judge_times(config, as_of, watermarks)
    engine = store.engine
    max_seq = store.max_ingest_seq()
    with engine.connect() as conn:
        prev = runs.last_run(conn, shard_label)
    mode = "full"
    affected: list[str] | None = None
    if incremental:
        if prev and prev["config_hash"] == config.fingerprint and prev["as_of"] <= as_of:
            mode = "incremental"
            affected = _affected_orders(store, prev, lo, hi, shard)
        else:
            logger.info("no comparable earlier run: running in full")

    if affected is None:
        feats, n_events = _load_features(store, config, lo, hi, shard, workers, progress, max_seq)
    else:
        with engine.connect() as conn:
            df = load_events(conn, config, lo, hi, orders=affected)
        feats, n_events = compute_features(df, config), len(df)

    full_view = affected is None and shard is None
    if full_view:
        evidence = None
        last_activity = None  # classify takes both from the features, which hold every order
    else:
        cache: dict[tuple[str, str], EdgeProgress] = {}

        def evidence(a: str, b: str) -> EdgeProgress:
            if (a, b) not in cache:
                with engine.connect() as conn:
                    cache[(a, b)] = EdgeProgress(*edge_points(conn, a, b, lo, hi))
            return cache[(a, b)]

        last_activity = _last_activity_sql(store, config, lo, hi)
    if progress:
        progress("classify", 0, 1)
    cls = classify(feats, config, as_of, judge, evidence, last_activity, window_start=lo)
    if progress:
        progress("classify", 1, 1)
    details = _with_last_events(store, cls.findings, lo, hi)

    def in_scope(df: pd.DataFrame) -> np.ndarray:
        if affected is not None:
            aff = set(affected)
            return df["order_id"].isin(aff).to_numpy()
        if shard is not None:
            return np.array([in_part(order_bucket(o), shard) for o in df["order_id"]], dtype=bool)
        return np.ones(len(df), dtype=bool)

    pending = [
        (o, None if np.isnan(d) else int(d))
        for o, s, d in zip(feats.order_ids, cls.state, cls.next_due, strict=True)
        if s == "in_flight"
    ]
    with engine.begin() as conn:
        run_id = runs.start_run(conn, as_of, mode, shard_label, config.fingerprint, max_seq)
        runs.update_findings(conn, run_id, details, in_scope)
        runs.replace_pending(
            conn, run_id, bucket_filter(shard, None, col="order_bucket") or None, affected, pending
        )
        out = runs.read_findings(conn, run_id, in_scope if shard is not None else None)
        incidents = _incidents(config, out, cls, watermarks, as_of)
        runs.write_incidents(conn, run_id, incidents)
        active = out[out["status"] != "resolved"]
        summary = {k: int(v) for k, v in active["kind"].value_counts().items()}
        summary = {k: summary[k] for k in KINDS if k in summary}
        runs.finish_run(conn, run_id, len(feats), n_events, summary)
    states = pd.Series(cls.state).value_counts().to_dict() if len(cls.state) else {}
    by_hop: dict[str, dict[str, int]] = {}
    for (h, k), v in active.groupby(["hop", "kind"]).size().items():
        by_hop.setdefault(str(h), {})[str(k)] = int(v)
    run = {
        "id": run_id,
        "as_of": us_to_iso(as_of),
        "window_start": us_to_iso(lo),
        "mode": mode,
        "shard": shard_label or None,
        "orders": len(feats),
        "events": n_events,
        "findings": len(active),
        "resolved": int((out["status"] == "resolved").sum()),
        "seconds": round(time.perf_counter() - t_start, 3),
        "pipeline": config.pipeline.name,
    }
    findings = [
        {"order_id": r.order_id, "kind": r.kind, "hop": r.hop, "from_hop": r.from_hop or None,
         "since": us_to_iso(int(r.since)), "detail": r.detail, "status": r.status}
        for r in out.itertuples(index=False)
    ]  # fmt: skip
    return RunResult(
        run, summary, findings, incidents, by_hop, {str(k): int(v) for k, v in states.items()}
    )


def _load_features(
    store: Store, config: Config, lo: int, hi: int, shard: Part | None, workers: int | None,
    progress: Progress | None, stored: int,
) -> tuple[Features, int]:  # fmt: skip
    with store.engine.connect() as conn:
        q = (
            select(func.count())
            .select_from(tables.events)
            .where(tables.events.c.occurred_at > lo, tables.events.c.occurred_at <= hi)
        )
        total = int(conn.execute(q).scalar_one())
    scan = total * 3 > stored  # the window holds most events: scan rather than use the index
    if shard:
        total = total // shard[1] + 1
    chunks = max(1, math.ceil(total / EVENTS_PER_CHUNK))
    if workers is None:
        workers = min(os.cpu_count() or 1, 4) if total >= 500_000 else 1
    in_memory = store.dialect == "sqlite" and (
        ":memory:" in store.url or store.url.endswith("sqlite://")
    )
    if in_memory:
        workers = 1
    chunks = max(chunks, workers if workers > 1 else 1)
    parts: list[Features] = []
    n_events = 0
    if progress:
        progress("load", 0, chunks)
    if workers <= 1 or chunks == 1:
        for c in range(chunks):
            with store.engine.connect() as conn:
                df = load_events(conn, config, lo, hi, shard=shard, chunk=(c, chunks), scan=scan)
            parts.append(compute_features(df, config))
            n_events += len(df)
            del df
            if progress:
                progress("load", c + 1, chunks)
    else:
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
            futs = [
                ex.submit(_chunk_features, store.url, config, lo, hi, shard, (c, chunks), scan)
                for c in range(chunks)
            ]
            for k, fut in enumerate(futs):
                f, n = fut.result()
                parts.append(f)
                n_events += n
                if progress:
                    progress("load", k + 1, chunks)
    return Features.concat(parts, config), n_events


def _last_activity_sql(store: Store, config: Config, lo: int, hi: int) -> dict[str, float]:
    sql = text(
        "SELECT hop, MAX(occurred_at) FROM events WHERE occurred_at > :lo AND occurred_at <= :hi "
        "AND phase IN ('completed', 'failed') GROUP BY hop"
    )
    with store.engine.connect() as conn:
        got = {r[0]: float(r[1]) for r in conn.execute(sql, {"lo": lo, "hi": hi})}
    return {h: got.get(h, float("nan")) for h in config.hop_names}


def _affected_orders(
    store: Store, prev: dict[str, Any], lo: int, hi: int, shard: Part | None
) -> list[str]:
    """Orders whose result can differ from the previous run's."""
    prev_hi = prev["as_of"]
    prev_lo = prev_hi - (hi - lo)
    cond = bucket_filter(shard, None, col="order_bucket")
    extra = f" AND {cond}" if cond else ""
    sql = text(
        f"SELECT order_id FROM events WHERE ingest_seq > :seq{extra} "
        f"UNION SELECT order_id FROM events WHERE occurred_at > :plo AND occurred_at <= :lo{extra} "
        f"UNION SELECT order_id FROM events WHERE occurred_at > :phi AND occurred_at <= :hi{extra}"
    )
    with store.engine.connect() as conn:
        got = {
            r[0]
            for r in conn.execute(
                sql,
                {"seq": prev["max_ingest_seq"], "plo": prev_lo, "lo": lo, "phi": prev_hi, "hi": hi},
            )
        }
        got.update(runs.pending_order_ids(conn))
        got.update(runs.active_finding_orders(conn))
    if shard is not None:
        got = {o for o in got if in_part(order_bucket(o), shard)}
    return sorted(got)


def _with_last_events(store: Store, findings: pd.DataFrame, lo: int, hi: int) -> pd.DataFrame:
    """Append each finding's evidence: the order's last event with its source and place."""
    if findings.empty:
        return findings
    ids = findings["order_id"].unique().tolist()
    with store.engine.begin() as conn:
        fill_orders_table(conn, ids)
        rows = conn.execute(
            text(
                "SELECT e.order_id, e.hop, e.phase, e.occurred_at, e.source, e.source_ref, e.ingest_seq "
                "FROM _ot_orders o JOIN events e ON e.order_id = o.order_id "
                + (
                    "WHERE +e.occurred_at > :lo AND +e.occurred_at <= :hi"
                    if store.dialect == "sqlite"
                    else "WHERE e.occurred_at > :lo AND e.occurred_at <= :hi"
                )
            ),
            {"lo": lo, "hi": hi},
        ).fetchall()
        conn.execute(text("DELETE FROM _ot_orders"))
    ev = pd.DataFrame(rows, columns=["order_id", "hop", "phase", "t", "source", "ref", "seq"])
    ev = ev.sort_values(["order_id", "t", "seq"], kind="stable").drop_duplicates(
        "order_id", keep="last"
    )
    ev["last"] = [
        f"last event: {h} {p} {ts(t_)} ({s} {r})"
        for h, p, t_, s, r in zip(
            ev["hop"], ev["phase"], ev["t"], ev["source"], ev["ref"], strict=True
        )
    ]
    out = findings.merge(ev[["order_id", "last"]], on="order_id", how="left")
    out["detail"] = out["detail"] + "; " + out["last"].fillna("no event in the window")
    return out.drop(columns=["last"])


def _incidents(
    config: Config, findings: pd.DataFrame, cls: Classification, watermarks: dict[str, int | None],
    as_of: int,
) -> list[dict[str, Any]]:  # fmt: skip
    out: list[dict[str, Any]] = []
    active = findings[findings["status"] != "resolved"]
    stalled = active[active["kind"] == "stalled"]
    for hop, grp in stalled.groupby("hop", sort=True):
        oldest = int(grp["since"].min())
        last = cls.last_activity.get(str(hop))
        last = float("nan") if last is None else last
        since = int(last) if not np.isnan(last) and last < oldest else oldest
        seen = (
            f"last {hop} event {ts(last)}"
            if not np.isnan(last)
            else f"no {hop} event in the window"
        )
        froms = ", ".join(sorted(set(grp["from_hop"])))
        out.append({
            "kind": "hop_silent", "hop": str(hop), "since": us_to_iso(since), "orders": len(grp),
            "detail": f"{len(grp):,} orders overdue from {froms} wait for {hop}; {seen}; "
                      f"oldest due {ts(oldest)}, {dur(as_of - oldest)} ago",
        })  # fmt: skip
    skew = config.pipeline.clock_skew
    for s in config.sources:
        wm = watermarks.get(s.name)
        if wm is not None and wm >= as_of - skew:
            continue
        hops = [s.hop] if s.hop else list(config.hop_names)
        n = sum(cls.waiting.get(h, 0) for h in hops)
        if n == 0 and wm is not None:
            continue
        behind = (
            "never read to its end"
            if wm is None
            else f"complete up to {ts(wm)}, {dur(as_of - wm)} behind"
        )
        out.append({
            "kind": "source_lagging", "hop": s.hop or "*", "since": us_to_iso(wm) if wm is not None else None,
            "orders": int(n),
            "detail": f"source {s.name} is {behind}; {n:,} orders wait for it before they can be judged",
        })  # fmt: skip
    return out


def fail_matches(result: RunResult, kinds: set[str]) -> bool:
    """True when an active finding or incident is of one of ``kinds`` (for --fail-on)."""
    if "any" in kinds:
        return bool(result.active()) or bool(result.incidents)
    if any(f["kind"] in kinds for f in result.active()):
        return True
    return any(i["kind"] in kinds for i in result.incidents)


__all__ = ["INFORMATIONAL", "KINDS", "RunResult", "fail_matches", "parse_shard", "reconcile"]
