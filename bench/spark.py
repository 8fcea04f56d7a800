"""Spark local[N] beside the local engine on the same window: wall time, CPU time and peak
memory of the whole process tree (the driver, Spark's JVM, its Python workers), with 1 and 2
executor cores, the time of each stage, and a check that both engines found the same.

    python -m bench.spark [--orders 1000000] [--cores 1 2] [--repeat 1] [--jdbc URL]

The data is bench/reconcile.py's (N orders, ~4.9 events each, SQLite); Spark reads it from the
Parquet files ``ordertrail export`` writes (the export is measured too). ``--jdbc URL`` also
copies the store into that PostgreSQL database and measures the local engine there and Spark
over JDBC (with each number of cores). Runs are paired: each configuration once per round, rounds repeated.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import DATA, machine
from bench.reconcile import AS_OF, CONFIG, S, build

HERE = Path(__file__).resolve().parent.parent


# -- measuring a process tree ---------------------------------------------------------------------


TICK = os.sysconf("SC_CLK_TCK")


def _tree(root: int, cpu: dict[int, float] | None = None) -> dict[int, tuple[str, int]]:
    """pid -> (command name, RSS bytes) of ``root`` and all its descendants (from /proc);
    ``cpu`` gets each one's CPU seconds so far (user + system: Spark's JVM is never waited for,
    so the children's rusage misses it)."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                rest = (p / "stat").read_text().rsplit(")", 1)[1].split()
                parent[int(p.name)] = int(rest[1])
                ticks[int(p.name)] = int(rest[11]) + int(rest[12])
            except (OSError, IndexError, ValueError):
                continue
    pids, todo = {root}, [root]
    while todo:
        x = todo.pop()
        for c, pp in parent.items():
            if pp == x and c not in pids:
                pids.add(c)
                todo.append(c)
    if cpu is not None:
        for pid in pids:
            if pid in ticks:
                cpu[pid] = max(cpu.get(pid, 0.0), ticks[pid] / TICK)
    out: dict[int, tuple[str, int]] = {}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        name = rss = None
        for line in status.splitlines():
            if line.startswith("Name:"):
                name = line.split()[1]
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
        if name and rss is not None:
            out[pid] = (name, rss)
    return out


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd``; wall and CPU seconds, and the peak of the tree's summed RSS (sampled every
    0.2 s) with the peak per kind of process (python, java)."""
    t0 = time.perf_counter()
    before = os.times()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    by_kind: dict[str, int] = {}
    sampled: dict[int, float] = {}
    while p.poll() is None:
        tree = _tree(p.pid, sampled)
        peak = max(peak, sum(r for _, r in tree.values()))
        kinds: dict[str, int] = {}
        for name, r in tree.values():
            k = "java" if name.startswith("java") else "python"
            kinds[k] = kinds.get(k, 0) + r
        for k, v in kinds.items():
            by_kind[k] = max(by_kind.get(k, 0), v)
        time.sleep(0.2)
    out, err = p.communicate()
    after = os.times()
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {err.strip()[-3000:]}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    cpu = max(cpu, sum(sampled.values()))  # the tree's, sampled every 0.2 s
    return {"seconds": time.perf_counter() - t0, "cpu": cpu, "peak_mb": peak / 2**20,
            "by_kind_mb": {k: v / 2**20 for k, v in by_kind.items()}, "out": out}  # fmt: skip


# -- one run, in its own process --------------------------------------------------------------


def _run(a: argparse.Namespace) -> None:
    """(in a child process) one reconcile; prints its summary, stage times and findings file."""
    from ordertrail.schemas.config import load_config
    from ordertrail.store import Store

    cfg = load_config(a.config)
    marks: list[tuple[str, float]] = []
    t0 = time.perf_counter()

    def progress(stage: str, done: int, total: int) -> None:
        marks.append((stage, round(time.perf_counter() - t0, 2)))

    with Store(a.db) as store:
        if a.engine == "local":
            from ordertrail.reconcile import reconcile

            r = reconcile(store, cfg, as_of=a.as_of, progress=progress)
        else:
            import dataclasses

            from ordertrail.reconcile.spark import reconcile_spark

            conf = dict(cfg.engine.spark_conf)
            conf.setdefault("spark.driver.memory", a.driver_memory)
            eng = dataclasses.replace(cfg.engine, spark_conf=tuple(sorted(conf.items())))
            cfg = dataclasses.replace(cfg, engine=eng)
            r = reconcile_spark(
                store, cfg, as_of=a.as_of, parquet=a.parquet, master=f"local[{a.cores}]",
                progress=progress,
            )  # fmt: skip
    keys = sorted(
        (f["order_id"] or "", f["kind"], f["hop"], f["from_hop"] or "", f["since"], f["detail"])
        for f in r.active()
    )
    Path(a.findings).write_text(json.dumps(keys))
    print(json.dumps({"summary": r.summary, "orders": r.run["orders"], "events": r.run["events"],
                      "stages": marks}))  # fmt: skip


def _cmd(engine: str, cfg: Path, db: str, findings: Path, **kw: Any) -> list[str]:
    cmd = [sys.executable, "-m", "bench.spark", "_run", "--engine", engine, "--config", str(cfg),
           "--db", db, "--as-of", str(AS_OF), "--findings", str(findings)]  # fmt: skip
    for k, v in kw.items():
        if v is not None:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    return cmd


def _copy_to_postgres(db: Path, url: str) -> None:
    """The SQLite store's events into a fresh PostgreSQL store (COPY into the month
    partitions of ``events``, created first, as ingest would)."""
    import sqlite3

    import psycopg
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from ordertrail.store import Store
    from ordertrail.store.retention import ensure_partitions

    u = make_url(url)
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{u.database}"'))
    admin.dispose()
    src = sqlite3.connect(db)
    lo, hi = src.execute("SELECT min(occurred_at), max(occurred_at) FROM events").fetchone()
    with Store(url) as store, store.engine.begin() as conn:
        day = 86400 * S
        ensure_partitions(conn, range(int(lo), int(hi) + day, day))
    cols = ("ingest_seq, event_id, source, order_id, order_bucket, hop, phase, occurred_at, "
            "source_ref, attributes, ingested_at, objects")  # fmt: skip
    plain = u.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain) as pg:
        with pg.cursor() as cur, cur.copy(f"COPY events ({cols}) FROM STDIN") as cp:
            for row in src.execute(f"SELECT {cols} FROM events ORDER BY ingest_seq"):
                cp.write_row(row)
        pg.execute(
            "SELECT setval(pg_get_serial_sequence('events', 'ingest_seq'), "
            "(SELECT max(ingest_seq) FROM events))"
        )
        pg.execute("ANALYZE events")
    src.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    r = sub.add_parser("_run")
    r.add_argument("--engine", choices=["local", "spark"], required=True)
    r.add_argument("--config", required=True)
    r.add_argument("--db", required=True)
    r.add_argument("--as-of", type=int, required=True)
    r.add_argument("--findings", required=True)
    r.add_argument("--parquet")
    r.add_argument("--cores", type=int, default=2)
    r.add_argument("--driver-memory", default="2g")
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--jdbc", metavar="URL", help="a PostgreSQL database to copy the store into")
    a = ap.parse_args()
    if a.cmd == "_run":
        _run(a)
        return
    n = a.orders
    d = DATA / f"reconcile-{n}"
    d.mkdir(parents=True, exist_ok=True)
    cfg = d / "ordertrail.toml"
    cfg.write_text(CONFIG)
    db = d / "store.db"
    if not db.exists():
        print(f"building {n:,} orders into {db} …", flush=True)
        build(db, n)
    sqlite = f"sqlite:///{db}"
    pq = d / "parquet"
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at start")
    ex = measure([sys.executable, "-m", "ordertrail", "--config", str(cfg), "--db", sqlite,
                  "export", "--parquet", str(pq), "--as-of", str(AS_OF // S)])  # fmt: skip
    print(
        f"export --parquet: {ex['seconds']:.1f} s, peak RSS {ex['peak_mb']:.0f} MB, "
        f"{sum(f.stat().st_size for f in pq.rglob('*.parquet')) / 2**20:.0f} MB of Parquet"
    )
    runs: list[tuple[str, list[str]]] = [
        ("local (SQLite)", _cmd("local", cfg, sqlite, d / "f-local.json"))
    ]
    for c in a.cores:
        runs.append((f"spark local[{c}] (Parquet)",
                     _cmd("spark", cfg, sqlite, d / f"f-spark{c}.json", parquet=pq, cores=c)))  # fmt: skip
    if a.jdbc:
        print(f"copying the store into {a.jdbc.rsplit('@', 1)[-1]} …", flush=True)
        _copy_to_postgres(db, a.jdbc)
        runs.append(("local (PostgreSQL)", _cmd("local", cfg, a.jdbc, d / "f-local-pg.json")))
        for c in a.cores:
            runs.append((f"spark local[{c}] (JDBC)",
                         _cmd("spark", cfg, a.jdbc, d / f"f-spark-jdbc{c}.json", cores=c)))  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    print(
        f"{'run':<28} {'wall s':>7} {'cpu s':>7} {'peak MB':>8} {'python MB':>10} {'java MB':>8}  stages"
    )
    results: dict[str, list[dict[str, Any]]] = {}
    for _ in range(a.repeat):
        for label, cmd in runs:
            m = measure(cmd, env)
            info = json.loads(m["out"].strip().splitlines()[-1])
            results.setdefault(label, []).append({**m, **info})
            stages = " ".join(f"{s}@{t}" for s, t in info["stages"])
            print(f"{label:<28} {m['seconds']:>7.1f} {m['cpu']:>7.1f} {m['peak_mb']:>8.0f} "
                  f"{m['by_kind_mb'].get('python', 0):>10.0f} {m['by_kind_mb'].get('java', 0):>8.0f}  "
                  f"{stages}", flush=True)  # fmt: skip
    want = json.loads((d / "f-local.json").read_text())
    for f in sorted(d.glob("f-*.json")):
        same = json.loads(f.read_text()) == want
        print(
            f"{f.stem}: {'the same findings as local (SQLite)' if same else 'DIFFERENT FINDINGS'}"
        )
    summary = results[runs[0][0]][-1]["summary"]
    print(
        f"summary: {summary}; {results[runs[0][0]][-1]['orders']:,} orders, "
        f"{results[runs[0][0]][-1]['events']:,} events"
    )


if __name__ == "__main__":
    main()
