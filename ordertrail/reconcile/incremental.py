"""Incremental reconciliation that pays off: the last run's working database kept as a cache.

A full run stages the window in DuckDB and judges every order. With ``--incremental`` that
database is a file — the cache — and keeps, besides the window's events, objects and links,
every order's state and next due time, every overdue unit (with its evidence) and every edge's
population (per order). The next incremental run opens the cache and, in one DuckDB
transaction,

1. reads only what changed in the store: events stored since the last run, and events stored
   before it whose time was past its end and now is not (both through an index);
2. applies them: they join the window, their links join the links, and whatever is now older
   than the window's start leaves it;
3. resolves orders and objects again; the orders whose events changed (events came or left,
   an object moved between orders), the orders due (an expectation's deadline has come) and
   the orphans a moving window start can clear are *affected* — only they are judged again;
4. decides vanished vs stalled again for every overdue unit (the population moved on), with the
   evidence that depends on the run's time (``overdue_s``, ``judged_until``) brought up to date;
5. keeps every other order's findings as the last run stored them (a confirmed_unfulfilled's
   ``overdue_s`` brought up to date).

The result equals a full run at the same ``as_of`` (tests compare both on generated pipelines).
The cache is used only when it belongs to the store's latest run: the same run (id, start,
as_of, events), the same configuration, no event removed since (counted, and the newest event
still the same), judging times and window not moved back. Otherwise the run is full and leaves
a new cache. The store's run is committed first, then the cache (a crash in between leaves a
cache of the run before, which the next run sees as stale). One process uses a cache at a time
(a lock file); a second run at once runs in full and leaves the cache alone. The cache is a
disposable file: deleting it costs one full run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from ordertrail.reconcile.columnar import WindowDB
from ordertrail.reconcile.plan import Plan
from ordertrail.reconcile.render import render_detail
from ordertrail.reconcile.rules import iso
from ordertrail.store import Store

logger = logging.getLogger(__name__)

VERSION = 2
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


class Cache:
    """A store's cache file, held by one process at a time."""

    def __init__(self, path: Path):
        self.path = path
        self._lock: int | None = None

    def acquire(self) -> bool:
        """Take the cache (False: another run holds it, or its folder cannot be written)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            logger.warning("no incremental cache at %s: %s", self.path, e)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            logger.info("another run holds the incremental cache %s", self.path)
            return False
        self._lock = fd
        return True

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    @property
    def tmp(self) -> str:
        return f"{self.path}.{os.getpid()}.tmp"

    def discard_tmp(self) -> None:
        for p in (self.tmp, f"{self.tmp}.wal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)

    def install(self) -> None:
        """The new cache (written at :attr:`tmp`, closed) takes the place of the old one; a
        write-ahead log of the old one goes with it."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self.path}.wal")
        os.replace(self.tmp, self.path)

    def open(self, plan: Plan, memory: str | None) -> tuple[WindowDB, dict[str, Any]] | None:
        """The cache as a database, with its meta (None: none, or unreadable)."""
        if not self.path.exists():
            logger.info("no incremental cache at %s yet: running in full", self.path)
            return None
        try:
            db = WindowDB(plan, memory=memory, path=str(self.path))
        except Exception as e:  # damaged or foreign: a full run replaces it
            logger.warning("the incremental cache %s cannot be read (%s): running in full",
                           self.path, e)  # fmt: skip
            return None
        try:
            meta = db.meta()
        except Exception as e:
            logger.warning("the incremental cache %s cannot be read (%s): running in full",
                           self.path, e)  # fmt: skip
            meta = None
        if meta is None:
            db.close()
            return None
        return db, meta


def stale(
    meta: Mapping[str, Any],
    prev: Mapping[str, Any],
    fingerprint: str,
    stored_count: Any,
    judge: Mapping[str, float],
    lo: int,
    hi: int,
) -> str | None:
    """Why a cache cannot serve this run (None: it can)."""
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


# -- what the cache keeps besides the window -----------------------------------------------------
def over_to_arrow(over: pd.DataFrame) -> pa.Table:
    """Overdue units for the cache (evidence as JSON text)."""
    types = {"last_seq": pa.int64(), "since": pa.float64(), "req": pa.int64(), "ta": pa.float64(),
             "deadline": pa.float64()}  # fmt: skip
    cols: dict[str, Any] = {}
    for c in _OVER_COLS:
        v = over[c].tolist() if len(over) else []
        if c == "obj":
            v = [x if isinstance(x, str) else None for x in v]
        cols[c] = pa.array(v, type=types.get(c, pa.string()))
    cols["evidence"] = pa.array(
        [orjson.dumps(e).decode() for e in over["evidence"]] if len(over) else [],
        type=pa.string(),
    )
    return pa.table(cols)


def over_from_arrow(tb: pa.Table) -> pd.DataFrame:
    d = {c: tb.column(c).to_pylist() for c in tb.column_names}
    return pd.DataFrame(
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


def ostate_to_arrow(order_ids: Any, state: Any, due: Any) -> pa.Table:
    due = np.asarray(due, dtype=np.float64)
    return pa.table(
        {
            "order_id": pa.array(np.asarray(order_ids, dtype=object), type=pa.string()),
            "state": pa.array(np.asarray(state, dtype=object), type=pa.string()),
            "due": pa.array(due, type=pa.float64(), mask=np.isnan(due)),
        }
    )


def refresh_overdue(
    over: pd.DataFrame, as_of: int, judge_ix: Mapping[int, float], hx: Mapping[str, int]
) -> pd.DataFrame:
    """The evidence of overdue units kept from the last run, at this run's time."""
    if not len(over):
        return over
    judged: dict[str, str | None] = {}
    evs = []
    for e, lab, dl in zip(over["evidence"], over["hop"].tolist(), over["deadline"].tolist(),
                          strict=True):  # fmt: skip
        e["overdue_s"] = round((as_of - dl) / 1e6)
        if "judged_until" in e:
            if lab not in judged:
                judged[lab] = iso(min(judge_ix.get(hx[m], float(as_of)) for m in lab.split("|")))
            e["judged_until"] = judged[lab]
        evs.append(e)
    return over.assign(evidence=evs)


def refresh_kept(kept: pd.DataFrame, as_of: int) -> pd.DataFrame:
    """Findings kept from the last run whose evidence depends on the run's time: a promise
    overdue since its deadline (``since``)."""
    if not len(kept):
        return kept
    evs, details = [], []
    cols = [kept[c].tolist() for c in ("kind", "hop", "from_hop", "field", "objects", "since",
                                        "evidence", "detail")]  # fmt: skip
    for kind, hop, fh, fl, objs, since, e, d in zip(*cols, strict=True):
        if "overdue_s" in e:
            e = {**e, "overdue_s": round((as_of - int(since)) / 1e6)}
            d = render_detail(kind, hop, fh or None, fl or None, objs, e)
        evs.append(e)
        details.append(d)
    return kept.assign(evidence=evs, detail=details)


__all__ = [
    "VERSION",
    "Cache",
    "cache_path",
    "ostate_to_arrow",
    "over_from_arrow",
    "over_to_arrow",
    "refresh_kept",
    "refresh_overdue",
    "stale",
]
