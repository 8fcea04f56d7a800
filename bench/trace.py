"""Fast start for support: ``ordertrail trace ID`` and ``ordertrail --help`` as whole commands
(a new process each, wall time, median of 20) on the 1M-order reconcile store.

    python -m bench.trace                                  # target: trace median <= 0.3 s
    python -m bench.trace --store /tmp/copy/store.db --config /tmp/copy/ordertrail.toml

The store is opened as ``trace`` opens it: one made by an older ordertrail is migrated on the
first run (pass a copy to keep the original as it is). One unmeasured run of each command
first, so that Python's bytecode caches exist as they do after an install; the order id is the
first one stored unless ``--id`` names one, traced as of the reconcile benchmark's time
(its orders lie in the lookback window then) unless ``--as-of`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import machine

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data" / "reconcile-1000000"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _first_order(store: Path) -> str:
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT order_id FROM events WHERE order_id <> '' LIMIT 1").fetchone()
    finally:
        con.close()
    if row is None:
        raise SystemExit(f"no orders in {store}")
    return str(row[0])


def _median(cmd: list[str], runs: int, env: dict[str, str]) -> dict[str, float]:
    subprocess.run(cmd, check=True, capture_output=True, env=env)  # warm-up, bytecode caches
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - t0)
    return {
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", type=Path, default=DATA / "store.db", help="SQLite store file")
    ap.add_argument("--config", type=Path, default=DATA / "ordertrail.toml")
    ap.add_argument("--id", dest="order_id", help="the order to trace (default: the first)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument(
        "--as-of",
        default="1769817600",
        help="trace as of this time (default: the reconcile benchmark's, so that the order lies "
        "in the lookback window; 'now' traces as of now, when the benchmark's orders are old)",
    )
    a = ap.parse_args()
    order_id = a.order_id or _first_order(a.store)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    base = [sys.executable, "-m", "ordertrail"]
    store_args = ["--config", str(a.config), "--db", f"sqlite:///{a.store.resolve()}"]
    when = [] if a.as_of == "now" else ["--as-of", a.as_of]
    trace_cmd = [*base, *store_args, "trace", order_id, *when]
    out = {
        "trace": _median(trace_cmd, a.runs, env),
        "help": _median([*base, "--help"], a.runs, env),
        "runs": a.runs,
        "order_id": order_id,
        "command": " ".join(["ordertrail", *store_args, "trace", order_id, *when]),
        "store": str(a.store),
        "nproc": os.cpu_count(),
        "cpu": _cpu(),
        "machine": machine(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
