"""Reconcile throughput: N orders (~5 events each) in SQLite -> wall time and peak RSS.

Builds the store directly (vectorized, not through ingest) with a realistic mix: most orders
complete, ~1% lost at each hop, a shipping outage at the end, some double charges. In the same
run a DuckDB query finds the overdue edges over the same events (loaded into DuckDB first, only
the query is timed): the reference for how fast a columnar engine does the core join.

    python -m bench.reconcile --orders 100000 1000000 3000000
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from bench.common import DATA, machine, measure_isolated

CONFIG = """
[pipeline]
name = "bench"
lookback = "60d"
[[hops]]
name = "checkout"
next = ["payment"]
within = "15m"
[[hops]]
name = "payment"
next = ["confirmation", "fulfillment"]
within = { confirmation = "5m", fulfillment = "24h" }
unique = true
[[hops]]
name = "confirmation"
promises = ["fulfillment"]
promise_within = "48h"
[[hops]]
name = "fulfillment"
next = ["shipping"]
within = "48h"
[[hops]]
name = "shipping"
[[hops]]
name = "cancelled"
closes = true
"""
S = 1_000_000
T0 = 1_767_225_600 * S  # 2026-01-01
DAYS = 30
AS_OF = T0 + DAYS * 86400 * S


def build(db: Path, n: int, seed: int = 1) -> int:
    from ordertrail.store import Store

    for p in db.parent.glob(db.name + "*"):
        p.unlink()
    Store(f"sqlite:///{db}").close()  # schema via migrations
    rng = np.random.default_rng(seed)
    placed = T0 + np.sort(rng.integers(0, (DAYS - 1) * 86400 * S, n))
    t = {
        "checkout": placed,
        "payment": placed + rng.integers(10 * S, 300 * S, n),
    }
    t["confirmation"] = t["payment"] + rng.integers(1 * S, 60 * S, n)
    t["fulfillment"] = t["payment"] + rng.integers(3600 * S, 12 * 3600 * S, n)
    t["shipping"] = t["fulfillment"] + rng.integers(2 * 3600 * S, 24 * 3600 * S, n)
    lost = rng.random(n)
    keep = {
        "checkout": np.ones(n, bool),
        "payment": lost >= 0.01,
        "confirmation": lost >= 0.01,
        "fulfillment": lost >= 0.02,
        "shipping": (lost >= 0.03) & (t["shipping"] < AS_OF - 2 * 86400 * S),  # outage at the end
    }
    ids = np.array([f"O{i:09d}" for i in range(n)], dtype=object)
    buckets = np.array([zlib.crc32(o.encode()) & 1023 for o in ids], dtype=np.int64)
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    sql = (
        "INSERT INTO events (event_id, source, order_id, order_bucket, hop, phase, occurred_at, "
        "source_ref, attributes, ingested_at) VALUES (?,?,?,?,?,?,?,?,?,?)"
    )
    total = 0
    amounts = np.round(rng.uniform(5, 500, n), 2)
    for hop, times in t.items():
        m = keep[hop]
        idx = np.flatnonzero(m)
        if hop == "checkout":  # what support staff search by
            attrs = (f'{{"amount":{amounts[i]},"customer.email":"c{i}@example.com"}}' for i in idx)
        else:
            attrs = ("{}" for _ in idx)
        k = len(idx)
        rows = zip(
            (f"{hop}-{i}" for i in idx), (hop for _ in range(k)), ids[m].tolist(),
            buckets[m].tolist(), (hop for _ in range(k)), ("completed" for _ in range(k)),
            times[m].tolist(), (f"{hop}.jsonl:{i}" for i in idx), attrs, (0 for _ in range(k)),
            strict=True,
        )  # fmt: skip
        con.executemany(sql, rows)
        total += int(m.sum())
    dup = np.flatnonzero(rng.random(n) < 0.002)
    con.executemany(sql, [(f"dup-{i}", "payment", ids[i], int(buckets[i]), "payment", "completed",
                           int(t["payment"][i] + 30 * S), "x", "{}", 0) for i in dup])  # fmt: skip
    total += len(dup)
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return total


DUCK_SQL = """
WITH firsts AS (
  SELECT order_id,
         min(occurred_at) FILTER (WHERE hop = 'checkout') AS checkout,
         min(occurred_at) FILTER (WHERE hop = 'payment') AS payment,
         min(occurred_at) FILTER (WHERE hop = 'confirmation') AS confirmation,
         min(occurred_at) FILTER (WHERE hop = 'fulfillment') AS fulfillment,
         min(occurred_at) FILTER (WHERE hop = 'shipping') AS shipping
  FROM events WHERE phase = 'completed' GROUP BY order_id
), overdue AS (
  SELECT order_id, 'payment' AS hop FROM firsts WHERE checkout IS NOT NULL AND payment IS NULL AND checkout + 900000000 < $asof
  UNION ALL SELECT order_id, 'confirmation' FROM firsts WHERE payment IS NOT NULL AND confirmation IS NULL AND payment + 300000000 < $asof
  UNION ALL SELECT order_id, 'fulfillment' FROM firsts WHERE payment IS NOT NULL AND fulfillment IS NULL AND payment + 86400000000 < $asof
  UNION ALL SELECT order_id, 'shipping' FROM firsts WHERE fulfillment IS NOT NULL AND shipping IS NULL AND fulfillment + 172800000000 < $asof
)
SELECT hop, count(*) FROM overdue GROUP BY hop ORDER BY hop
"""


def duckdb_reference(db: Path) -> tuple[float, dict[str, int]]:
    import duckdb
    import pandas as pd

    src = sqlite3.connect(db)
    df = pd.read_sql("SELECT order_id, hop, phase, occurred_at FROM events", src)
    src.close()
    con = duckdb.connect()
    con.execute("CREATE TABLE events AS SELECT * FROM df")
    del df
    t0 = time.perf_counter()
    rows = con.execute(DUCK_SQL, {"asof": AS_OF}).fetchall()
    return time.perf_counter() - t0, {h: int(c) for h, c in rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--no-duckdb", action="store_true")
    a = ap.parse_args()
    exe = str(Path(sys.executable).parent / "ordertrail")
    print(f"machine: {machine()}")
    print(
        f"{'orders':>10} {'events':>10} {'reconcile s':>12} {'peak RSS MB':>12} {'orders/s':>10} {'duckdb s':>9} {'ratio':>6}"
    )
    for n in a.orders:
        d = DATA / f"reconcile-{n}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "ordertrail.toml").write_text(CONFIG)
        db = d / "store.db"
        if not db.exists():
            build(db, n)
        cmd = [exe, "--config", str(d / "ordertrail.toml"), "--db", f"sqlite:///{db}", "reconcile",
               "--as-of", str(AS_OF // S), "--format", "json", "--output", str(d / "result.json")]  # fmt: skip
        if a.workers:
            cmd += ["--workers", str(a.workers)]
        m = measure_isolated(cmd)
        res = json.loads((d / "result.json").read_text())
        dk, counts = (float("nan"), {}) if a.no_duckdb else duckdb_reference(db)
        print(f"{n:>10,} {res['run']['events']:>10,} {m.seconds:>12.1f} {m.peak_rss_mb:>12.0f} "
              f"{n / m.seconds:>10,.0f} {dk:>9.2f} {m.seconds / dk:>6.0f}x")  # fmt: skip
        print(f"           summary: {res['summary']}; duckdb overdue per hop: {counts}")


if __name__ == "__main__":
    main()
