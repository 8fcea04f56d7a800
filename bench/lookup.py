"""Support lookups on a big store: `trace` by order id and `search --attr` on an indexed
attribute, median over 20 random lookups, in-process (the library call) and as a command
(including Python's start-up).

    python -m bench.lookup --orders 2100000      # ~10M events
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import DATA, machine
from bench.reconcile import AS_OF, CONFIG, S, build


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=2_100_000)
    ap.add_argument("--lookups", type=int, default=20)
    a = ap.parse_args()
    from ordertrail.report.search import ensure_attribute_indexes, search_orders
    from ordertrail.report.trace import build_trail
    from ordertrail.schemas.config import load_config
    from ordertrail.store import Store

    d = DATA / f"lookup-{a.orders}"
    d.mkdir(parents=True, exist_ok=True)
    cfg_path = d / "ordertrail.toml"
    cfg_path.write_text(
        CONFIG.replace('name = "bench"', 'name = "bench"\nsearchable = ["customer.email"]')
    )
    db = d / "store.db"
    url = f"sqlite:///{db}"
    if not db.exists():
        t0 = time.perf_counter()
        n_events = build(db, a.orders)
        print(f"built {n_events:,} events in {time.perf_counter() - t0:.0f}s")
    cfg = load_config(cfg_path)
    store = Store(url)
    t0 = time.perf_counter()
    ensure_attribute_indexes(store, cfg.pipeline.searchable)
    print(f"attribute index ready in {time.perf_counter() - t0:.1f}s")
    events = store.max_ingest_seq()
    rng = random.Random(3)
    picks = [rng.randrange(a.orders) for _ in range(a.lookups)]
    trace_ms = []
    for i in picks:
        t0 = time.perf_counter()
        trail = build_trail(store, cfg, f"O{i:09d}", AS_OF)
        trace_ms.append((time.perf_counter() - t0) * 1000)
        assert trail.events
    search_ms = []
    for i in picks:
        t0 = time.perf_counter()
        found = search_orders(store, cfg, attrs=[("customer.email", f"c{i}@example.com")])
        search_ms.append((time.perf_counter() - t0) * 1000)
        assert [o["order_id"] for o in found] == [f"O{i:09d}"]
    store.close()
    exe = str(Path(sys.executable).parent / "ordertrail")
    cli_ms = []
    for i in picks[:5]:
        t0 = time.perf_counter()
        subprocess.run([exe, "--config", str(cfg_path), "--db", url, "trace", f"O{i:09d}", "--as-of",
                        str(AS_OF // S), "--format", "json"], check=True, capture_output=True)  # fmt: skip
        cli_ms.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import ordertrail.cli.main, ordertrail.report.trace"], check=True
    )
    startup_ms = (time.perf_counter() - t0) * 1000

    def show(name: str, xs: list[float]) -> None:
        q = statistics.quantiles(xs, n=10)
        print(
            f"{name:44} median {statistics.median(xs):7.1f} ms   p90 {q[-1]:7.1f} ms   (n={len(xs)})"
        )

    print(f"machine: {machine()}")
    print(f"store: {events:,} events, {a.orders:,} orders (SQLite)")
    show("trace, library call (build_trail)", trace_ms)
    show("search --attr customer.email, library call", search_ms)
    show("ordertrail trace ... (whole command)", cli_ms)
    print(f"{'python start-up + imports alone':44} {startup_ms:7.1f} ms")


if __name__ == "__main__":
    main()
