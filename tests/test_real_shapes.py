"""Acceptance: webhook bodies in the exact shapes Shopify, Stripe and EasyPost publish.

~300 orders (tests/realshapes/generate.py), 24 of them with real problems plus two carrier
scans nobody ordered and one payment for an order Shopify never sent; the rest are clean,
including everything that fooled v1: local pickup, split shipments delivered in full, Stripe's
other event types, two success events for one payment intent, amounts in cents, lowercase
currencies, carrier scans that name only a tracking number and arrive before the fulfilment
that names it. The config (tests/realshapes/ordertrail.toml) is what a user writes after
reading DESIGN.md; it is the README's worked example.

Every problem must be caught with the right kind, hop, from_hop and objects; clean orders must
produce nothing at all.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from ordertrail.cli.main import cli
from ordertrail.collectors import file_sources, ingest_file_source
from ordertrail.schemas.config import load_config
from ordertrail.store import Store
from tests.realshapes.generate import CONFIG, Dataset, generate
from tests.realshapes.truth import finding_key, show

# carrier scans first: they arrive before the fulfilments that name their tracking numbers
INGEST_ORDER = [
    "easypost",
    "stripe",
    "shopify-pickup",
    "shopify-cancellations",
    "shopify-orders",
    "shopify-fulfillments",
]


@dataclass
class Run:
    ds: Dataset
    config: Path
    reports: dict[str, Any]
    findings: list[dict[str, Any]]


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return generate()


@pytest.fixture(scope="module")
def run(dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Run:
    from ordertrail.reconcile import reconcile

    root = tmp_path_factory.mktemp("realshapes")
    cfg_path = dataset.write(root)
    cfg = load_config(cfg_path)
    assert cfg.store_url
    sources = sorted(file_sources(cfg), key=lambda s: INGEST_ORDER.index(s.name))
    with Store(cfg.store_url) as store:
        reports = {s.name: ingest_file_source(store, cfg, s) for s in sources}
        result = reconcile(store, cfg, as_of=dataset.as_of)
    return Run(dataset, cfg_path, reports, result.active())


# -- the data set itself (independent of the engine) ------------------------------------------


def test_config_loads() -> None:
    cfg = load_config(CONFIG)
    assert [o.name for o in cfg.objects] == ["item", "shipment"]
    assert cfg.hop("fulfilled").next_any == ("shipped", "ready_for_pickup")
    assert cfg.hop("payment").unique_by == "payment_ref"
    stripe = cfg.source("stripe")
    assert stripe.attributes["amount"].scale == 0.01
    assert stripe.attributes["currency"].case == "upper"
    assert set(stripe.where["type"]) == {
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
    }
    assert cfg.source("easypost").order_id is None


def test_generator_is_deterministic(dataset: Dataset) -> None:
    again = generate()
    assert again.files == dataset.files
    assert again.expected == dataset.expected
    assert generate(seed=1).files != dataset.files


def test_data_looks_like_the_vendors(dataset: Dataset) -> None:
    orders = dataset.files["data/shopify/orders_create.jsonl"]
    assert len({o["id"] for o in orders}) == 300
    assert all(isinstance(o["id"], int) and isinstance(o["total_price"], str) for o in orders)
    assert {o["shipping_lines"][0]["code"] for o in orders} == {
        "standard",
        "express",
        "local_pickup",
    }
    assert all(o["created_at"][-6:] in ("-04:00", "-05:00") for o in orders)
    stripe = dataset.files["data/stripe/events.jsonl"]
    types = {e["type"] for e in stripe}
    assert {
        "payment_intent.created",
        "charge.succeeded",
        "charge.refunded",
        "payment_intent.canceled",
    } <= types
    other = sum(
        e["type"] not in ("payment_intent.succeeded", "payment_intent.payment_failed")
        for e in stripe
    )
    assert other / len(stripe) > 1 / 3
    assert all(
        isinstance(e["created"], int) and e["data"]["object"]["currency"].islower() for e in stripe
    )
    succeeded: dict[str, set[str]] = {}
    for e in stripe:
        if e["type"] == "payment_intent.succeeded":
            succeeded.setdefault(e["data"]["object"]["id"], set()).add(e["id"])
    assert any(len(ids) >= 2 for ids in succeeded.values())  # two success events, one intent
    scans = dataset.files["data/easypost/trackers.jsonl"]
    assert {s["result"]["status"] for s in scans} == {
        "pre_transit",
        "in_transit",
        "out_for_delivery",
        "delivered",
    }
    assert not any("order" in k for s in scans for k in s["result"])
    fulfillments = dataset.files["data/shopify/fulfillments_create.jsonl"]
    per_order: dict[int, int] = {}
    for f in fulfillments:
        per_order[f["order_id"]] = per_order.get(f["order_id"], 0) + 1
    assert sum(n >= 2 for n in per_order.values()) >= 10  # split shipments
    assert any(f["tracking_numbers"] == [] for f in fulfillments)  # local pickup


def test_ground_truth_agrees_with_the_oracle(dataset: Dataset) -> None:
    """The reference implementation, fed the events the mapping must produce, finds exactly the
    ground truth (a cross-check of the reasoning in tests/realshapes/generate.py)."""
    oracle = pytest.importorskip("tests.oracle")
    config = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    watermarks = {s["name"]: dataset.as_of + 86_400_000_000 for s in config["sources"]}
    got = {
        finding_key(f)
        for f in oracle.oracle_findings(config, dataset.events, dataset.as_of, watermarks)
    }
    want = {e.key for e in dataset.expected}
    assert got == want, f"missing:\n{show(want - got)}\nunexpected:\n{show(got - want)}"


# -- ordertrail on it ----------------------------------------------------------------------------


def test_ingest_filters_and_quarantines_nothing(run: Run) -> None:
    ds = run.ds
    for name, rep in run.reports.items():
        assert rep.quarantined == 0, (name, rep.reasons)
        want = len({e["event_id"] for e in ds.events if e["source"] == name})
        assert rep.stored == want, name
        if hasattr(rep, "filtered"):
            assert rep.filtered == ds.filtered.get(name, 0), name


def test_every_problem_is_caught(run: Run) -> None:
    got = {finding_key(f) for f in run.findings}
    missed = [e for e in run.ds.expected if e.key not in got]
    assert not missed, "missed:\n" + "\n".join(f"  {e.problem}: {e.key}" for e in missed)


def test_no_finding_on_clean_orders(run: Run) -> None:
    clean = set(run.ds.clean_orders)
    false = [finding_key(f) for f in run.findings if f.get("order_id") in clean]
    assert not false, f"{len(false)} findings on clean orders:\n{show(false)}"


def test_exactly_the_ground_truth(run: Run) -> None:
    got = {finding_key(f) for f in run.findings}
    want = {e.key for e in run.ds.expected}
    assert got == want, f"missing:\n{show(want - got)}\nunexpected:\n{show(got - want)}"


def test_trace_a_tracking_number_shows_its_order_and_the_missing_hop(run: Run) -> None:
    tracking, order_id, missing = run.ds.trace
    args = ["--config", str(run.config), "trace", tracking, "--as-of", run.ds.as_of_iso]
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0, table.output
    assert order_id in table.output and missing in table.output
    js = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert js.exit_code == 0, js.output
    text = orjson.dumps(orjson.loads(js.output)).decode()
    assert order_id in text and f"shipment:{tracking}" in text
