"""The reconciliation run: load the window, build the per-order state (orders resolved through
objects and links), run the rules, record the run, its findings and incidents."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ordertrail.errors import ConfigError
from ordertrail.reconcile import incremental as inc
from ordertrail.reconcile import runs
from ordertrail.reconcile.backend import SqlBackend, load_delta
from ordertrail.reconcile.classify import PartResult, finish, judge_part
from ordertrail.reconcile.columnar import WindowDB
from ordertrail.reconcile.evidence import EdgeProgress
from ordertrail.reconcile.plan import Plan, compile_plan
from ordertrail.reconcile.render import render_detail, when
from ordertrail.reconcile.rules import KINDS, Context, iso
from ordertrail.schemas.config import Config
from ordertrail.schemas.durations import format_duration
from ordertrail.schemas.event import us_to_iso
from ordertrail.store import Store
from ordertrail.store import window as w
from ordertrail.store.writer import order_bucket

logger = logging.getLogger(__name__)

Part = tuple[int, int]  # (i, n): the i-th of n parts
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
        return [f for f in self.findings if f["status"] in runs.ACTIVE]


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


def in_part(bucket: int, shard: Part | None) -> bool:
    return shard is None or shard[1] <= 1 or bucket % shard[1] == shard[0]


@dataclass
class Evaluation:
    """The one engine's answer for a window (or chosen orders): findings, and per part the
    orders with their states; ``contexts`` only when asked for (trace, report)."""

    findings: pd.DataFrame
    parts: list[PartResult]
    contexts: list[Context]
    last_activity: Mapping[str, float | None]

    @property
    def waiting(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.parts:
            for k, v in p.waiting.items():
                out[k] = out.get(k, 0) + v
        return out


def db_population(db: WindowDB) -> Callable[[int], EdgeProgress]:
    """Each requirement's population over every part, from the window's DuckDB."""
    cache: dict[int, EdgeProgress] = {}

    def get(req: int) -> EdgeProgress:
        if req not in cache:
            cache.clear()  # one edge's points at a time
            cache[req] = EdgeProgress(*db.points(req))
        return cache[req]

    return get


def judge_parts(
    plan: Plan,
    db: WindowDB,
    as_of: int,
    judge: dict[str, float],
    *,
    window_start: int | None,
    chosen: list[str] | None = None,
    event_keys: Callable[[Any], tuple[list[str], list[str]]] | None = None,
    started_before: Callable[[list[str]], set[str]] | None = None,
    last: Mapping[str, float | None] | None = None,
    on_part: Callable[[int, int], None] | None = None,
    unlinked: bool = True,
) -> Iterator[tuple[PartResult, Context]]:
    """Every rule but vanished and stalled over the window staged in ``db``, one hash part of
    the orders at a time. ``unlinked`` False: the objects of no order are judged elsewhere (a
    Spark task holds only its orders' objects, so it cannot tell which belong to none)."""
    judge_ix = {plan.hx[h]: v for h, v in judge.items() if h in plan.hx}
    last = last if last is not None else db.last_activity()
    for p in range(db.n_parts):
        if on_part is not None:
            on_part(p, db.n_parts)
        st, facts = db.part_state(p, chosen)
        if not unlinked:
            facts.unlinked = facts.unlinked.iloc[:0]
        ctx = Context(
            st, as_of, judge_ix, window_start=window_start, facts=facts,
            event_keys=event_keys, started_before=started_before,
        )  # fmt: skip
        ctx.last_activity = last
        yield judge_part(ctx), ctx


def evaluate(
    plan: Plan,
    db: WindowDB,
    as_of: int,
    judge: dict[str, float],
    *,
    window_start: int | None,
    chosen: list[str] | None = None,
    backend: SqlBackend | None = None,
    progress: Callable[[int], Any] | None = None,
    last: Mapping[str, float | None] | None = None,
    on_part: Callable[[int, int], None] | None = None,
    keep_contexts: bool = False,
    tally: Callable[[PartResult], None] | None = None,
    after_parts: Callable[[], None] | None = None,
) -> Evaluation:
    """Every rule over the window staged in ``db``, one hash part of the orders at a time; then
    vanished vs stalled over every part (from ``progress`` when given: a probe for chosen
    orders). The one engine, for a window or chosen orders. ``tally``: takes each part's
    orders (ids, states, next due) as the part ends, and the evaluation keeps none of them
    (nor the parts' rows once they are findings) — a window's run then holds no per-order
    array of every order. ``after_parts``: called when every part is judged, before vanished
    vs stalled (which reads only the edge populations)."""
    last = last if last is not None else db.last_activity()
    parts: list[PartResult] = []
    contexts: list[Context] = []
    for part, ctx in judge_parts(
        plan, db, as_of, judge, window_start=window_start, chosen=chosen,
        event_keys=backend.event_keys if backend else None,
        started_before=(
            (lambda ids: backend.started_before(ids, window_start))
            if backend is not None and window_start is not None
            else None
        ),
        last=last, on_part=on_part,
    ):  # fmt: skip
        if progress is None:  # the populations wait in DuckDB, not here
            db.add_points(part.points, part.owners)
            part.points, part.owners = {}, {}
        if tally is not None:
            tally(part)
            # copies: an empty slice is a view that would keep the whole array
            part.order_ids, part.state = part.order_ids[:0].copy(), part.state[:0].copy()
            part.judged, part.next_due = part.judged[:0].copy(), part.next_due[:0].copy()
        parts.append(part)
        if keep_contexts:
            contexts.append(ctx)
    if after_parts is not None:
        after_parts()
    # with a tally nobody reads the parts' rows and overdue units after they become findings
    findings = finish(parts, progress or db_population(db), last, release=tally is not None)
    return Evaluation(findings, parts, contexts, last)


def finish_findings(findings: pd.DataFrame, backend: SqlBackend | None) -> pd.DataFrame:
    """Evidence of the order's last event, then the detail rendered from the evidence."""
    if findings.empty:
        return findings.assign(detail=pd.Series(dtype=object))
    last = findings["last_seq"].to_numpy(dtype=np.int64)
    seqs = sorted({int(x) for x in last if x >= 0})
    details = backend.event_details(seqs) if backend and seqs else {}
    evs = []
    for i, ev in zip(last, findings["evidence"], strict=True):
        ev = dict(ev)
        d = details.get(int(i)) if i >= 0 else None
        if d:
            ev["last_event"] = {**d, "at": us_to_iso(d["at"])}
        evs.append(ev)
    findings = findings.assign(evidence=evs)
    cols = [findings[c].tolist() for c in ("kind", "hop", "from_hop", "field", "objects")]
    findings["detail"] = [
        render_detail(k, h, fh or None, fl or None, ob, e)
        for k, h, fh, fl, ob, e in zip(*cols, evs, strict=True)
    ]
    return findings


@dataclass
class Judged:
    """What either path of a run (full or incremental) hands to the recording of the run."""

    findings: pd.DataFrame  # this run's findings, evidence finished and details rendered
    n_orders: int  # orders judged (in the shard)
    state_counts: dict[str, int]
    pending: list[tuple[str, int | None]]  # in-flight orders to store, with their next due
    pending_scope: list[str] | None  # incremental: the orders whose in-flight rows are replaced
    present: Callable[[Sequence[str]], set[str]]  # which of these orders are in the window
    present_objects: set[str]
    unlinked: int
    n_events: int
    last_activity: dict[str, float | None]
    waiting: dict[str, int]
    judged_again: int | None = None  # incremental: orders judged again


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
    """Reconcile the orders in the lookback window ending at ``as_of`` (µs; default now).

    ``incremental``: bring the last run's cache (see ``incremental.py``) forward and judge only
    the orders affected since — the result is the full run's; without a usable cache the run is
    full and leaves one (a cache that exists is kept up to date by full runs too). Only the
    orders of ``shard`` are reported when it is given (a sharded run is always full and leaves
    the cache alone). ``workers`` is accepted for compatibility.
    """
    t_start = time.perf_counter()
    started_at = time.time_ns() // 1000  # the runs table records the whole run's span
    as_of = as_of if as_of is not None else time.time_ns() // 1000
    hi = as_of
    lo = as_of - config.pipeline.lookback
    shard_label = f"{shard[0]}/{shard[1]}" if shard else ""
    plan = compile_plan(config)
    watermarks = store.watermarks()
    judge = judge_times(config, as_of, watermarks)
    backend = SqlBackend(store)
    max_seq, settled = store.settled_max_ingest_seq()
    with store.engine.connect() as conn:
        prev = runs.last_run(conn, shard_label)
        latest = runs.last_run(conn, None)
    mode = "full"
    if incremental:
        if prev and prev["config_hash"] == config.fingerprint and prev["as_of"] <= as_of:
            mode = "incremental"
        else:
            logger.info("no comparable earlier run: running in full")
    path = inc.cache_path(store) if shard is None else None
    cache = inc.Cache(path) if path is not None and (incremental or path.exists()) else None
    held = cache.acquire() if cache is not None else False
    if held and cache is not None and not settled:
        # a batch still open may publish events below max_seq: a cache of this run could miss
        # them for good, so this run neither uses nor leaves one (the next full run does)
        logger.warning("ingest batches still open after 30s: this run keeps no incremental cache")
        cache.release()
        held = False

    # stages, in percent of the run: load 0-35, state 35-50, rules 50-90, evidence and write 90-100
    def stage(name: str, pct: float) -> None:
        if progress:
            progress(name, int(pct), 100)

    db: WindowDB | None = None
    try:
        opened = None
        if mode == "incremental" and held and cache is not None and latest is not None:
            opened = cache.open(plan, config.engine.memory)
            if opened is not None:
                why = inc.stale(
                    opened[1], latest, config.fingerprint, lambda m: _count_stored(store, m),
                    judge, lo, hi,
                )  # fmt: skip
                if why:
                    logger.info("the incremental cache is stale (%s): running in full", why)
                    opened[0].close()
                    opened = None
        if opened is not None:
            db, meta = opened
            db.con.execute("BEGIN TRANSACTION")
            stage("reading what changed", 0)
            jd = _judge_incremental(plan, backend, store, db, meta, as_of, lo, hi, max_seq,
                                    judge, stage)  # fmt: skip
        else:
            if held and cache is not None:
                cache.discard_tmp()
            stage("reading the window", 0)
            db = backend.window(
                plan, lo, hi, memory=config.engine.memory, max_seq=max_seq,
                path=cache.tmp if held and cache is not None else None,
            )  # fmt: skip
            jd = _judge_full(plan, backend, db, as_of, lo, judge, config, stage, shard)
        result, run_row = _record(store, config, jd, shard, shard_label, mode, as_of, lo, max_seq,
                                  watermarks, t_start, stage, started_at)  # fmt: skip
        if mode == "incremental":
            result.run["incremental"] = {
                "cache": opened is not None,
                "judged": jd.judged_again if opened is not None else jd.n_orders,
            }
        if held and cache is not None:
            _keep_cache(db, cache, opened is not None, run_row, config, judge, lo, hi, max_seq,
                        store)  # fmt: skip
            db = None
    finally:
        if db is not None:
            db.close()
        if cache is not None:
            if held:
                cache.discard_tmp()
            cache.release()
    stage("done", 100)
    return result


def _present_objects(backend: SqlBackend, db: WindowDB) -> set[str]:
    """Of the objects of active findings of no order, those the window names."""
    with backend.store.engine.connect() as conn:
        return db.present_objects(runs.active_object_findings(conn))


class OrderTally:
    """A full run's per-order outcomes, summed part by part: state counts, the in-flight orders
    (with their next due), and, for a cache, every order's state and overdue unit in the
    window's DuckDB."""

    def __init__(self, db: WindowDB, shard: Part | None, keep: bool) -> None:
        self.db, self.shard, self.keep = db, shard, keep
        self.counts: dict[str, int] = {}
        self.pending: list[tuple[str, int | None]] = []
        self.n = 0
        self._first = True

    def __call__(self, p: PartResult) -> None:
        if self.keep:
            tables = {"ostate": inc.ostate_to_arrow(p.order_ids, p.state, p.next_due),
                      "over": inc.over_to_arrow(p.overdue)}  # fmt: skip
            if self._first:
                self.db.keep_tables(tables)
            else:
                for name, tb in tables.items():
                    self.db.insert(name, tb)
        self._first = False
        ids, states = p.order_ids, p.state
        judged = (
            np.fromiter((in_part(order_bucket(o), self.shard) for o in ids), bool, len(ids))
            if self.shard
            else np.ones(len(ids), dtype=bool)
        )
        self.n += int(judged.sum())
        for k, v in zip(*np.unique(states[judged].astype(str), return_counts=True), strict=True):
            self.counts[str(k)] = self.counts.get(str(k), 0) + int(v)
        flight = np.flatnonzero(judged & (states == "in_flight"))
        due = p.next_due[flight]
        self.pending.extend(
            (o, None if np.isnan(d) else int(d))
            for o, d in zip(ids[flight].tolist(), due.tolist(), strict=True)
        )


def _judge_full(
    plan: Plan, backend: SqlBackend, db: WindowDB, as_of: int, lo: int,
    judge: dict[str, float], config: Config, stage: Callable[[str, float], None],
    shard: Part | None,
) -> Judged:  # fmt: skip
    """Every order of the window judged."""
    stage("resolving orders and objects", 30)
    db.resolve(config.engine.part_orders)
    tally = OrderTally(db, shard, keep=db.path is not None)
    window: dict[str, Any] = {}

    def judged_all() -> None:
        """What the run still asks of the window; then, unless it is kept as a cache, only
        the orders and the edge populations stay in DuckDB's memory."""
        window.update(objects=_present_objects(backend, db), unlinked=db.unlinked_count(),
                      events=db.event_count())  # fmt: skip
        if db.path is None:
            db.release(keep=("ord", "pop"))

    ev = evaluate(
        plan, db, as_of, judge, window_start=lo, backend=backend,
        on_part=lambda p, n: stage(f"part {p + 1} of {n}", 40 + 50 * p / n), tally=tally,
        after_parts=judged_all,
    )  # fmt: skip
    if db.path is None:
        db.release()
    stage("evidence", 90)
    return Judged(
        finish_findings(ev.findings, backend), tally.n, dict(sorted(tally.counts.items())),
        tally.pending, None, db.present_orders, window["objects"], window["unlinked"],
        window["events"], dict(ev.last_activity), ev.waiting,
    )  # fmt: skip


def _judge_incremental(
    plan: Plan, backend: SqlBackend, store: Store, db: WindowDB, meta: dict[str, Any],
    as_of: int, lo: int, hi: int, max_seq: int, judge: dict[str, float],
    stage: Callable[[str, float], None],
) -> Judged:  # fmt: skip
    """Only the orders affected since the cached run judged; vanished vs stalled decided again
    for every overdue unit; the other orders' findings kept."""
    load_delta(backend, db, lo, hi, meta["hi"], meta["max_seq"], max_seq)
    stage("resolving orders and objects", 30)
    db.resolve(2**62)  # one part: the affected orders are chosen below
    with store.engine.connect() as conn:
        kept = runs.read_active(conn, exclude_kinds=("vanished", "stalled"))
    orphans = kept[(kept["kind"] == "orphan") & (kept["object"] == "")
                   & (kept["since"] <= lo + plan.longest_path)]  # fmt: skip
    redo, affected = db.affected(as_of, orphans["order_id"].tolist())
    stage(f"judging {len(affected):,} affected orders", 40)
    judge_ix = {plan.hx[h]: v for h, v in judge.items() if h in plan.hx}
    st, facts = db.part_state(
        0, orders=pa.table({"order_id": pa.array(affected, type=pa.string())})
    )
    ctx = Context(
        st, as_of, judge_ix, window_start=lo, facts=facts, event_keys=backend.event_keys,
        started_before=lambda ids: backend.started_before(ids, lo),
    )  # fmt: skip
    last = db.last_activity()
    ctx.last_activity = last
    part = judge_part(ctx)
    db.drop_points(redo)
    db.add_points(part.points, part.owners)
    over = inc.refresh_overdue(inc.over_from_arrow(db.kept_overdue()), as_of, judge_ix, plan.hx)
    db.replace_kept(
        inc.over_to_arrow(part.overdue),
        inc.ostate_to_arrow(part.order_ids, part.state, part.next_due),
    )
    all_over = pd.concat([x for x in (over, part.overdue) if len(x)], ignore_index=True) if (
        len(over) or len(part.overdue)) else part.overdue  # fmt: skip
    stage("vanished or stalled", 70)
    new = finish([PartResult(part.rows, all_over, {}, part.order_ids, part.judged, part.state,
                             part.next_due)], db_population(db), last)  # fmt: skip
    stage("evidence", 90)
    new = finish_findings(new, backend)
    redo_set = set(redo)
    keep = kept[~kept["order_id"].isin(redo_set) & (kept["order_id"] != "")]
    keep = inc.refresh_kept(keep, as_of)
    findings = pd.concat([x for x in (new, keep) if len(x)], ignore_index=True) if (
        len(new) or len(keep)) else new  # fmt: skip
    judged_again = OrderTally(db, None, keep=False)  # its in-flight orders; counts: the cache's
    judged_again(part)
    counts = db.state_counts()
    return Judged(
        findings, sum(counts.values()), counts, judged_again.pending, redo, db.present_orders,
        _present_objects(backend, db), db.unlinked_count(), db.event_count(), last, dict(part.waiting),
        len(affected),
    )  # fmt: skip


def _count_stored(store: Store, seq: int) -> list[Any]:
    with store.engine.connect() as conn:
        return w.count_stored(conn, seq)


def _keep_cache(
    db: WindowDB, cache: inc.Cache, in_place: bool, run_row: dict[str, Any], config: Config,
    judge: dict[str, float], lo: int, hi: int, max_seq: int, store: Store,
) -> None:  # fmt: skip
    """Keep this run's working database for the next incremental run (best effort: a cache
    that cannot be written costs the next run its speed, never its result). The database is
    closed here."""
    meta = {
        "version": inc.VERSION, "run_id": run_row["id"], "started_at": run_row["started_at"],
        "as_of": run_row["as_of"], "max_seq": max_seq, "config_hash": config.fingerprint,
        "lo": lo, "hi": hi, "judge": judge, "stored": _count_stored(store, max_seq),
    }  # fmt: skip
    try:
        db.keep(meta)
        if in_place:
            db.con.execute("COMMIT")
        db.con.execute("CHECKPOINT")
        db.close()
        if not in_place:
            cache.install()
    except Exception as e:
        db.close()
        logger.warning("cannot keep the incremental cache at %s: %s", cache.path, e)


def _record(
    store: Store, config: Config, jd: Judged, shard: Part | None, shard_label: str, mode: str,
    as_of: int, lo: int, max_seq: int, watermarks: dict[str, int | None], t_start: float,
    stage: Callable[[str, float], None], started_at: int,
) -> tuple[RunResult, dict[str, Any]]:  # fmt: skip
    """Record the run: findings with their lifecycle, in-flight orders, incidents."""
    stage("writing the run", 95)
    present_objects = jd.present_objects

    def bucket_of(order_id: str, obj: str) -> int:
        return order_bucket(order_id or obj)

    def in_scope(df: pd.DataFrame) -> np.ndarray:
        if shard is None:
            return np.ones(len(df), dtype=bool)
        return np.array(
            [
                in_part(bucket_of(o, b), shard)
                for o, b in zip(df["order_id"], df["object"], strict=True)
            ],
            dtype=bool,
        )

    # the findings leave ``jd`` as column lists that update_findings consumes: nothing else
    # holds them, so a large run keeps one copy (an empty frame keeps no view of the rows)
    findings = jd.findings
    jd.findings = findings.iloc[:0].copy()
    if shard is not None and len(findings):
        findings = findings[in_scope(findings)]
    current = runs.finding_columns(findings)
    del findings

    def present(df: pd.DataFrame) -> np.ndarray:
        orders = df["order_id"].tolist()
        here = jd.present([o for o in orders if o])
        return np.array(
            [(o in here) if o else (b in present_objects)
             for o, b in zip(orders, df["object"].tolist(), strict=True)],
            dtype=bool,
        )  # fmt: skip

    with store.engine.begin() as conn:
        run_id = runs.start_run(
            conn, as_of, mode, shard_label, config.fingerprint, max_seq, started_at
        )
        out = runs.update_findings(conn, run_id, current, in_scope, present)
        runs.replace_pending(conn, run_id, _bucket_sql(shard), jd.pending_scope, jd.pending)
        incidents = _incidents(config, out, jd, jd.last_activity, watermarks, as_of)
        runs.write_incidents(conn, run_id, incidents)
        active = out[out["status"].isin(runs.ACTIVE)]
        summary = {k: int(v) for k, v in active["kind"].value_counts().items()}
        summary = {k: summary[k] for k in KINDS if k in summary}
        runs.finish_run(conn, run_id, jd.n_orders, jd.n_events, summary, jd.unlinked)
        run_row = runs.run_row(conn, run_id)
    by_hop: dict[str, dict[str, int]] = {}
    for (h, k), v in active.groupby(["hop", "kind"]).size().items():
        by_hop.setdefault(str(h), {})[str(k)] = int(v)
    run: dict[str, Any] = {
        "id": run_id,
        "as_of": us_to_iso(as_of),
        "window_start": us_to_iso(lo),
        "mode": mode,
        "shard": shard_label or None,
        "orders": jd.n_orders,
        "events": jd.n_events,
        "findings": len(active),
        "resolved": int((out["status"] == "resolved").sum()),
        "expired": int((out["status"] == "expired").sum()),
        "unlinked": jd.unlinked,
        "seconds": round(time.perf_counter() - t_start, 3),
        "pipeline": config.pipeline.name,
    }
    run["notes"] = _notes(store, config, jd.n_events, lo, as_of)
    findings_out = runs.finding_dicts(out)
    result = RunResult(run, summary, findings_out, incidents, by_hop, jd.state_counts)
    return result, run_row


def _notes(store: Store, config: Config, n_events: int, lo: int, as_of: int) -> list[str]:
    """What a reader must know to trust "no findings": an empty window, a source that never
    matched a file or was never read."""
    notes = []
    if not n_events:
        notes.append(
            f"no event between {us_to_iso(lo)} and {us_to_iso(as_of)}: nothing was judged "
            "(is this the right store, and were the sources ingested?)"
        )
    cps = {(c["source"], c["key"]): c for c in store.all_checkpoints()}
    for s in config.sources:
        top = cps.get((s.name, ""))
        if top is None:
            notes.append(f"source {s.name} was never read to its end: its hops are not judged")
        elif s.kind == "file" and '"files":0' in str(top.get("position", "")).replace(" ", ""):
            notes.append(f"source {s.name}: its path {s.path!r} matched no file when last ingested")
    return notes


def _bucket_sql(shard: Part | None) -> str | None:
    if shard is None or shard[1] <= 1:
        return None
    return f"(order_bucket % {int(shard[1])}) = {int(shard[0])}"


def _incidents(
    config: Config, findings: pd.DataFrame, ev: Evaluation | Judged,
    last_activity: dict[str, float | None], watermarks: dict[str, int | None], as_of: int,
) -> list[dict[str, Any]]:  # fmt: skip
    out: list[dict[str, Any]] = []
    active = findings[findings["status"].isin(runs.ACTIVE)]
    stalled = active[active["kind"] == "stalled"]
    for hop, grp in stalled.groupby("hop", sort=True):
        oldest = int(grp["since"].min())
        acts = [last_activity.get(m) for m in str(hop).split("|")]
        known = [x for x in acts if x is not None and not np.isnan(x)]
        last = max(known) if known else None
        since = int(last) if last is not None and last < oldest else oldest
        seen = (
            f"last {hop} event {when(iso(last))}"
            if last is not None
            else f"no {hop} event in the window"
        )
        froms = ", ".join(sorted(set(grp["from_hop"])))
        out.append({
            "kind": "hop_silent", "hop": str(hop), "since": us_to_iso(since), "orders": len(grp),
            "detail": f"{len(grp):,} orders overdue from {froms} wait for {hop}; {seen}; "
                      f"oldest due {when(iso(oldest))}, {format_duration(as_of - oldest)} ago",
        })  # fmt: skip
    skew = config.pipeline.clock_skew
    for s in config.sources:
        wm = watermarks.get(s.name)
        if wm is not None and wm >= as_of - skew:
            continue
        hops = [s.hop] if s.hop else list(config.hop_names)
        n = sum(v for h, v in ev.waiting.items() if any(x in hops for x in h.split("|")))
        if n == 0 and wm is not None:
            continue
        behind = (
            "never read to its end"
            if wm is None
            else f"complete up to {when(iso(wm))}, {format_duration(as_of - wm)} behind"
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


__all__ = ["KINDS", "RunResult", "fail_matches", "parse_shard", "reconcile"]
