"""The tracer (real opentelemetry-sdk) and the OTLP/HTTP collector fed by the SDK's own exporter."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ordertrail.collectors.otlp import OtlpCollector
from ordertrail.schemas.config import load_config
from ordertrail.store import Store
from ordertrail.tracer import OrderEventExporter, StoreSink, extract_context, hop, inject_headers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(col: OtlpCollector) -> None:
    deadline = time.monotonic() + 10
    while col.server is None:
        assert time.monotonic() < deadline, "the collector never listened"
        time.sleep(0.02)


def provider(*exporters: Any) -> TracerProvider:
    p = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    for e in exporters:
        p.add_span_processor(SimpleSpanProcessor(e))
    return p


def use(p: TracerProvider) -> Any:
    """hop() uses the global tracer provider; point it at ``p`` for one test."""
    from opentelemetry import trace

    trace._TRACER_PROVIDER = p  # the SDK allows setting the global provider only once
    return p


def test_hop_spans_become_events_in_the_store(sqlite_url: str) -> None:
    mem = InMemorySpanExporter()
    with Store(sqlite_url) as s:
        exporter = OrderEventExporter(StoreSink(s), source="shop")
        use(provider(mem, exporter))
        with hop("checkout", order_id="A-1", amount=12.5):
            pass
        with pytest.raises(RuntimeError), hop("payment", order_id="A-1", amount=12.5):
            raise RuntimeError("card declined")
        [c, p] = s.order_events("A-1")
    assert (c.hop, c.phase, p.hop, p.phase) == ("checkout", "completed", "payment", "failed")
    assert c.trace_id and len(c.trace_id) == 32 and c.span_id and c.source == "shop"
    assert c.attributes == {"amount": 12.5} and c.event_id == f"{c.trace_id}:{c.span_id}"
    spans = mem.get_finished_spans()
    assert [sp.attributes["order.phase"] for sp in spans] == ["completed", "failed"]
    assert exporter.exported == 2 and exporter.failures == 0


def test_failing_sink_does_not_break_the_service() -> None:
    class Broken:
        def send(self, events: Any) -> None:
            raise OSError("store down")

    exporter = OrderEventExporter(Broken())
    use(provider(exporter))
    with hop("checkout", order_id="B-1"):
        pass
    assert exporter.failures == 1


def test_trace_context_through_kafka_headers() -> None:
    use(provider(InMemorySpanExporter()))
    with hop("checkout", order_id="C-1") as span:
        headers = inject_headers([("other", b"x")])
        tid = span.get_span_context().trace_id
    assert [k for k, _ in headers] == ["other", "traceparent"]
    from opentelemetry import trace

    ctx = extract_context(headers)
    assert trace.get_current_span(ctx).get_span_context().trace_id == tid


def write_config(d: Path, port: int) -> Path:
    p = d / "ordertrail.toml"
    p.write_text(f"""
[[hops]]
name = "checkout"
next = ["payment"]
within = "15m"
[[hops]]
name = "payment"
[[sources]]
name = "spans"
kind = "otlp"
listen = "127.0.0.1:{port}"
attributes = ["amount"]
""")
    return p


def test_otlp_collector_with_the_sdk_exporter(tmp_path: Path, sqlite_url: str) -> None:
    port = free_port()
    cfg = load_config(write_config(tmp_path, port))
    with Store(sqlite_url) as s:
        col = OtlpCollector(s, cfg, cfg.sources[0], idle_timeout=30)
        th = threading.Thread(target=col.run, daemon=True)
        th.start()
        wait_listening(col)
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
        p = use(provider(exporter))
        for i in range(20):
            with hop("checkout", order_id=f"O-{i}", amount=i):
                pass
        with pytest.raises(ValueError), hop("payment", order_id="O-1"):
            raise ValueError("declined")
        from opentelemetry import trace

        with trace.get_tracer("other").start_as_current_span("SELECT orders"):
            pass  # not a hop: ignored, counted
        p.force_flush()
        col.stop()
        th.join(10)
        assert col.report.stored == 21 and col.not_order_spans == 1
        assert col.report.not_order_spans == 1
        evs = s.order_events("O-1")
        assert [(e.hop, e.phase) for e in evs] == [("checkout", "completed"), ("payment", "failed")]
        assert evs[0].attributes == {"amount": 1} and evs[0].source_ref.startswith("otlp:")
        assert s.watermarks()["spans"] is not None
        # the exporter retrying the same spans stores nothing twice
        assert s.count_events() == 21


def test_otlp_json_and_bad_requests(tmp_path: Path, sqlite_url: str) -> None:
    port = free_port()
    cfg = load_config(write_config(tmp_path, port))
    body = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [
        {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7", "name": "hop checkout",
         "startTimeUnixNano": "1772366400000000000", "endTimeUnixNano": "1772366401000000000",
         "attributes": [{"key": "order.id", "value": {"stringValue": "J-1"}},
                        {"key": "order.hop", "value": {"stringValue": "checkout"}}]},
        {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b8", "name": "hop x",
         "endTimeUnixNano": "1772366401000000000",
         "attributes": [{"key": "order.id", "value": {"stringValue": "J-1"}},
                        {"key": "order.hop", "value": {"stringValue": "teleport"}}]},
    ]}]}]}  # fmt: skip
    with Store(sqlite_url) as s:
        col = OtlpCollector(s, cfg, cfg.sources[0], idle_timeout=30)
        th = threading.Thread(target=col.run, daemon=True)
        th.start()
        wait_listening(col)
        url = f"http://127.0.0.1:{port}/v1/traces"
        for _ in range(2):  # a retry stores nothing twice
            req = urllib.request.Request(
                url, orjson.dumps(body), {"Content-Type": "application/json"}
            )
            assert urllib.request.urlopen(req, timeout=10).status == 200
        bad = urllib.request.Request(
            url, b"not protobuf at all \xff", {"Content-Type": "application/x-protobuf"}
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad, timeout=10)
        assert e.value.code == 400
        col.stop()
        th.join(10)
        [ev] = s.order_events("J-1")
        assert (
            ev.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
            and ev.occurred_at == 1_772_366_401_000_000
        )
        [q] = s.quarantine_rows()
        assert "unknown hop 'teleport'" in q["reason"] and q["source_ref"].startswith(
            "otlp:4bf92f35"
        )
