"""Real pipelines end to end (v2): vendor records through file, OTLP and Kafka sources into the
store; filtered counts exact across crashes and re-reads; fixed mappings store nothing twice."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from ordertrail.collectors import file_sources, ingest_file_source
from ordertrail.collectors.otlp import OtlpCollector
from ordertrail.report import store_status
from ordertrail.schemas.config import load_config
from ordertrail.store import Store, tables
from tests.helpers import invoke, write_csv, write_jsonl
from tests.test_mapping_v2 import (
    SHOPIFY_FULFILLMENT,
    SHOPIFY_ORDER,
    easypost_tracker,
    stripe_event,
)

CONFIG = """
[pipeline]
name = "shop"

[[objects]]
name = "item"
[[objects]]
name = "shipment"
[[objects]]
name = "payment"

[[hops]]
name = "checkout"
next = ["payment"]
within = "15m"
[[hops]]
name = "payment"
next = ["picked"]
within = "1d"
[[hops]]
name = "picked"
next = ["shipped"]
within = "2d"
[[hops]]
name = "shipped"
next = ["delivered"]
within = "5d"
[[hops]]
name = "delivered"

[[sources]]
name = "payments"
kind = "file"
path = "stripe/*.jsonl"
where = { type = ["payment_intent.succeeded", "payment_intent.payment_failed"] }
hop = "payment"
order_id = "data.object.metadata.order_id"
timestamp = "created"
event_id = "id"
phase = "type"
phase_map = { "payment_intent.payment_failed" = "failed", "payment_intent.succeeded" = "completed" }
objects = { payment = "data.object.id" }
attributes = { amount = { path = "data.object.amount", scale = 0.01 }, currency = { path = "data.object.currency", case = "upper" } }

[[sources]]
name = "charges"
kind = "file"
path = "stripe/*.jsonl"
where = { type = "charge.succeeded" }
hop = "payment"
order_id = "data.object.metadata.order_id"
timestamp = "created"
event_id = "id"
objects = { payment = "data.object.payment_intent" }

[[sources]]
name = "shopify"
kind = "file"
path = "shopify/orders-*.jsonl"
hop = "checkout"
order_id = "id"
timestamp = "created_at"
objects = { item = "line_items[*].id" }
attributes = { email = "email", amount = { path = "total_price", scale = 1 }, shipping = "shipping_lines.0.code" }

[[sources]]
name = "fulfillments"
kind = "file"
path = "shopify/fulfillments-*.jsonl"
hop = "shipped"
order_id = "order_id"
timestamp = "created_at"
objects = { item = "line_items[*].id", shipment = "tracking_numbers[*]" }
attributes = ["tracking_company"]

[[sources]]
name = "carrier"
kind = "file"
path = "easypost/*.jsonl"
hop_field = "result.status"
hop_map = { in_transit = "shipped", delivered = "delivered" }
objects = { shipment = "result.tracking_code" }
timestamp = "result.updated_at"
event_id = "id"

[[sources]]
name = "warehouse"
kind = "file"
path = "wh/*.csv"
hop = "picked"
order_id = "order"
objects = { item = "sku_line" }
timestamp = "picked_at"
timestamp_format = "%d.%m.%Y %H:%M"
timezone = "Europe/Berlin"
"""

KINDS = [
    "payment_intent.created",
    "payment_intent.succeeded",
    "charge.succeeded",
    "payment_intent.payment_failed",
]


def stripe_stream(n: int) -> list[Any]:
    """n Stripe events, a quarter of each kind, with distinct event ids and orders."""
    out = []
    for i in range(n):
        e = stripe_event(KINDS[i % 4], amount=1000 + i, order=f"SO-{i // 4}")
        e["id"] = f"evt_{i:08d}"
        e["created"] = 1772366400 + i
        out.append(e)
    return out


def expected_filtered(n: int) -> dict[str, int]:
    taken_payments = sum(1 for i in range(n) if i % 4 in (1, 3))
    taken_charges = sum(1 for i in range(n) if i % 4 == 2)
    return {"payments": n - taken_payments, "charges": n - taken_charges}


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    for d in ("stripe", "shopify", "easypost", "wh"):
        (tmp_path / d).mkdir()
    (tmp_path / "ordertrail.toml").write_text(CONFIG, encoding="utf-8")
    return tmp_path


def filtered_per_source(url: str, root: Path) -> dict[str, int]:
    cfg = load_config(root / "ordertrail.toml")
    with Store(url) as s:
        return {x.name: x.filtered for x in store_status(s, cfg).sources}


def test_two_sources_read_one_file_with_different_where(shop: Path, store_url: str) -> None:
    write_jsonl(shop / "stripe" / "2026-03-01.jsonl", stripe_stream(40))
    r = invoke(shop, "--db", store_url, "ingest", "payments", "charges", "--format", "json")
    assert r.exit_code == 0, r.stderr
    out = {s["source"]: s for s in orjson.loads(r.stdout)["sources"]}
    assert {k: (v["records"], v["stored"], v["filtered"]) for k, v in out.items()} == {
        "payments": (40, 20, 20),
        "charges": (40, 10, 30),
    }
    r = invoke(shop, "--db", store_url, "status", "--format", "json")
    st = orjson.loads(r.stdout)
    by = {s["name"]: s for s in st["sources"]}
    assert (by["payments"]["events"], by["payments"]["filtered"]) == (20, 20)
    assert (by["charges"]["events"], by["charges"]["filtered"]) == (10, 30)
    assert st["filtered"] == 50 and st["quarantine"] == 0
    # a second run reads nothing, and counts nothing again
    r = invoke(shop, "--db", store_url, "ingest", "payments", "charges", "--format", "json")
    assert [s["records"] for s in orjson.loads(r.stdout)["sources"]] == [0, 0]
    assert filtered_per_source(store_url, shop) == {
        "payments": 20,
        "charges": 30,
        "shopify": 0,
        "fulfillments": 0,
        "carrier": 0,
        "warehouse": 0,
    }
    with Store(store_url) as s:
        paid, declined = [e for e in s.order_events("SO-0") if e.source == "payments"]
        assert (paid.phase, declined.phase) == ("completed", "failed")
        assert paid.attributes == {"amount": 10.01, "currency": "USD"}
        assert paid.objects == {"payment": ["pi_3MtwBwLkdIwHu7ix28a3tqPa"]}


def test_ingest_and_status_tables_show_filtered(shop: Path, sqlite_url: str) -> None:
    write_jsonl(shop / "stripe" / "a.jsonl", stripe_stream(8))
    r = invoke(shop, "--db", sqlite_url, "ingest", "payments", "charges")
    assert r.exit_code == 0, r.stderr
    header = next(line for line in r.stdout.splitlines() if "source" in line)
    assert "filtered" in header
    assert any(line.split()[:1] == ["payments"] and "4" in line for line in r.stdout.splitlines())
    r = invoke(shop, "--db", sqlite_url, "status")
    assert "filtered" in r.stdout and "10 filtered" in r.stdout
    assert max(len(x) for x in r.stdout.splitlines()) <= 100


def test_filtered_counts_survive_sigkill_without_doubling(shop: Path, store_url: str) -> None:
    n = 40_000
    write_jsonl(shop / "stripe" / "big.jsonl", stripe_stream(n))
    cmd = [sys.executable, "-m", "ordertrail", "--db", store_url, "--config",
           str(shop / "ordertrail.toml"), "ingest", "payments", "--batch-size", "500"]  # fmt: skip
    kills = 0
    for attempt in range(3):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        target = (attempt + 1) * n // 10
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.poll() is None and _events(store_url) < target:
            time.sleep(0.02)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills >= 1, "ingest finished before it could be killed; make the file bigger"
    assert 0 < _events(store_url) < n // 2
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert filtered_per_source(store_url, shop)["payments"] == expected_filtered(n)["payments"]
    assert _events(store_url) == n // 2


def _events(url: str) -> int:
    try:
        with Store(url, create=False) as s:
            return s.count_events()
    except Exception:  # the schema may not exist yet
        return 0


def test_a_file_read_again_from_the_start_counts_again_from_zero(
    shop: Path, sqlite_url: str
) -> None:
    f = shop / "stripe" / "a.jsonl"
    write_jsonl(f, stripe_stream(40))
    invoke(shop, "--db", sqlite_url, "ingest", "payments")
    f.unlink()
    write_jsonl(f, stripe_stream(12))  # rotated: a new, shorter file
    r = invoke(shop, "--db", sqlite_url, "ingest", "payments", "--format", "json")
    [rep] = orjson.loads(r.stdout)["sources"]
    assert (rep["records"], rep["filtered"], rep["redelivered"]) == (12, 6, 6)
    assert filtered_per_source(sqlite_url, shop)["payments"] == 6
    # a file that grows is read on, and its count goes on
    write_jsonl(f, stripe_stream(16)[12:], mode="ab")
    invoke(shop, "--db", sqlite_url, "ingest", "payments")
    assert filtered_per_source(sqlite_url, shop)["payments"] == 8


def test_fixing_a_mapping_and_reading_again_stores_nothing_twice(
    shop: Path, store_url: str
) -> None:
    rows = [[f"48{i:02d}", f"L{i}", f"01.03.2026 {8 + i % 10:02d}:30"] for i in range(20)]
    write_csv(shop / "wh" / "picks.csv", ["order", "sku_line", "picked_at"], rows)
    cfg_path = shop / "ordertrail.toml"
    cfg_path.write_text(CONFIG.replace('timezone = "Europe/Berlin"', 'timezone = "UTC"'))
    r = invoke(shop, "--db", store_url, "ingest", "warehouse", "--format", "json")
    assert orjson.loads(r.stdout)["sources"][0]["stored"] == 20
    with Store(store_url) as s:
        [before] = s.order_events("4800")
    # the operator fixes the time zone and has the file read again (a new copy of it)
    cfg_path.write_text(CONFIG)
    copy = shop / "wh" / "picks.tmp"
    shutil.copy(shop / "wh" / "picks.csv", copy)
    os.replace(copy, shop / "wh" / "picks.csv")
    r = invoke(shop, "--db", store_url, "ingest", "warehouse", "--format", "json")
    [rep] = orjson.loads(r.stdout)["sources"]
    assert (rep["records"], rep["stored"], rep["redelivered"]) == (20, 0, 20)
    with Store(store_url) as s:
        assert s.count_events() == 20
        [after] = s.order_events("4800")
    assert after.event_id == before.event_id and after.objects == {"item": ["L0"]}


def test_links_from_shopify_and_a_carrier_that_knows_no_order(shop: Path, store_url: str) -> None:
    # the carrier's scan arrives first: it names only its tracking number
    write_jsonl(shop / "easypost" / "a.jsonl", [easypost_tracker("in_transit")])
    write_jsonl(shop / "shopify" / "orders-1.jsonl", [SHOPIFY_ORDER])
    write_jsonl(shop / "shopify" / "fulfillments-1.jsonl", [SHOPIFY_FULFILLMENT])
    cfg = load_config(shop / "ordertrail.toml")
    with Store(store_url) as s:
        order = {src.name: src for src in file_sources(cfg)}
        for name in ("carrier", "shopify", "fulfillments"):
            rep = ingest_file_source(s, cfg, order[name])
            assert (rep.stored, rep.quarantined) == (1, 0), name
        evs = s.order_events("820982911946154508")
        assert [e.source for e in evs] == ["shopify", "fulfillments"]
        assert evs[0].attributes == {
            "email": "jon@example.com",
            "amount": 403,
            "shipping": "Standard",
        }
        c = tables.links.c
        with s.engine.connect() as conn:
            links = set(conn.execute(select(c.kind, c.object_id, c.link_kind, c.link_id)).all())
    oid = "820982911946154508"
    assert ("shipment", "1Z2345", "", oid) in links
    assert ("item", "866550311766439020", "", oid) in links
    assert ("shipment", "1Z2346", "item", "141249953214522974") in links


def test_a_source_over_its_max_quarantine_exits_4(shop: Path, sqlite_url: str) -> None:
    cfg = (shop / "ordertrail.toml").read_text()
    cfg = cfg.replace(
        'timezone = "Europe/Berlin"', 'timezone = "Europe/Berlin"\nmax_quarantine = 0.2'
    )
    cfg = cfg.replace('phase = "type"\n', 'phase = "type"\nmax_quarantine = 0.15\n')
    (shop / "ordertrail.toml").write_text(cfg)
    rows = [["4711", "L1", "01.03.2026 13:00"], ["4712", "L2", "31/12/2026"]]
    write_csv(shop / "wh" / "picks.csv", ["order", "sku_line", "picked_at"], rows)
    r = invoke(shop, "--db", sqlite_url, "ingest", "warehouse")
    assert r.exit_code == 4
    assert r.stderr.strip() == (
        "Error: warehouse quarantined 50% of its records (max_quarantine 20%): unparseable "
        "timestamp … (field 'picked_at'; tried '%d.%m.%Y %H:%M', ISO-8601, epoch), "
        "e.g. wh/picks.csv:3"
    )
    assert "unparseable timestamp" in r.stdout  # the summary is still printed
    # the share is of the records the source took: 1 bad of 5 taken (4 more were filtered)
    write_jsonl(shop / "stripe" / "a.jsonl", [*stripe_stream(8), b'{"type": "payment_intent'])
    r = invoke(shop, "--db", sqlite_url, "ingest", "payments", "charges", "--format", "json")
    assert r.exit_code == 4
    assert "payments quarantined 20% of its records (max_quarantine 15%)" in r.stderr
    assert "charges" not in r.stderr  # 1 bad of 3 taken is within the default 50%
    assert [s["quarantined"] for s in orjson.loads(r.stdout)["sources"]] == [1, 1]


# -- OTLP ---------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


OTLP_SOURCE = """
[[sources]]
name = "spans"
kind = "otlp"
listen = "127.0.0.1:{port}"
hop = "picked"
order_id = "order.id"
objects = {{ item = "order.items[*]" }}
where = {{ "warehouse.zone" = ["A", "B"] }}
attributes = {{ weight_kg = {{ path = "parcel.weight_g", scale = 0.001 }}, zone = "warehouse.zone", service = "resource.service.name" }}
"""


def otlp_config(root: Path, port: int) -> Path:
    head = CONFIG.split("[[sources]]")[0]
    p = root / "ordertrail.toml"
    p.write_text(head + OTLP_SOURCE.format(port=port))
    return p


def start(col: OtlpCollector) -> threading.Thread:
    th = threading.Thread(target=col.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 10
    while col.server is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    return th


def test_otlp_spans_map_through_the_sources_mapping(tmp_path: Path, sqlite_url: str) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import Status, StatusCode

    port = free_port()
    cfg = load_config(otlp_config(tmp_path, port))
    with Store(sqlite_url) as s:
        col = OtlpCollector(s, cfg, cfg.sources[0], idle_timeout=30)
        th = start(col)
        provider = TracerProvider(resource=Resource.create({"service.name": "warehouse"}))
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces"))
        )
        tracer = provider.get_tracer("wms")
        spans: list[dict[str, Any]] = [
            {"order.id": "O-1", "order.items": ["SKU-1", "SKU-2"], "warehouse.zone": "A",
             "parcel.weight_g": 1250},
            {"order.items": ["SKU-3"], "warehouse.zone": "B"},  # items only: no order id
            {"order.id": "O-2", "warehouse.zone": "C"},  # another zone: filtered
            {"order.id": "O-3", "warehouse.zone": "A", "parcel.weight_g": "heavy"},
            {"db.system": "postgresql"},  # not an order span
        ]  # fmt: skip
        for attrs in spans:
            with tracer.start_as_current_span("pick", attributes=attrs):
                pass
        with tracer.start_as_current_span(
            "pick", attributes={"order.id": "O-4", "warehouse.zone": "B"}
        ) as sp:
            sp.set_status(Status(StatusCode.ERROR, "scanner jammed"))
        provider.force_flush()
        col.stop()
        th.join(10)
        rep = col.report
        assert (rep.records, rep.stored, rep.quarantined, rep.filtered) == (5, 3, 1, 1)
        assert rep.not_order_spans == 1
        [e1] = s.order_events("O-1")
        assert (e1.hop, e1.phase, e1.objects) == (
            "picked",
            "completed",
            {"item": ["SKU-1", "SKU-2"]},
        )
        assert e1.attributes == {"weight_kg": 1.25, "zone": "A", "service": "warehouse"}
        [e4] = s.order_events("O-4")
        assert e4.phase == "failed"
        [orphan] = s.order_events("")
        assert orphan.objects == {"item": ["SKU-3"]}
        [q] = s.quarantine_rows()
        assert q["reason"] == (
            "cannot scale 'heavy': not a number (attribute 'weight_kg', path 'parcel.weight_g')"
        )
        st = store_status(s, cfg)
        [spans_st] = st.sources
        assert spans_st.filtered == 1 and spans_st.checkpoint == {"not_order_spans": 1}


def otlp_json(*spans: dict[str, Any]) -> bytes:
    out = []
    for i, attrs in enumerate(spans):
        out.append({
            "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": f"00f067aa0ba9{i:04x}",
            "name": "pick", "startTimeUnixNano": "1772366400000000000",
            "endTimeUnixNano": "1772366401000000000",
            "attributes": [
                {"key": k, "value": {"arrayValue": {"values": [{"stringValue": x} for x in v]}}
                 if isinstance(v, list) else {"stringValue": v}}
                for k, v in attrs.items()
            ],
        })  # fmt: skip
    return orjson.dumps(
        {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": out}]}]}
    )


def post(port: int, body: bytes) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/traces", body, {"Content-Type": "application/json"}
    )
    return int(urllib.request.urlopen(req, timeout=10).status)


def test_otlp_retries_count_once_even_across_a_restart(tmp_path: Path, sqlite_url: str) -> None:
    port = free_port()
    cfg = load_config(otlp_config(tmp_path, port))
    body = otlp_json(
        {"order.id": "O-1", "order.items": ["SKU-1"], "warehouse.zone": "A"},
        {"order.id": "O-2", "warehouse.zone": "Z"},
        {"http.route": "/health"},
    )
    with Store(sqlite_url) as s:

        def counts() -> tuple[int, int, int]:
            [st] = store_status(s, cfg).sources
            return st.events, st.filtered, st.checkpoint["not_order_spans"]

        col = OtlpCollector(s, cfg, cfg.sources[0], idle_timeout=30)
        th = start(col)
        assert post(port, body) == 200
        assert post(port, body) == 200  # the exporter retries: its 200 was lost
        col.stop()
        th.join(10)
        assert counts() == (1, 1, 1)
        assert (col.report.records, col.report.redelivered, col.report.filtered) == (4, 2, 1)
        col = OtlpCollector(s, cfg, cfg.sources[0], idle_timeout=30)  # a restarted collector
        th = start(col)
        assert post(port, body) == 200
        assert post(port, otlp_json({"order.id": "O-3", "warehouse.zone": "Q"})) == 200
        col.stop()
        th.join(10)
        assert counts() == (1, 2, 1)


# -- Kafka --------------------------------------------------------------------------------------


@pytest.mark.kafka
def test_kafka_sources_on_one_topic_count_filtered_exactly_through_sigkill(
    kafka: dict[str, Any], tmp_path: Path, sqlite_url: str
) -> None:
    import random
    import uuid

    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    bs = str(kafka["bootstrap"])
    topic = f"stripe-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bs)
    admin.create_topics([NewTopic(topic, 3, 1)])
    admin.close()
    n = 30_000
    p = KafkaProducer(bootstrap_servers=bs, linger_ms=20, batch_size=256 * 1024, acks="all")
    for e in stripe_stream(n):
        p.send(
            topic, value=orjson.dumps(e), key=e["data"]["object"]["metadata"]["order_id"].encode()
        )
    p.flush()
    p.close()
    text = CONFIG.split("[[sources]]")[0]
    for name in ("payments", "charges"):
        block = next(b for b in CONFIG.split("[[sources]]")[1:] if f'name = "{name}"' in b)
        block = block.replace('kind = "file"\npath = "stripe/*.jsonl"', (
            f'kind = "kafka"\ntopic = "{topic}"\nbootstrap_servers = "{bs}"\n'
            f'group_id = "g-{name}-{topic}"\nbatch_size = 1000\n'
            "options = { session_timeout_ms = 6000, heartbeat_interval_ms = 1000, "
            "max_poll_interval_ms = 30000 }"
        ))  # fmt: skip
        text += "[[sources]]" + block
    cfg_path = tmp_path / "ordertrail.toml"
    cfg_path.write_text(text)

    def collect(name: str, idle: float) -> list[str]:
        return [sys.executable, "-m", "ordertrail", "--config", str(cfg_path), "--db", sqlite_url,
                "collect", name, "--idle-timeout", str(idle)]  # fmt: skip

    rng = random.Random(3)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(collect("payments", 8), stdout=subprocess.DEVNULL)
        target = _events(sqlite_url) + rng.randint(2000, 4000)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None and _events(sqlite_url) < target:
            time.sleep(0.01)
        if proc.poll() is None:
            time.sleep(rng.random() * 0.2)
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1
    for name in ("payments", "charges"):
        done = subprocess.run(collect(name, 5), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    cfg = load_config(cfg_path)
    with Store(sqlite_url) as s:
        by = {x.name: x for x in store_status(s, cfg).sources}
    assert (by["payments"].events, by["charges"].events) == (n // 2, n // 4)
    assert {k: by[k].filtered for k in ("payments", "charges")} == expected_filtered(n)


def test_otlp_span_with_an_order_id_but_no_hop_is_counted_not_quarantined(
    tmp_path: Path, sqlite_url: str
) -> None:
    port = free_port()
    (tmp_path / "ordertrail.toml").write_text(f"""
[[hops]]
name = "checkout"
[[sources]]
name = "spans"
kind = "otlp"
listen = "127.0.0.1:{port}"
""")
    cfg = load_config(tmp_path / "ordertrail.toml")
    with Store(sqlite_url) as s:
        col = OtlpCollector(s, cfg, cfg.sources[0], idle_timeout=30)
        th = start(col)
        body = otlp_json(
            {"order.id": "O-1", "order.hop": "checkout"},
            # names an order but no hop: a service's DB or HTTP span inside the order's trace
            {"order.id": "O-2"},
            {"http.route": "/cart"},  # names nothing: not an order span
        )
        assert post(port, body) == 200
        col.stop()
        th.join(10)
        assert [e.hop for e in s.order_events("O-1")] == ["checkout"]
        assert s.quarantine_rows() == [] and s.order_events("O-2") == []
        assert (col.report.stored, col.report.quarantined, col.report.not_order_spans) == (1, 0, 2)
