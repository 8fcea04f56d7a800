"""Benchmark data: the v2 shop simulation (items, split and mixed parcels, tracking numbers),
streamed to files, with the findings it must produce.

    python -m bench.shop_data --orders 1000000 [--out DIR] [--seed S] [--files N] [--shuffle]

A million orders (~2.9 items each) make ~10M stored events in ~15M records, written in a few
minutes with flat memory (the generator keeps no events). Beside the data it writes
``expected.json``: as_of, the counts, and every finding the faults must produce, so a
benchmark can check what it caught.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import orjson

from bench.common import DATA
from ordertrail.simulation.shop import ShopSimulation


def make(out: Path, orders: int, seed: int = 7, files: int = 4, shuffle: bool = False) -> Path:
    """Write the data under ``out`` (replacing earlier data) and return its config path."""
    shutil.rmtree(out / "data", ignore_errors=True)
    sim = ShopSimulation(
        orders=orders, seed=seed, files_per_source=files, shuffle=shuffle, keep_events=False
    )
    res = sim.run(out)
    truth = {
        "as_of": res.as_of.isoformat(),
        "orders": res.orders,
        "events": res.events,
        "records": res.records,
        "malformed": res.malformed,
        "filtered": dict(res.filtered),
        "faults": dict(res.faults),
        "by_kind": dict(res.expected_by_kind()),
        "expected": [
            {"order_id": k[0] or None, "kind": k[1], "hop": k[2], "from_hop": k[3] or None,
             "objects": list(k[4]), "fault": v}
            for k, v in sorted(res.expected.items())
        ],
    }  # fmt: skip
    (out / "expected.json").write_bytes(orjson.dumps(truth))
    return res.config_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--files", type=int, default=4, help="files per source")
    ap.add_argument("--shuffle", action="store_true", help="records in random order per file")
    a = ap.parse_args()
    out = a.out or DATA / f"shop-{a.orders}"
    t0 = time.perf_counter()
    cfg = make(out, a.orders, a.seed, a.files, a.shuffle)
    truth = orjson.loads((out / "expected.json").read_bytes())
    print(
        f"{a.orders:,} orders: {truth['events']:,} events in {truth['records']:,} records, "
        f"{len(truth['expected']):,} expected findings, {time.perf_counter() - t0:.0f}s -> {cfg}"
    )


if __name__ == "__main__":
    main()
