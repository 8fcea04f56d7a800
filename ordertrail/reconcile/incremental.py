"""Incremental reconciliation that pays off: the last run's working database kept as a cache.

A full run stages the window in DuckDB and judges every order. With ``--incremental`` it also
keeps that database in a cache file, with what the next run needs besides the events: every
order's state and next due time, every overdue unit (with its evidence) and every edge's
population (per order). The next incremental run opens the cache and

1. reads only what changed in the store: events stored since the last run, and events stored
   before it whose time was past its end and now is not (both through an index);
2. applies them in DuckDB: they join the window, their links join the links, and whatever is
   now older than the window's start leaves it;
3. resolves orders and objects again and compares each event's orders with before: the orders
   whose events changed, plus the orders due (an expectation whose deadline has come) and the
   orphans the moving window start can clear, are *affected* — only they are judged again;
4. decides vanished vs stalled again for every overdue unit (the population moved on), with
   the evidence that depends on the run's time (overdue_s, judged_until) brought up to date;
5. keeps every other order's findings as the last run stored them (a confirmed_unfulfilled's
   overdue_s brought up to date).

The result equals a full run at the same ``as_of`` (the tests compare both on generated
pipelines). The cache is used only when it belongs to the store's latest run: same run (id,
start, as_of, events), same configuration, no event removed since (counted), judging times
and window not moved back. Otherwise the run is full and writes a new cache. The cache is a
disposable file: deleting it costs one full run.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from ordertrail.reconcile.classify import PartResult
from ordertrail.reconcile.columnar import WindowDB
from ordertrail.reconcile.plan import Plan
from ordertrail.reconcile.render import render_detail
from ordertrail.reconcile.rules import iso
from ordertrail.store import Store

logger = logging.getLogger(__name__)

VERSION = 1
EXTRA = ("over", "ostate")
_OVER_COLS = ["order_id", "last_seq", "hop", "from_hop", "field", "since", "obj", "req", "ta",
              "deadline"]  # fmt: skip


def cache_path(store: Store) -> Path | None:
    """Where a store's cache lives: beside a SQLite store file; for PostgreSQL in the user's
    cache folder, named by the server and database (never the password). None: an in-memory
    store has no cache."""
    url = store.engine.url
    if url.get_backend_name() == "sqlite":
        db = url.database or ""
        if not db or db == ":memory:" or db.startswith("file:"):
            return None
        return Path(f"{db}.incremental.duckdb")
    key = url.render_as_string(hide_password=True)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ordertrail"
    return base / f"incremental-{hashlib.sha256(key.encode()).hexdigest()[:16]}.duckdb"


@dataclass
class Cached:
    """An opened cache: the window's database as the last run left it, and what it knew."""

    db: WindowDB
    meta: dict[str, Any]
    over: pd.DataFrame
    ostate: pd.DataFrame


def open_cache(
    path: Path,
    plan: Plan,
    prev: Mapping[str, Any],
    *,
    fingerprint: str,
    stored_count: Any,
    judge: Mapping[str, float],
    lo: int,
    hi: int,
    memory: str | None,
) -> Cached | None:
    """The cache when it belongs to ``prev`` (the store's latest run) and can be brought
    forward to (lo, hi]; else None (the reason is logged). ``stored_count(seq)`` counts the
    events stored up to seq now."""
    if not path.exists():
        logger.info("no incremental cache at %s: running in full", path)
        return None
    try:
        db, meta, got = WindowDB.restore(plan, str(path), EXTRA, memory=memory)
    except Exception as e:  # a damaged or foreign file is a reason for a full run, not an error
        logger.warning("the incremental cache %s cannot be read (%s): running in full", path, e)
        return None
    why = _stale(meta, prev, fingerprint, stored_count, judge, lo, hi)
    if why:
        logger.info("the incremental cache is stale (%s): running in full", why)
        db.close()
        return None
    return Cached(db, meta, over_from_arrow(got["over"]), got["ostate"].to_pandas())


def _stale(
    meta: Mapping[str, Any],
    prev: Mapping[str, Any],
    fingerprint: str,
    stored_count: Any,
    judge: Mapping[str, float],
    lo: int,
    hi: int,
) -> str | None:
    if meta.get("version") != VERSION:
        return "another version"
    pairs = (("run_id", "id"), ("started_at", "started_at"), ("as_of", "as_of"),
             ("max_seq", "max_ingest_seq"))  # fmt: skip
    if any(meta.get(k) != prev.get(j) for k, j in pairs):
        return "it is not the latest run's"
    if meta.get("config_hash") != fingerprint or prev.get("config_hash") != fingerprint:
        return "the configuration changed"
    if lo < meta["lo"] or hi < meta["hi"]:
        return "the window moved back"
    for h, v in judge.items():
        old = meta["judge"].get(h)  # None: not judged at all (NaN does not survive JSON)
        if old is not None and (v is None or np.isnan(v) or v < old):
            return f"hop {h} is judged to an earlier time than before"
    if stored_count(meta["max_seq"]) != meta["stored"]:
        return "events were removed from the store since"
    return None


def over_to_arrow(over: pd.DataFrame) -> pa.Table:
    """Overdue units for the cache (evidence as JSON text)."""
    cols: dict[str, Any] = {}
    for c in _OVER_COLS:
        v = over[c].tolist() if len(over) else []
        if c == "obj":
            v = [x if isinstance(x, str) else None for x in v]
        cols[c] = v
    cols["evidence"] = [orjson.dumps(e).decode() for e in over["evidence"]] if len(over) else []
    types = {"last_seq": pa.int64(), "since": pa.float64(), "req": pa.int64(), "ta": pa.float64(),
             "deadline": pa.float64()}  # fmt: skip
    return pa.table({c: pa.array(v, type=types.get(c, pa.string())) for c, v in cols.items()})


def over_from_arrow(tb: pa.Table) -> pd.DataFrame:
    d = {c: tb.column(c).to_pylist() for c in tb.column_names}
    df = pd.DataFrame(
        {
            "o": np.zeros(tb.num_rows, dtype=np.int64),
            "last_seq": np.asarray(d["last_seq"], dtype=np.int64),
            "order_id": np.asarray(d["order_id"], dtype=object),
            "kind": "overdue",
            "hop": np.asarray(d["hop"], dtype=object),
            "from_hop": np.asarray(d["from_hop"], dtype=object),
            "field": np.asarray(d["field"], dtype=object),
            "since": np.asarray(d["since"], dtype=np.float64),
            "obj": np.asarray(d["obj"], dtype=object),
            "evidence": [orjson.loads(e) for e in d["evidence"]],
            "req": np.asarray(d["req"], dtype=np.int64),
            "ta": np.asarray(d["ta"], dtype=np.float64),
            "deadline": np.asarray(d["deadline"], dtype=np.float64),
        }
    )
    return df


def ostate_to_arrow(order_ids: Sequence[Any], state: Sequence[Any], due: Any) -> pa.Table:
    due = np.asarray(due, dtype=np.float64)
    return pa.table(
        {
            "order_id": pa.array(list(order_ids), type=pa.string()),
            "state": pa.array(list(state), type=pa.string()),
            "due": pa.array(due, type=pa.float64(), mask=np.isnan(due)),
        }
    )


def refresh_overdue(
    over: pd.DataFrame, as_of: int, judge_ix: Mapping[int, float], hx: Mapping[str, int]
) -> pd.DataFrame:
    """The evidence of overdue units kept from the last run, at this run's time."""
    if not len(over):
        return over
    evs = []
    for e, lab, dl in zip(over["evidence"], over["hop"], over["deadline"], strict=True):
        e = dict(e)
        e["overdue_s"] = round((as_of - dl) / 1e6)
        if "judged_until" in e:
            e["judged_until"] = iso(
                min(judge_ix.get(hx[m], float(as_of)) for m in str(lab).split("|"))
            )
        evs.append(e)
    return over.assign(evidence=evs)


def refresh_kept(kept: pd.DataFrame, as_of: int) -> pd.DataFrame:
    """Findings kept from the last run whose evidence depends on the run's time: a promise
    overdue since its deadline (``since``)."""
    if not len(kept):
        return kept
    evs, details = [], []
    for r in kept.itertuples(index=False):
        e = r.evidence
        d = r.detail
        if "overdue_s" in e:
            e = {**e, "overdue_s": round((as_of - int(r.since)) / 1e6)}
            d = render_detail(r.kind, r.hop, r.from_hop or None, r.field or None, r.objects, e)
        evs.append(e)
        details.append(d)
    return kept.assign(evidence=evs, detail=details)


def merge_states(
    ostate: pd.DataFrame, part: PartResult, affected: set[str], present: set[str]
) -> pd.DataFrame:
    """Every present order's state and next due: the affected orders' new ones, the others'
    as before."""
    keep = ostate[~ostate["order_id"].isin(affected) & ostate["order_id"].isin(present)]
    new = pd.DataFrame({"order_id": part.order_ids, "state": part.state, "due": part.next_due})
    return pd.concat([keep, new], ignore_index=True)


__all__ = [
    "Cached",
    "cache_path",
    "merge_states",
    "open_cache",
    "ostate_to_arrow",
    "over_from_arrow",
    "over_to_arrow",
    "refresh_kept",
    "refresh_overdue",
]
