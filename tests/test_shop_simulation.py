"""The v2 shop simulation: files that parse, a ground truth the oracle agrees with, and an engine
that catches every injected fault — precision and recall 1.0 per finding kind — and nothing on
the controls, whatever the order of records and of sources."""

from __future__ import annotations

import csv
import gzip
import json
import tomllib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from ordertrail.collectors import file_sources, ingest_file_source
from ordertrail.collectors.file import FileSource
from ordertrail.reconcile import KINDS, reconcile
from ordertrail.schemas.config import load_config
from ordertrail.schemas.event import OrderEvent, datetime_to_us
from ordertrail.simulation.shop import (
    CONTROL_KINDS,
    FAULT_KINDS,
    LONGEST_PATH,
    PICKS_HEADER,
    SHOP_CONFIG,
    SINK_READERS,
    FindingKey,
    ShopResult,
    ShopSimulation,
    finding_key,
)
from ordertrail.store import Store
from tests.oracle import oracle_findings

# -- the simulator on its own ------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> ShopResult:
    return ShopSimulation(orders=2000, seed=7).run(tmp_path_factory.mktemp("shop"))


def test_config_loads_with_every_v2_feature(small: ShopResult) -> None:
    cfg = load_config(small.config_path)
    assert [o.name for o in cfg.objects] == ["item", "parcel", "shipment"]
    assert cfg.object_kind("shipment").via == "parcel"
    assert cfg.hop("packed").next_any == ("shipped", "ready_for_pickup")
    assert cfg.hop("payment").unique_by == "payment_ref"
    assert cfg.source("stripe").attributes["amount"].scale == 0.01
    assert cfg.source("picks").timestamp_format == "%d.%m.%Y %H:%M"
    assert cfg.source("carrier").order_id is None
    assert cfg.entry_hops == ("checkout",)
    # the simulator's own constants follow the config
    assert cfg.longest_path == LONGEST_PATH


def test_files_parse(small: ShopResult) -> None:
    """Every source finds files, and every record parses, but for the malformed ones."""
    cfg = load_config(small.config_path)
    paths: set[Path] = set()
    for src in file_sources(cfg):
        fs = FileSource(src)
        assert fs.paths(), f"{src.name}: no files"
        paths.update(Path(fs.full(p)) for p in fs.paths())
    fmt = cfg.source("picks").timestamp_format or ""
    broken = lines = 0
    for path in paths:
        raw = _read(path)
        if path.suffix == ".csv":
            rows = list(csv.reader(raw.decode().splitlines()))
            assert tuple(rows[0]) == PICKS_HEADER
            for row in rows[1:]:
                datetime.strptime(row[5], fmt)
                assert row[2].isdigit()
            lines += len(rows) - 1
            continue
        for line in raw.splitlines():
            lines += 1
            try:
                assert isinstance(orjson.loads(line), dict)
            except orjson.JSONDecodeError:
                broken += 1  # the truncated records among the malformed ones
    assert lines == small.records
    assert 0 < broken < small.malformed
    # files that two sources read (with different `where`) hold no malformed record
    assert {n for n, readers in SINK_READERS.items() if len(readers) > 1} == {"stripe", "mail"}


def test_every_kind_and_fault_is_injected(small: ShopResult) -> None:
    assert set(small.expected_by_kind()) == set(KINDS)
    assert set(small.faults) == set(FAULT_KINDS)
    assert set(small.controls) == set(CONTROL_KINDS)
    for key, fault in small.expected.items():
        assert (key[1], key[2], key[3]) in FAULT_KINDS[fault]
    # the objects each fault names
    by_fault: dict[str, list[FindingKey]] = {}
    for key, fault in small.expected.items():
        by_fault.setdefault(fault, []).append(key)
    for key in by_fault["item_never_picked"]:
        assert len(key[4]) == 1 and key[4][0].startswith("item:")
    for key in by_fault["parcel_lost"]:
        assert len(key[4]) == 1 and key[4][0].startswith("shipment:")
    for key in by_fault["unlinked_scan"]:
        assert key[0] == "" and key[4][0].startswith("shipment:1Z")
    for key in by_fault["carrier_outage"]:
        assert key[4] and all(o.startswith("shipment:") for o in key[4])
    assert not set(small.control_orders) & {k[0] for k in small.expected}


def test_streamed_benchmark_data_is_the_same_data(tmp_path: Path) -> None:
    """Without kept events (the benchmark mode) the files and counts are the same."""
    a = ShopSimulation(orders=800, seed=3).run(tmp_path / "a")
    b = ShopSimulation(orders=800, seed=3, keep_events=False).run(tmp_path / "b")
    assert b.event_list is None and a.event_list is not None
    assert (a.events, a.records, a.malformed, a.filtered, a.expected, a.faults) == (
        b.events,
        b.records,
        b.malformed,
        b.filtered,
        b.expected,
        b.faults,
    )
    assert len(a.event_list) == a.events
    files = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    for rel in files:
        fa, fb = tmp_path / "a" / rel, tmp_path / "b" / rel
        assert _read(fa) == _read(fb), rel
    # shuffled through a small buffer and split differently: the same records
    c = ShopSimulation(orders=800, seed=3, shuffle=True, shuffle_buffer=50, files_per_source=3)
    rc = c.run(tmp_path / "c")
    assert rc.expected == a.expected and rc.filtered == a.filtered
    assert _records(tmp_path / "a") == _records(tmp_path / "c")
    assert _records(tmp_path / "a") != _records(tmp_path / "c", ordered=True)


def _read(p: Path) -> bytes:
    raw = p.read_bytes()
    return gzip.decompress(raw) if p.suffix == ".gz" else raw


def _records(root: Path, ordered: bool = False) -> Any:
    out: list[tuple[str, bytes]] = []
    for p in sorted((root / "data").rglob("*")):
        if p.is_file():
            raw = _read(p)
            kind = p.parent.name + "/" + p.name.split("-")[0]
            out.extend((kind, line) for line in raw.splitlines() if not line.startswith(b"pick_id"))
    return out if ordered else Counter(out)


def test_bad_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="days"):
        ShopSimulation(orders=10, days=30).run(tmp_path)
    with pytest.raises(ValueError, match="outage_hours"):
        ShopSimulation(orders=10, outage_hours=2).run(tmp_path)


# -- the ground truth against the oracle ------------------------------------------------------


def _oracle_input(
    res: ShopResult,
) -> tuple[dict[str, Any], list[dict[str, Any]], int, dict[str, int | None]]:
    assert res.event_list is not None
    as_of = datetime_to_us(res.as_of)
    config = tomllib.loads(SHOP_CONFIG)
    events = [_as_dict(e) for e in res.event_list]
    # files are complete when read: their watermark (modification time) is past as_of
    watermarks: dict[str, int | None] = {
        s["name"]: as_of + 86_400_000_000 for s in config["sources"]
    }
    return config, events, as_of, watermarks


def _as_dict(e: OrderEvent) -> dict[str, Any]:
    return {
        "source": e.source,
        "event_id": e.event_id,
        "order_id": e.order_id,
        "objects": e.objects,
        "hop": e.hop,
        "phase": e.phase,
        "occurred_at": e.occurred_at,
        "attributes": e.attributes,
    }


@pytest.mark.parametrize(
    "params",
    [
        {"orders": 2000, "seed": 7},
        {"orders": 1500, "seed": 3, "fault_rate": 0.3, "control_rate": 0.2},
        # the autumn clock change (Berlin local times in the warehouse files), a short window
        {"orders": 1500, "seed": 10, "days": 14, "as_of": datetime(2026, 10, 26, 6, tzinfo=UTC)},
        {"orders": 1500, "seed": 13, "split_rate": 0.9, "mix_rate": 0.9, "outage_hours": 120},
    ],
    ids=["default", "many-faults", "dst-short-window", "split-mixed-long-outage"],
)
def test_expected_findings_are_the_oracles(tmp_path: Path, params: dict[str, Any]) -> None:
    """The simulator's ground truth, reasoned per fault, equals an independent reading of the
    semantics run over the simulator's own events (before they were written to files)."""
    res = ShopSimulation(**params).run(tmp_path)
    got = oracle_findings(*_oracle_input(res))
    assert {finding_key(f) for f in got} == set(res.expected)
    assert len(got) == len(res.expected)
    assert not [f for f in got if f["order_id"] in res.control_orders]


def test_ingested_events_are_the_simulated_events(tmp_path: Path, small: ShopResult) -> None:
    """What the sources store from the files is the simulator's event list (ids aside), and
    the filtered and quarantined counts are the simulator's."""
    cfg = load_config(small.config_path)
    with Store(f"sqlite:///{tmp_path / 'e.db'}") as s:
        reports = {src.name: ingest_file_source(s, cfg, src) for src in file_sources(cfg)}
        assert s.count_quarantine() == small.malformed
        with s.engine.connect() as c:
            rows = c.execute(
                text(
                    "SELECT source, order_id, hop, phase, occurred_at, objects, attributes "
                    "FROM events"
                )
            ).all()
    assert {n: r.filtered for n, r in reports.items() if r.filtered} == dict(small.filtered)
    assert small.event_list is not None

    def norm(
        source: str, oid: str | None, hop: str, phase: str, t: int, objects: Any, attrs: Any
    ) -> tuple[Any, ...]:
        o = tuple(sorted((k, tuple(sorted(v))) for k, v in (objects or {}).items()))
        a = tuple(sorted((k, round(v, 6) if isinstance(v, float) else v) for k, v in attrs.items()))
        return (source, oid or "", hop, phase, t, o, a)

    got = Counter(
        norm(r[0], r[1], r[2], r[3], r[4], json.loads(r[5] or "{}"), json.loads(r[6] or "{}"))
        for r in rows
    )
    exp = Counter(
        norm(e.source, e.order_id, e.hop, e.phase, e.occurred_at, e.objects, e.attributes)
        for e in small.event_list
    )
    assert got == exp


# -- the engine: precision and recall ----------------------------------------------------------


def _score(
    root: Path, url: str, sim: ShopSimulation, source_order: list[str] | None = None
) -> dict[str, Any]:
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
    return {
        "got": {finding_key(f) for f in r.active()},
        "res": res,
        "result": r,
        "quarantined": quarantined,
    }


def _assert_caught(out: dict[str, Any]) -> None:
    got: set[FindingKey] = out["got"]
    res: ShopResult = out["res"]
    exp = set(res.expected)
    assert set(res.expected_by_kind()) == set(KINDS), "the simulation must inject every kind"
    problems = []
    for kind in KINDS:
        g = {x for x in got if x[1] == kind}
        e = {x for x in exp if x[1] == kind}
        tp = len(g & e)
        if not tp == len(e) == len(g):
            problems.append(
                f"{kind}: precision {tp}/{len(g)}, recall {tp}/{len(e)}; "
                f"missed {sorted(e - g)[:3]}, extra {sorted(g - e)[:3]}"
            )
    assert not problems, "\n".join(problems)
    on_controls = [k for k in got if k[0] in res.control_orders]
    assert not on_controls, on_controls[:5]
    incidents = out["result"].incidents
    assert [(i["kind"], i["hop"]) for i in incidents] == [("hop_silent", "delivered")]
    assert out["quarantined"] == res.malformed


# sources in an order where carrier scans are stored before the labels that link them
REVERSED = [
    "carrier",
    "cancellations",
    "labels",
    "packing",
    "picks",
    "mail-pickup",
    "mail-confirmation",
    "stripe-checkout",
    "stripe",
    "shop",
]


def test_small_shop_precision_and_recall(tmp_path: Path) -> None:
    sim = ShopSimulation(orders=2000, seed=7)
    out = _score(tmp_path / "a", f"sqlite:///{tmp_path / 'a.db'}", sim)
    _assert_caught(out)
    sim2 = ShopSimulation(orders=2000, seed=7, shuffle=True, files_per_source=3)
    out2 = _score(tmp_path / "b", f"sqlite:///{tmp_path / 'b.db'}", sim2, REVERSED)
    assert out2["res"].expected == out["res"].expected
    assert out2["got"] == out["got"]


@pytest.mark.slow
def test_50k_shop_precision_and_recall(tmp_path: Path) -> None:
    sim = ShopSimulation(orders=50_000, seed=11, fault_rate=0.05)
    out = _score(tmp_path / "a", f"sqlite:///{tmp_path / 'a.db'}", sim)
    _assert_caught(out)
    by_kind = out["res"].expected_by_kind()
    assert min(by_kind.values()) >= 20, by_kind
    # the same faults, records shuffled within each file and sources ingested in another order
    sim2 = ShopSimulation(orders=50_000, seed=11, fault_rate=0.05, shuffle=True, files_per_source=3)
    out2 = _score(tmp_path / "b", f"sqlite:///{tmp_path / 'b.db'}", sim2, REVERSED)
    assert out2["res"].expected == out["res"].expected
    assert out2["got"] == out["got"]


def test_small_shop_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """Links, resolution through parcels and tracking numbers, and the findings, on PostgreSQL."""
    sim = ShopSimulation(orders=1500, seed=5)
    out = _score(tmp_path / "pg", pg_url, sim, REVERSED)
    assert out["got"] == set(out["res"].expected)
    assert not [k for k in out["got"] if k[0] in out["res"].control_orders]
