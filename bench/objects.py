"""Objects cost: reconcile the v2 shop (items, split and mixed parcels, tracking numbers, a pickup
branch, ~10 events per order) beside the v1-shaped pipeline (~5 events per order) and DuckDB's
overdue-edge query, in the same run.

    python -m bench.objects --orders 1000000 [--repeat 3]

The shop's files come from ``bench.shop_data`` and are ingested once (the ingest rate is printed
too); the v1 store is built directly as in ``bench.reconcile``. Reconcile runs as a whole command
in its own process (wall time, peak RSS). The goal: objects cost at most 2x the v1 pipeline's time
per event. The run also checks that every injected fault was caught and nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

from bench.common import DATA, machine, measure_isolated
from bench.reconcile import AS_OF as V1_AS_OF
from bench.reconcile import CONFIG as V1_CONFIG
from bench.reconcile import S, build, duck_cmd


def shop_store(n: int, exe: str) -> tuple[Path, Path, dict[str, object], float]:
    """The shop's data ingested into SQLite (built once): (config, store, truth, ingest s)."""
    from bench.shop_data import make

    d = DATA / f"shop-{n}"
    cfg = d / "ordertrail.toml"
    db = d / "ordertrail.db"
    done = d / "ingested.json"
    if not done.exists():
        for p in d.glob("ordertrail.db*"):
            p.unlink()
        make(d, n)
        t0 = time.perf_counter()
        m = measure_isolated([exe, "--config", str(cfg), "ingest", "--format", "json"])
        done.write_text(json.dumps({"seconds": time.perf_counter() - t0, "rss": m.peak_rss_mb}))
    truth = json.loads((d / "expected.json").read_text())
    return cfg, db, truth, float(json.loads(done.read_text())["seconds"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--no-duckdb", action="store_true")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run both reconciles this many times, alternating; report medians",
    )
    a = ap.parse_args()
    exe = str(Path(sys.executable).parent / "ordertrail")
    n = a.orders
    print(f"machine: {machine()}")

    # the v1-shaped pipeline, same engine, same run
    v1 = DATA / f"reconcile-{n}"
    v1.mkdir(parents=True, exist_ok=True)
    (v1 / "ordertrail.toml").write_text(V1_CONFIG)
    v1db = v1 / "store.db"
    if not v1db.exists():
        build(v1db, n)
    out1 = v1 / "result.json"
    cmd1 = [exe, "--config", str(v1 / "ordertrail.toml"), "--db", f"sqlite:///{v1db}",
            "reconcile", "--as-of", str(V1_AS_OF // S), "--format", "json", "--output", str(out1)]  # fmt: skip
    dk = float("nan") if a.no_duckdb else measure_isolated(duck_cmd(v1db)).seconds

    cfg, db, truth, ingest_s = shop_store(n, exe)
    as_of = datetime.fromisoformat(str(truth["as_of"])).strftime("%Y-%m-%dT%H:%M:%SZ")
    out2 = db.parent / "result.json"
    cmd2 = [exe, "--config", str(cfg), "reconcile", "--as-of", as_of, "--format", "json",
            "--output", str(out2)]  # fmt: skip
    runs1, runs2 = [], []
    for _ in range(max(1, a.repeat)):  # alternating, so that the machine's moods hit both
        runs1.append(measure_isolated(cmd1))
        runs2.append(measure_isolated(cmd2))
    if a.repeat > 1:
        print("v1 shape runs (s): " + ", ".join(f"{m.seconds:.1f}" for m in runs1))
        print("shop runs (s):     " + ", ".join(f"{m.seconds:.1f}" for m in runs2))
    m1 = sorted(runs1, key=lambda m: m.seconds)[(len(runs1) - 1) // 2]  # the median (lower)
    m2 = sorted(runs2, key=lambda m: m.seconds)[(len(runs2) - 1) // 2]
    r1 = json.loads(out1.read_text())
    r2 = json.loads(out2.read_text())
    ev1, ev2 = r1["run"]["events"], r2["run"]["events"]
    us1, us2 = m1.seconds / ev1 * 1e6, m2.seconds / ev2 * 1e6

    def key(f: dict[str, object]) -> tuple[object, ...]:
        objs = f.get("objects") or []
        return (f["order_id"] or "", f["kind"], f["hop"], f["from_hop"] or "", tuple(sorted(objs)))  # type: ignore[arg-type]

    exp_keys = {key(f) for f in truth["expected"]}  # type: ignore[attr-defined]
    got_keys = {key(f) for f in r2["findings"] if f["status"] in ("new", "open")}
    missed, extra = len(exp_keys - got_keys), len(got_keys - exp_keys)
    print(
        f"{'pipeline':<22} {'orders':>10} {'events':>11} {'reconcile s':>12} {'µs/event':>9} {'peak RSS MB':>12}"
    )
    print(
        f"{'v1 shape':<22} {n:>10,} {ev1:>11,} {m1.seconds:>12.1f} {us1:>9.2f} {m1.peak_rss_mb:>12.0f}"
    )
    print(
        f"{'shop (objects)':<22} {n:>10,} {ev2:>11,} {m2.seconds:>12.1f} {us2:>9.2f} {m2.peak_rss_mb:>12.0f}"
    )
    print(f"objects cost per event: {us2 / us1:.2f}x the v1 shape's (goal <= 2x)")
    print(f"DuckDB overdue-edge query on the v1 store (query only): {dk:.2f} s; "
          f"reconcile takes {m1.seconds / dk:.0f}x its time")  # fmt: skip
    print(
        f"shop ingest: {truth['records']:,} records in {ingest_s:.0f} s ({int(truth['records']) / ingest_s:,.0f} records/s)"
    )  # type: ignore[call-overload]
    print(
        f"caught: {len(exp_keys) - missed:,} of {len(exp_keys):,} expected findings; extra: {extra}"
    )


if __name__ == "__main__":
    main()
