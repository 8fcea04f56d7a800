"""Acceptance: an object-centric order log (the OCEL 2.0 "Order Management" shape).

tests/ocel/generate.py writes a JSON-OCEL 2.0 log of 120 orders (items, packages that mix
several orders' items of one customer, out-of-stock items reordered, orders paid before picking
or long after delivery, failed delivery attempts) and flattens it into one JSONL file per event
type as the sales, warehouse and shipment departments log them. Only sales events name an
order; ordertrail must join items and packages to their orders itself. Stuck orders are
injected (items never picked, a package never sent, a package lost while the order's other
packages arrive, a failed delivery never retried, an order never paid, ...).

Every stuck order must be flagged at the right hop with the objects concerned, and nothing else.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ordertrail.cli.main import cli
from ordertrail.collectors import file_sources, ingest_file_source
from ordertrail.schemas.config import load_config
from ordertrail.store import Store
from tests.ocel.generate import CONFIG, EVENT_TYPES, OBJECT_TYPES, Log, generate
from tests.realshapes.truth import finding_key, show


@dataclass
class Run:
    log: Log
    config: Path
    reports: dict[str, Any]
    findings: list[dict[str, Any]]


@pytest.fixture(scope="module")
def log() -> Log:
    return generate()


@pytest.fixture(scope="module")
def run(log: Log, tmp_path_factory: pytest.TempPathFactory) -> Run:
    from ordertrail.reconcile import reconcile

    root = tmp_path_factory.mktemp("ocel")
    cfg_path = log.write(root)
    cfg = load_config(cfg_path)
    assert cfg.store_url
    # the shipment department's files first: packages arrive before anyone says what is in them
    sources = sorted(
        file_sources(cfg), key=lambda s: ["shipment", "warehouse", "sales"].index(s.name)
    )
    with Store(cfg.store_url) as store:
        reports = {s.name: ingest_file_source(store, cfg, s) for s in sources}
        result = reconcile(store, cfg, as_of=log.as_of)
    return Run(log, cfg_path, reports, result.active())


# -- the log itself (independent of the engine) ----------------------------------------------


def test_config_loads() -> None:
    cfg = load_config(CONFIG)
    assert cfg.object_kind("package").via == "item"
    assert cfg.hop("picked").each == "item" and cfg.hop("delivered").each == "package"
    assert {s.name for s in cfg.sources} == {"sales", "warehouse", "shipment"}


def test_generator_is_deterministic(log: Log) -> None:
    again = generate()
    assert again.ocel == log.ocel and again.files == log.files
    assert again.expected == log.expected
    assert generate(seed=1).ocel != log.ocel


def test_the_log_is_json_ocel_2(log: Log) -> None:
    ocel = log.ocel
    assert [t["name"] for t in ocel["eventTypes"]] == EVENT_TYPES
    assert sorted(t["name"] for t in ocel["objectTypes"]) == OBJECT_TYPES
    ids = {o["id"] for o in ocel["objects"]}
    declared = {t["name"] for t in ocel["objectTypes"]}
    assert len(ids) == len(ocel["objects"])
    assert all(o["type"] in declared for o in ocel["objects"])
    for o in ocel["objects"]:
        assert all({"name", "time", "value"} == set(a) for a in o["attributes"])
        assert all(r["objectId"] in ids and r["qualifier"] for r in o["relationships"])
    for e in ocel["events"]:
        assert set(e) == {"id", "type", "time", "attributes", "relationships"}
        assert e["relationships"] and all(r["objectId"] in ids for r in e["relationships"])
    times = [e["time"] for e in ocel["events"]]
    assert times == sorted(times)
    # the flattened files hold every event once, each under its own type
    flat = [r for records in log.files.values() for r in records]
    assert sorted(r["ocel:eid"] for r in flat) == sorted(e["id"] for e in ocel["events"])
    for path, records in log.files.items():
        assert {r["ocel:activity"].replace(" ", "_") + ".jsonl" for r in records} == {
            path.rsplit("/", 1)[1]
        }


def test_the_log_is_object_centric(log: Log) -> None:
    order_of = {
        r["objectId"]: o["id"]
        for o in log.ocel["objects"]
        if o["type"] == "orders"
        for r in o["relationships"]
    }
    packages: dict[str, set[str]] = {}
    for e in log.ocel["events"]:
        if e["type"] == "create package":
            items = [r["objectId"] for r in e["relationships"] if r["qualifier"] == "item"]
            packages[e["relationships"][0]["objectId"]] = {order_of[i] for i in items}
    assert sum(len(os_) >= 2 for os_ in packages.values()) >= 10  # packages mix orders
    per_order: dict[str, int] = {}
    for os_ in packages.values():
        for o in os_:
            per_order[o] = per_order.get(o, 0) + 1
    assert sum(n >= 2 for n in per_order.values()) >= 20  # orders spread over packages
    kinds = {e["type"] for e in log.ocel["events"]}
    assert kinds == set(EVENT_TYPES)
    # only sales events name an order
    for path, records in log.files.items():
        named = any(r["ocel:type:orders"] for r in records)
        assert named == path.startswith("flat/sales/"), path


def test_ground_truth_agrees_with_the_oracle(log: Log) -> None:
    oracle = pytest.importorskip("tests.oracle")
    config = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    watermarks = {s["name"]: log.as_of + 86_400_000_000 for s in config["sources"]}
    got = {
        finding_key(f) for f in oracle.oracle_findings(config, log.events, log.as_of, watermarks)
    }
    want = {e.key for e in log.expected}
    assert got == want, f"missing:\n{show(want - got)}\nunexpected:\n{show(got - want)}"


# -- ordertrail on it ----------------------------------------------------------------------------


def test_ingest_stores_every_event(run: Run) -> None:
    for name, rep in run.reports.items():
        assert rep.quarantined == 0, (name, rep.reasons)
        assert rep.stored == sum(e["source"] == name for e in run.log.events), name


def test_every_stuck_order_is_flagged(run: Run) -> None:
    got = {finding_key(f) for f in run.findings}
    missed = [e for e in run.log.expected if e.key not in got]
    assert not missed, "missed:\n" + "\n".join(f"  {e.problem}: {e.key}" for e in missed)


def test_no_false_alarms(run: Run) -> None:
    clean = set(run.log.clean_orders)
    false = [finding_key(f) for f in run.findings if f.get("order_id") in clean]
    assert not false, f"{len(false)} findings on clean orders:\n{show(false)}"


def test_exactly_the_ground_truth(run: Run) -> None:
    got = {finding_key(f) for f in run.findings}
    want = {e.key for e in run.log.expected}
    assert got == want, f"missing:\n{show(want - got)}\nunexpected:\n{show(got - want)}"


def test_trace_a_mixed_package_shows_every_order_in_it(run: Run) -> None:
    package, orders = run.log.mixed_package
    r = CliRunner().invoke(
        cli, ["--config", str(run.config), "trace", package, "--as-of", run.log.as_of_iso]
    )
    assert r.exit_code == 0, r.output
    assert all(o in r.output for o in orders), (orders, r.output)
