"""Support staff's view: trace, search, report (and its HTML in a real browser), --redact."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from ordertrail.simulation import Simulation
from ordertrail.simulation.pipeline import DEMO_CONFIG
from tests.helpers import invoke

AS_OF = "2026-03-01T00:00:00Z"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(params=["sqlite", "postgresql"])
def demo(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Any, str]:
    url = (
        f"sqlite:///{tmp_path / 's.db'}"
        if request.param == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    res = Simulation(orders=1200, seed=4).run(tmp_path)
    cfg = (tmp_path / "ordertrail.toml").read_text()
    cfg = cfg.replace('personal = ["customer.email", "customer.name"]',
                      'personal = ["customer.email", "customer.name"]\nsearchable = ["customer.email"]')  # fmt: skip
    (tmp_path / "ordertrail.toml").write_text(cfg)
    assert invoke(tmp_path, "--db", url, "ingest").exit_code == 0
    r = invoke(tmp_path, "--db", url, "reconcile", "--as-of", AS_OF)
    assert r.exit_code == 0, r.stderr
    return tmp_path, res, url


def _order(res: Any, fault: str) -> str:
    return next(k[0] for k, v in sorted(res.expected.items()) if v == fault)


def test_trace_shows_trail_missing_hops_and_plain_words(demo: tuple[Path, Any, str]) -> None:
    root, res, url = demo
    oid = _order(res, "lost_before_fulfillment")
    r = invoke(root, "--db", url, "trace", oid, "--as-of", AS_OF, "--format", "json")
    assert r.exit_code == 0, r.stderr
    t = orjson.loads(r.stdout)
    assert t["order_id"] == oid and t["state"] == "finding"
    assert [e["hop"] for e in t["events"]] == ["checkout", "payment", "confirmation"]
    assert t["events"][1]["gap_seconds"] > 0 and t["events"][0]["source_ref"].startswith(
        "data/checkout/"
    )
    assert [(m["hop"], m["after"]) for m in t["missing"]] == [("fulfillment", "payment")]
    assert t["missing"][0]["overdue_seconds"] > 0
    kinds = {f["kind"]: f for f in t["findings"]}
    assert set(kinds) == {"vanished", "confirmed_unfulfilled"}
    assert kinds["vanished"]["status"] == "new"
    assert any(
        "never received the order" in s and "later orders reached fulfillment" in s
        for s in t["summary"]
    )
    table = invoke(root, "--db", url, "trace", oid, "--as-of", AS_OF).stdout
    assert "Expected but missing" in table and "\x1b[" not in table
    assert max(len(x) for x in table.splitlines()) <= 100


def test_trace_in_flight_and_complete(demo: tuple[Path, Any, str]) -> None:
    root, res, url = demo
    t = orjson.loads(
        invoke(root, "--db", url, "trace", "WO-000003", "--as-of", AS_OF, "--format", "json").stdout
    )
    assert t["state"] == "complete" and t["findings"] == [] and t["missing"] == []
    last = f"WO-{res.orders - 1:06d}"
    t = orjson.loads(
        invoke(root, "--db", url, "trace", last, "--as-of", AS_OF, "--format", "json").stdout
    )
    assert t["state"] == "in_flight" and t["missing"] and t["missing"][0]["overdue_seconds"] < 0


def test_trace_unknown_id_suggests_closest(demo: tuple[Path, Any, str]) -> None:
    root, _, url = demo
    r = invoke(root, "--db", url, "trace", "WO-00012")
    assert r.exit_code == 1
    assert "no events for order 'WO-00012'; closest known ids: WO-0001" in r.stderr
    assert "Traceback" not in r.stderr


def test_trace_redact(demo: tuple[Path, Any, str]) -> None:
    root, _, url = demo
    t = orjson.loads(
        invoke(root, "--db", url, "trace", "WO-000003", "--format", "json", "--redact").stdout
    )
    attrs = t["events"][0]["attributes"]
    assert attrs["customer.email"] == "c***@example.com" and attrs["customer.name"].endswith("***")
    assert attrs["amount"] > 0


def test_search_by_attribute_trace_and_hop(demo: tuple[Path, Any, str]) -> None:
    root, _, url = demo
    r = invoke(
        root, "--db", url, "search", "--attr", "customer.email=c7@example.com", "--format", "json"
    )
    assert [o["order_id"] for o in orjson.loads(r.stdout)["orders"]] == ["WO-000007"]
    r = invoke(root, "--db", url, "search", "--attr", "amount=does-not-exist", "--format", "json")
    assert orjson.loads(r.stdout)["orders"] == []
    r = invoke(
        root,
        "--db",
        url,
        "search",
        "--hop",
        "cancelled",
        "--since",
        "2026-02-01",
        "--format",
        "json",
    )
    found = orjson.loads(r.stdout)["orders"]
    assert found and all(o["order_id"].startswith("WO-") for o in found)
    r = invoke(root, "--db", url, "search")
    assert r.exit_code == 2 and "give at least one condition" in r.stderr
    r = invoke(root, "--db", url, "search", "--hop", "nowhere")
    assert r.exit_code == 2 and "unknown hop 'nowhere'" in r.stderr


def test_report_json(demo: tuple[Path, Any, str]) -> None:
    root, res, url = demo
    r = invoke(root, "--db", url, "report", "--as-of", AS_OF, "--format", "json")
    rep = orjson.loads(r.stdout)
    funnel = {f["hop"]: f["orders"] for f in rep["funnel"]}
    assert funnel["checkout"] >= funnel["payment"] >= funnel["fulfillment"] > funnel["shipping"]
    ship = next(e for e in rep["edges"] if e["to"] == "shipping")
    assert ship["stalled"] == sum(1 for v in res.expected.values() if v == "shipping_outage")
    assert (
        0
        < ship["latency_seconds"]["p50"]
        <= ship["latency_seconds"]["p95"]
        <= ship["latency_seconds"]["p99"]
    )
    assert rep["at_risk"]["amount"] > 0 and rep["at_risk"]["orders"] > 0
    assert rep["history"] and rep["findings_by_kind"]["vanished"]["total"] > 0


@pytest.mark.parametrize("fmt", ["table"])
def test_report_html_renders_in_a_real_browser(
    demo: tuple[Path, Any, str], tmp_path: Path, fmt: str
) -> None:
    root, _, url = demo
    out = tmp_path / "report.html"
    r = invoke(root, "--db", url, "report", "--as-of", AS_OF, "--html", str(out))
    assert r.exit_code == 0 and out.exists()
    html = out.read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html  # offline
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if not chromium:
        if IN_CI:
            pytest.fail("CI=true and the browser test needs Debian's chromium and playwright")
        pytest.skip("no chromium/playwright here")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )  # fmt: skip
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(out.as_uri())
        charts = {
            page.locator(f'svg[data-chart="{c}"]').count() for c in ("funnel", "latency", "history")
        }
        bars = page.locator('svg[data-chart="funnel"] rect').count()
        box = page.locator('svg[data-chart="latency"]').bounding_box()
        browser.close()
    assert errors == []
    assert charts == {1} and bars == len(DEMO_CONFIG.split("[[hops]]")) - 1
    assert box is not None and box["width"] > 100 and box["height"] > 50
