"""File ingest throughput: N JSONL events -> SQLite and -> PostgreSQL, events/s and peak RSS.

Reference peer in the same run: the sqlite3 shell's ``.import`` of the same rows as CSV into a
plain table (no mapping, no indexes, no idempotency): the floor of what loading rows costs.

    python -m bench.ingest --events 1000000 [--pg URL]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import orjson

from bench.common import DATA, machine, measure_isolated

CONFIG = """
[pipeline]
name = "bench"
[[hops]]
name = "checkout"
next = ["payment"]
within = "15m"
[[hops]]
name = "payment"
[[sources]]
name = "checkout"
kind = "file"
path = "events-*.jsonl"
hop = "checkout"
order_id = "order.id"
timestamp = "ts"
attributes = ["amount", "customer.email"]
"""


def make_data(d: Path, n: int) -> tuple[Path, Path]:
    d.mkdir(parents=True, exist_ok=True)
    jl = d / "events-0.jsonl"
    csvp = d / "events.csv"
    if jl.exists() and csvp.exists() and sum(1 for _ in jl.open("rb")) == n:
        return jl, csvp
    rng = random.Random(1)
    t0 = 1_772_366_400
    with jl.open("wb") as fj, csvp.open("w") as fc:
        for i in range(n):
            ts = t0 + i * 0.05
            oid = f"WO-{i:08d}"
            amount = round(rng.uniform(5, 500), 2)
            email = f"c{i % 50000}@example.com"
            fj.write(
                orjson.dumps(
                    {
                        "order": {"id": oid},
                        "ts": f"{ts:.3f}",
                        "amount": amount,
                        "customer": {"email": email},
                    }
                )
                + b"\n"
            )
            fc.write(f"{oid},{ts:.3f},{amount},{email}\n")
    return jl, csvp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--pg", default=os.environ.get("ORDERTRAIL_TEST_PG_URL"))
    a = ap.parse_args()
    d = DATA / f"ingest-{a.events}"
    _, csvp = make_data(d, a.events)
    (d / "ordertrail.toml").write_text(CONFIG)
    exe = str(Path(sys.executable).parent / "ordertrail")
    results = []

    db = d / "bench.db"
    for p in d.glob("bench.db*"):
        p.unlink()
    m = measure_isolated(
        [
            exe,
            "--config",
            str(d / "ordertrail.toml"),
            "--db",
            f"sqlite:///{db}",
            "ingest",
            "--format",
            "json",
        ]
    )
    results.append(("ordertrail ingest -> SQLite", m.seconds, m.peak_rss_mb))

    if a.pg:
        from sqlalchemy import create_engine, text

        eng = create_engine(a.pg, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(text('DROP DATABASE IF EXISTS "ot_bench_ingest" WITH (FORCE)'))
            c.execute(text('CREATE DATABASE "ot_bench_ingest"'))
        url = a.pg.rsplit("/", 1)[0] + "/ot_bench_ingest"
        m = measure_isolated(
            [exe, "--config", str(d / "ordertrail.toml"), "--db", url, "ingest", "--format", "json"]
        )
        results.append(("ordertrail ingest -> PostgreSQL", m.seconds, m.peak_rss_mb))

    ref = d / "ref.db"
    ref.unlink(missing_ok=True)
    sqlite3 = shutil.which("sqlite3")
    if sqlite3:
        script = (
            "CREATE TABLE events(order_id TEXT, ts TEXT, amount REAL, email TEXT);\n"
            f".import --csv {csvp} events\n"
        )
        subprocess.run([sqlite3, str(ref)], input="", text=True, check=True)
        m = measure_isolated(
            [sqlite3, str(ref), "-cmd", script.splitlines()[0], f".import --csv {csvp} events"]
        )
        results.append(("sqlite3 .import CSV (reference)", m.seconds, m.peak_rss_mb))

    print(f"machine: {machine()}")
    print(f"events: {a.events:,}")
    print(f"{'run':40} {'seconds':>8} {'events/s':>10} {'peak RSS MB':>12}")
    for name, s, rss in results:
        print(f"{name:40} {s:8.2f} {a.events / s:10,.0f} {rss:12.0f}")
    if sqlite3:
        base = results[0][1]
        print(f"ratio ordertrail(SQLite) / sqlite3 .import: {base / results[-1][1]:.1f}x the time")


if __name__ == "__main__":
    main()
