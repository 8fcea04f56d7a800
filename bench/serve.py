"""`ordertrail serve` on the 1M-order demo shop: searching a tracking number shows its order
(the redirect and the order page, over HTTP), median of 20; and the other pages once warm.

    python -m bench.serve --orders 1000000        # target: median < 200 ms

The shop's store comes from ``bench.objects`` (built and ingested once under bench/data/shop-N,
reconciled here if it has no run yet). The server runs as the real command in its own process,
judged ``--as-of`` the shop's end; the client is httpx2 over loopback.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from bench.common import machine, measure_isolated


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--lookups", type=int, default=20)
    a = ap.parse_args()
    import httpx2

    from bench.objects import shop_store

    exe = str(Path(sys.executable).parent / "ordertrail")
    cfg, db, truth, _ = shop_store(a.orders, exe)
    as_of = datetime.fromisoformat(str(truth["as_of"])).strftime("%Y-%m-%dT%H:%M:%SZ")
    con = sqlite3.connect(db)
    if not con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'runs'").fetchone()[0] or (
        not con.execute("SELECT count(*) FROM runs WHERE status = 'done'").fetchone()[0]
    ):
        m = measure_isolated([exe, "--config", str(cfg), "reconcile", "--as-of", as_of,
                              "--format", "json", "--output", "/dev/null"])  # fmt: skip
        print(f"reconciled the store first: {m.seconds:.1f}s")
    rng = random.Random(11)
    lost = sorted(
        {o.partition(":")[2] for f in truth["expected"] for o in f["objects"]
         if o.startswith("shipment:")}
    )  # fmt: skip
    n_ship = con.execute("SELECT max(rowid) FROM event_objects").fetchone()[0]
    anyone: list[str] = []
    while len(anyone) < a.lookups:
        row = con.execute(
            "SELECT object_id FROM event_objects WHERE rowid >= ? AND kind = 'shipment' LIMIT 1",
            (rng.randrange(n_ship),),
        ).fetchone()
        if row:
            anyone.append(row[0])
    con.close()
    picks = (
        rng.sample(lost, min(len(lost), a.lookups // 2))
        + anyone[: a.lookups - min(len(lost), a.lookups // 2)]
    )
    rng.shuffle(picks)

    port = _free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [exe, "--config", str(cfg), "serve", "--listen", f"127.0.0.1:{port}", "--as-of", as_of],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx2.Client(base_url=base, follow_redirects=True, timeout=120) as c:
            while True:
                try:
                    h = c.get("/healthz")
                    if h.status_code == 200 and h.text == "ok\n":  # warmed up
                        break
                except httpx2.HTTPError:
                    pass
                if proc.poll() is not None:
                    raise SystemExit(f"serve exited: {proc.stderr.read() if proc.stderr else ''}")
                time.sleep(0.1)
            startup = time.perf_counter() - t0  # until the shared window is warm
            t = time.perf_counter()
            first = c.get("/search", params={"q": picks[0]})
            cold = time.perf_counter() - t
            assert first.status_code == 200 and "/order/" in str(first.url), first.url
            ms = []
            for tn in picks:
                t = time.perf_counter()
                r = c.get("/search", params={"q": tn})
                ms.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200 and "/order/" in str(r.url), (tn, r.url)
                assert tn in r.text and "Timeline" in r.text
            others = {}
            for path in ("/", "/incidents", "/status", "/metrics", "/incidents.csv"):
                c.get(path)  # warm (the status page's last-event scan is cached for 60 s)
                ts = []
                for _ in range(5):
                    t = time.perf_counter()
                    r = c.get(path)
                    ts.append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200, path
                others[path] = (statistics.median(ts), len(r.content))
    finally:
        proc.terminate()
        proc.wait(30)
    q = statistics.quantiles(ms, n=10)
    print(f"machine: {machine()}")
    print(f"store: {truth['events']:,} events, {truth['orders']:,} orders (SQLite), {db}")
    print(f"serve up and warm in {startup:.1f}s; first search {cold * 1000:.0f} ms")
    print(
        f"search tracking number -> order page, median of {len(ms)}: "
        f"{statistics.median(ms):.0f} ms (p90 {q[-1]:.0f} ms, max {max(ms):.0f} ms)  target < 200 ms"
    )
    for path, (med, size) in others.items():
        print(f"  {path:16} median of 5 (warm) {med:7.1f} ms   {size:,} bytes")
    print(json.dumps({"search_median_ms": statistics.median(ms), "p90_ms": q[-1], "cold_ms": cold * 1000,
                      "pages_ms": {k: v[0] for k, v in others.items()}}))  # fmt: skip


if __name__ == "__main__":
    main()
