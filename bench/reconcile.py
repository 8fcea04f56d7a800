"""Reconcile throughput: N orders (~5 events each) in SQLite -> wall time, CPU and peak RSS,
beside its peers in the same run.

Builds the store directly (vectorized, not through ingest) with a realistic mix: most orders
complete, ~1% lost at each hop, a shipping outage at the end, some double charges. Peers, run
alternately with ours (medians of --repeat): the DuckDB reference (bench/duckdb_ref.py — DuckDB
reading the same store and classifying the overdue edges in one query, as a whole command);
with --pg the same events in PostgreSQL; with --incremental an incremental run after 1% more
events against a full run on a copy of the same store.

    python -m bench.reconcile --orders 1000000 --pg postgresql+psycopg://postgres@127.0.0.1:55432/otbench --incremental
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import zlib
from pathlib import Path

import numpy as np

from bench.common import DATA, OUT, ROOT, machine, measure_isolated

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


def build(db: Path, n: int, seed: int = 1, first: int = 0, days: float = DAYS - 1,
          create: bool = True) -> int:  # fmt: skip
    """Orders O{first}… placed over ``days`` ending a day before AS_OF, written straight into the
    SQLite store (the schema by migrations). ``create``: a new store, else appended."""
    from ordertrail.store import Store

    if create:
        for p in db.parent.glob(db.name + "*"):
            p.unlink()
        Store(f"sqlite:///{db}").close()  # schema via migrations
    rng = np.random.default_rng(seed)
    start = AS_OF - int((days + 1) * 86400 * S)
    placed = start + np.sort(rng.integers(0, int(days * 86400 * S), n))
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
    for h in keep:  # nothing from the future
        keep[h] &= t[h] <= AS_OF
    ids = np.array([f"O{first + i:09d}" for i in range(n)], dtype=object)
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
            attrs = (f'{{"amount":{amounts[i]},"customer.email":"c{first + i}@example.com"}}'
                     for i in idx)  # fmt: skip
        else:
            attrs = ("{}" for _ in idx)
        k = len(idx)
        rows = zip(
            (f"{hop}-{first + i}" for i in idx), (hop for _ in range(k)), ids[m].tolist(),
            buckets[m].tolist(), (hop for _ in range(k)), ("completed" for _ in range(k)),
            times[m].tolist(), (f"{hop}.jsonl:{first + i}" for i in idx), attrs,
            (0 for _ in range(k)), strict=True,
        )  # fmt: skip
        con.executemany(sql, rows)
        total += int(m.sum())
    dup = np.flatnonzero(rng.random(n) < 0.002)
    con.executemany(sql, [(f"dup-{first + i}", "payment", ids[i], int(buckets[i]), "payment",
                           "completed", int(t["payment"][i] + 30 * S), "x", "{}", 0)
                          for i in dup])  # fmt: skip
    total += len(dup)
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return total


def to_postgres(db: Path, url: str) -> int:
    """The same events in a fresh PostgreSQL database (COPY), for the store-to-store ratio."""
    import psycopg
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from ordertrail.store import Store

    u = make_url(url)
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{u.database}"'))
    admin.dispose()
    store = Store(url)
    src = sqlite3.connect(db)
    lo_t, hi_t = src.execute("SELECT min(occurred_at), max(occurred_at) FROM events").fetchone()
    with store.engine.begin() as conn:  # events are partitioned by month (migration 0006)
        from ordertrail.store.retention import ensure_partitions, events_partitioned

        if events_partitioned(conn):
            ensure_partitions(conn, range(int(lo_t), int(hi_t) + 1, 86_400_000_000))
            ensure_partitions(conn, [int(hi_t)])
    store.close()
    cols = ("ingest_seq, event_id, source, order_id, order_bucket, hop, phase, occurred_at, "
            "source_ref, attributes, ingested_at")  # fmt: skip
    n = 0
    plain = u.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain) as pg, pg.cursor() as cur:
        with cur.copy(f"COPY events ({cols}) FROM STDIN") as cp:
            for row in src.execute(f"SELECT {cols} FROM events ORDER BY ingest_seq"):
                cp.write_row(row)
                n += 1
        cur.execute("SELECT setval(pg_get_serial_sequence('events', 'ingest_seq'), "
                    "(SELECT max(ingest_seq) FROM events))")  # fmt: skip
        cur.execute("ANALYZE events")
    src.close()
    return n


def reconcile_cmd(d: Path, url: str, *extra: str) -> list[str]:
    exe = str(Path(sys.executable).parent / "ordertrail")
    return [exe, "--config", str(d / "ordertrail.toml"), "--db", url, "reconcile",
            "--as-of", str(AS_OF // S), "--format", "json", "--output", str(d / "result.json"),
            *extra]  # fmt: skip


def duck_cmd(db: Path) -> list[str]:
    return [sys.executable, "-m", "bench.duckdb_ref", str(db), str(AS_OF)]


def median(xs: list[float]) -> float:
    return float(np.median(xs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs per peer (medians)")
    ap.add_argument("--pg", help="also a PostgreSQL database of this URL (dropped and created)")
    ap.add_argument("--incremental", action="store_true",
                    help="also: reconcile --incremental after 1%% more events vs a full run")  # fmt: skip
    ap.add_argument("--no-duckdb", action="store_true")
    a = ap.parse_args()
    print(f"machine: {machine()}")
    out: list[dict[str, object]] = []
    for n in a.orders:
        d = DATA / f"reconcile-{n}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "ordertrail.toml").write_text(CONFIG)
        db = d / "store.db"
        if not db.exists() or not (d / "built").exists():
            build(db, n)
            (d / "built").write_text("ok")
        url = f"sqlite:///{db}"
        ours, duck = [], []
        for _ in range(a.repeat):  # alternating, so both see the same machine
            if not a.no_duckdb:
                duck.append(measure_isolated(duck_cmd(db), cwd=str(ROOT)))
            ours.append(measure_isolated(reconcile_cmd(d, url)))
        res = json.loads((d / "result.json").read_text())
        row: dict[str, object] = {
            "orders": n, "events": res["run"]["events"],
            "sqlite_s": median([m.seconds for m in ours]),
            "sqlite_cpu_s": median([m.cpu_seconds for m in ours]),
            "sqlite_rss_mb": max(m.peak_rss_mb for m in ours),
        }  # fmt: skip
        if duck:
            row["duckdb_s"] = median([m.seconds for m in duck])
            row["duckdb_cpu_s"] = median([m.cpu_seconds for m in duck])
            row["ratio"] = round(float(row["sqlite_s"]) / float(row["duckdb_s"]), 2)  # type: ignore[arg-type]
        print(f"{n:>10,} orders {res['run']['events']:>10,} events: SQLite {row['sqlite_s']:.1f} s "
              f"(cpu {row['sqlite_cpu_s']:.1f} s, {row['sqlite_rss_mb']:.0f} MB)"
              + (f", DuckDB reference {row['duckdb_s']:.1f} s (cpu {row['duckdb_cpu_s']:.1f} s), "
                 f"ratio {row['ratio']}x" if duck else ""), flush=True)  # fmt: skip
        print(f"           summary: {res['summary']}")
        if a.pg:
            to_postgres(db, a.pg)
            pg, sq = [], []
            for _ in range(a.repeat):
                sq.append(measure_isolated(reconcile_cmd(d, url)))
                pg.append(measure_isolated(reconcile_cmd(d, a.pg)))
            pres = json.loads((d / "result.json").read_text())
            row["pg_s"] = median([m.seconds for m in pg])
            row["pg_vs_sqlite"] = round(float(row["pg_s"]) / median([m.seconds for m in sq]), 2)
            print(
                f"           PostgreSQL {row['pg_s']:.1f} s = {row['pg_vs_sqlite']}x SQLite "
                f"(same run); same summary: {pres['summary'] == res['summary']}",
                flush=True,
            )
        if a.incremental:
            row.update(incremental(d, n, a.repeat))
        out.append(row)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "reconcile.json").write_text(json.dumps({"machine": machine(), "rows": out}, indent=1))


def incremental(d: Path, n: int, repeat: int) -> dict[str, object]:
    """A full --incremental run (it leaves the cache), 1% more orders' events, then an
    incremental run against a full one on copies of the same store."""
    import shutil

    base = d / "store.db"
    fulls, incs = [], []
    for k in range(repeat):
        a, b = d / "inc-a.db", d / "inc-b.db"
        for p in (*d.glob("inc-a.db*"), *d.glob("inc-b.db*")):
            p.unlink()
        shutil.copy(base, a)
        measure_isolated(reconcile_cmd(d, f"sqlite:///{a}", "--incremental",
                                       "--as-of", str((AS_OF - 3600 * S) // S)))  # fmt: skip
        added = build(a, max(1, n // 100), seed=100 + k, first=n + k * n, days=1, create=False)
        shutil.copy(a, b)
        incs.append(measure_isolated(reconcile_cmd(d, f"sqlite:///{a}", "--incremental")))
        ri = json.loads((d / "result.json").read_text())
        fulls.append(measure_isolated(reconcile_cmd(d, f"sqlite:///{b}")))
        rf = json.loads((d / "result.json").read_text())
        same = ri["summary"] == rf["summary"] and ri["run"]["orders"] == rf["run"]["orders"]
        print(
            f"           +{added:,} events: incremental {incs[-1].seconds:.1f} s "
            f"(judged {ri['run'].get('incremental', {}).get('judged')}), full "
            f"{fulls[-1].seconds:.1f} s; same result: {same}",
            flush=True,
        )
    i, f = median([m.seconds for m in incs]), median([m.seconds for m in fulls])
    print(
        f"           incremental after 1% more events: {i:.1f} s = {i / f:.0%} of a full run",
        flush=True,
    )
    for p in (*d.glob("inc-a.db*"), *d.glob("inc-b.db*")):
        p.unlink()
    return {"incremental_s": i, "full_s": f, "incremental_share": round(i / f, 3)}


if __name__ == "__main__":
    main()
