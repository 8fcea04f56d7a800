"""A simulated pipeline of 50k orders with faults of every kind: precision and recall 1.0."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from ordertrail.collectors import file_sources, ingest_file_source
from ordertrail.reconcile import KINDS, reconcile
from ordertrail.schemas.config import load_config
from ordertrail.schemas.event import datetime_to_us
from ordertrail.simulation import Simulation
from ordertrail.store import Store


def _score(
    root: Path, url: str, sim: Simulation, source_order: list[str] | None = None
) -> dict[str, object]:
    res = sim.run(root)
    cfg = load_config(res.config_path)
    with Store(url) as s:
        srcs = file_sources(cfg)
        if source_order:
            srcs = sorted(srcs, key=lambda x: source_order.index(x.name))
        for src in srcs:
            ingest_file_source(s, cfg, src)
        r = reconcile(s, cfg, as_of=datetime_to_us(res.as_of))
        quarantined = s.count_quarantine()
    got = {(f["order_id"], f["kind"], f["hop"], f["from_hop"] or "") for f in r.active()}
    exp = set(res.expected)
    return {"got": got, "exp": exp, "res": res, "result": r, "quarantined": quarantined}


@pytest.mark.slow
def test_precision_and_recall_are_one_for_every_kind(tmp_path: Path) -> None:
    sim = Simulation(orders=50_000, seed=11, fault_rate=0.05)
    out = _score(tmp_path / "a", f"sqlite:///{tmp_path / 'a.db'}", sim)
    got, exp = out["got"], out["exp"]
    assert isinstance(got, set) and isinstance(exp, set)
    by_kind_exp = Counter(k[1] for k in exp)
    assert set(by_kind_exp) == set(KINDS), "the simulation must inject every kind"
    for kind in KINDS:
        g = {x for x in got if x[1] == kind}
        e = {x for x in exp if x[1] == kind}
        tp = len(g & e)
        assert tp == len(e) == len(g), f"{kind}: precision {tp}/{len(g)}, recall {tp}/{len(e)}"
    incidents = out["result"].incidents  # type: ignore[attr-defined]
    assert [(i["kind"], i["hop"]) for i in incidents] == [("hop_silent", "shipping")]
    assert out["quarantined"] == out["res"].malformed  # type: ignore[attr-defined]

    # the same faults, records shuffled within each source and sources ingested in another order
    sim2 = Simulation(orders=50_000, seed=11, fault_rate=0.05, shuffle=True, files_per_source=3)
    order = ["shipping", "cancellations", "warehouse", "confirmations", "payments", "checkout"]
    out2 = _score(tmp_path / "b", f"sqlite:///{tmp_path / 'b.db'}", sim2, order)
    assert out2["got"] == out2["exp"] == exp


def test_small_simulation_on_postgresql_equals_sqlite(tmp_path: Path, pg_url: str) -> None:
    sim = Simulation(orders=3000, seed=5)
    a = _score(tmp_path / "a", f"sqlite:///{tmp_path / 'a.db'}", sim)
    b = _score(tmp_path / "b", pg_url, sim)
    assert a["got"] == a["exp"]
    fa = [
        (f["order_id"], f["kind"], f["hop"], f["since"], f["detail"].split("; last event")[0])
        for f in a["result"].findings
    ]  # type: ignore[attr-defined]
    fb = [
        (f["order_id"], f["kind"], f["hop"], f["since"], f["detail"].split("; last event")[0])
        for f in b["result"].findings
    ]  # type: ignore[attr-defined]
    assert fa == fb
    assert a["result"].incidents == b["result"].incidents  # type: ignore[attr-defined]


def test_incremental_runs_match_a_full_run(tmp_path: Path) -> None:
    """Random interleavings of partial ingests and incremental runs end where one full run does."""
    sim = Simulation(orders=2500, seed=3, shuffle=True, files_per_source=4)
    res = sim.run(tmp_path / "sim")
    cfg = load_config(res.config_path)
    as_of = datetime_to_us(res.as_of)
    rng = random.Random(99)
    for trial in range(3):
        url = f"sqlite:///{tmp_path / f'inc{trial}.db'}"
        srcs = file_sources(cfg)
        rng.shuffle(srcs)
        with Store(url) as s:
            step = as_of - 3 * 86_400_000_000
            for src in srcs:
                ingest_file_source(s, cfg, src, batch_size=rng.choice([500, 5000]))
                if rng.random() < 0.7:
                    step = min(as_of, step + rng.randint(0, 86_400_000_000))
                    reconcile(s, cfg, as_of=step, incremental=True)
            inc = reconcile(s, cfg, as_of=as_of, incremental=True)
        with Store(f"sqlite:///{tmp_path / f'full{trial}.db'}") as s:
            for src in srcs:
                ingest_file_source(s, cfg, src)
            full = reconcile(s, cfg, as_of=as_of)
        key = lambda r: sorted((f["order_id"], f["kind"], f["hop"], f["from_hop"], f["since"], f["detail"])  # noqa: E731
                               for f in r.active())  # fmt: skip
        assert inc.run["mode"] == "incremental"
        assert key(inc) == key(full)
        assert inc.summary == full.summary
        assert inc.incidents == full.incidents
