"""OTLP/HTTP collector: any OpenTelemetry SDK exporter can send spans here (protobuf or JSON,
optionally gzip). Spans map through the source's own mapping: ``order_id``, ``objects``,
``hop_field``, ``phase``, ``attributes`` and ``where`` name span attributes (defaults:
``order.id``, ``order.hop``, ``order.phase``; the span status says failed; the time is the span's
end). Spans that name neither an order nor an object are counted as *not order spans*, spans the
source's ``where`` does not take as *filtered*, spans that do not map go to quarantine.

A request is answered 200 only after its events are stored (one transaction per request), so an
exporter retries whatever was not stored; span ids make retries idempotent. The counts live in the
source's checkpoint with the digests of the latest requests, written in the same transaction, so a
retry of a stored request counts nothing twice, even across a restart. The source's watermark is
the time of the last stored batch."""

from __future__ import annotations

import base64
import gzip
import hashlib
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

import orjson

from ordertrail.collectors.base import RawBatch, RawRecord
from ordertrail.collectors.mapping import Mapper
from ordertrail.collectors.runner import IngestReport, map_batch, record_write
from ordertrail.errors import SourceError, StoreError
from ordertrail.schemas.config import Config, SourceConfig
from ordertrail.store import Checkpoint, Store
from ordertrail.store.writer import now_us

logger = logging.getLogger(__name__)
TRACES_PATH = "/v1/traces"
RECENT_REQUESTS = 64  # digests of the latest stored requests, to count a retried one once


def _any_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def spans_to_records(req: Any, mapper: Mapper) -> tuple[list[RawRecord], int]:
    """ExportTraceServiceRequest -> raw records of the spans naming an order or an object and a
    hop, and the count of the other spans.

    A span's record holds its attributes, its resource's as ``resource.<key>``, and ``time`` (end,
    else start), ``start_time``, ``name``, ``status.code`` (UNSET, OK, ERROR), ``status.message``,
    ``trace_id``, ``span_id`` and ``otlp.event_id``. When the span has no phase attribute, its
    status gives one: ERROR is ``failed``, else ``completed``.
    """
    phase_key = mapper.source.phase or "order.phase"
    out: list[RawRecord] = []
    not_order = 0
    for rs in req.resource_spans:
        resource = {f"resource.{kv.key}": _any_value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for sp in ss.spans:
                data = {**resource, **{kv.key: _any_value(kv.value) for kv in sp.attributes}}
                # a span with no id, or with an order id but no hop (a service's DB or HTTP span
                # inside an order's trace), is not an order span: counted, not quarantined
                if not mapper.names_an_id(data) or not mapper.names_a_hop(data):
                    not_order += 1
                    continue
                trace_id, span_id = sp.trace_id.hex(), sp.span_id.hex()
                data.setdefault(phase_key, "failed" if sp.status.code == 2 else "completed")
                data.update({
                    "time": sp.end_time_unix_nano or sp.start_time_unix_nano,
                    "start_time": sp.start_time_unix_nano, "name": sp.name,
                    "status.code": _STATUS.get(sp.status.code, str(sp.status.code)),
                    "status.message": sp.status.message, "trace_id": trace_id,
                    "span_id": span_id, "otlp.event_id": f"{trace_id}:{span_id}",
                })  # fmt: skip
                out.append(
                    RawRecord(
                        orjson.dumps(data, default=str), f"otlp:{trace_id}/{span_id}", data=data
                    )
                )
    return out, not_order


def _hex_ids_to_base64(doc: Any) -> Any:
    """OTLP/JSON writes trace and span ids in hex; protobuf's JSON parser wants base64."""
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if sp.get(key):
                        sp[key] = base64.b64encode(bytes.fromhex(sp[key])).decode()
    return doc


def parse_request(body: bytes, content_type: str) -> Any:
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    if "json" in content_type:
        json_format.ParseDict(
            _hex_ids_to_base64(orjson.loads(body)), req, ignore_unknown_fields=True
        )
    else:
        req.ParseFromString(body)
    return req


class OtlpCollector:
    """Serves OTLP/HTTP for one ``kind = "otlp"`` source until stopped."""

    def __init__(self, store: Store, config: Config, source: SourceConfig, *, max_messages: int | None = None,
                 idle_timeout: float | None = None):  # fmt: skip
        self.store = store
        self.source = source
        self.mapper = Mapper(source, config.hop_names)
        self.max_messages = max_messages
        self.idle_timeout = idle_timeout
        self.report = IngestReport(source.name, not_order_spans=0)
        # cumulative counts as stored in the source's checkpoint, and the latest requests' digests
        cp = store.checkpoints(source.name).get("")
        pos = cp.position if cp else {}
        self.filtered = int(pos.get("filtered", 0))
        self.not_order_spans = int(pos.get("not_order_spans", 0))
        self.recent: deque[str] = deque(pos.get("recent", []), maxlen=RECENT_REQUESTS)
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.last_data = time.monotonic()
        self.on_batch: Callable[[int], None] | None = None
        host, _, port = source.listen.rpartition(":")
        self.address = (host or "127.0.0.1", int(port))
        self.server: ThreadingHTTPServer | None = None

    def stop(self, *_: object) -> None:
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def handle(self, body: bytes, content_type: str) -> None:
        """Store one export request (raises StoreError / ValueError to the HTTP layer)."""
        req = parse_request(body, content_type)
        records, not_order = spans_to_records(req, self.mapper)
        batch = RawBatch(records, [])
        rows, bad, filtered = map_batch(self.mapper, batch)
        digest = hashlib.blake2b(body, digest_size=12).hexdigest()
        with self.lock:  # one writer at a time keeps SQLite happy and counts exact
            repeat = digest in self.recent  # an exporter retrying a request we stored
            n_filtered = self.filtered + (0 if repeat else len(filtered))
            n_not_order = self.not_order_spans + (0 if repeat else not_order)
            recent = [*self.recent, digest][-RECENT_REQUESTS:] if not repeat else list(self.recent)
            position = {"last_batch": len(records), "filtered": n_filtered,
                        "not_order_spans": n_not_order, "recent": recent}  # fmt: skip
            batch.checkpoints.append(Checkpoint(self.source.name, "", position, now_us()))
            res = self.store.write_batch(quarantined=bad, checkpoints=batch.checkpoints, rows=rows)
            self.filtered, self.not_order_spans = n_filtered, n_not_order
            self.recent = deque(recent, maxlen=RECENT_REQUESTS)
            if repeat:  # seen before: its filtered spans are redelivered, like its events
                record_write(self.report, batch, bad, res)
                self.report.redelivered += len(filtered)
            else:
                record_write(self.report, batch, bad, res, len(filtered))
                self.report.not_order_spans = (self.report.not_order_spans or 0) + not_order
            self.last_data = time.monotonic()
        if self.on_batch and records:
            self.on_batch(len(records))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("otlp: " + format, *args)

            def _reply(
                self, code: int, body: bytes = b"", ctype: str = "application/x-protobuf"
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                if self.path.rstrip("/") != TRACES_PATH:
                    self._reply(404, b"only /v1/traces is served", "text/plain")
                    return
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
                    body = gzip.decompress(body)
                ctype = (self.headers.get("Content-Type") or "application/x-protobuf").lower()
                try:
                    collector.handle(body, ctype)
                except StoreError as e:
                    logger.warning("otlp: store unavailable (%s); asking the exporter to retry", e)
                    self._reply(503, b"store unavailable", "text/plain")
                    return
                except Exception as e:  # a body we cannot parse is the sender's error
                    logger.warning("otlp: bad request: %s", e)
                    self._reply(400, f"cannot parse OTLP request: {e}".encode(), "text/plain")
                    return
                self._reply(
                    200,
                    b"{}" if "json" in ctype else b"",
                    "application/json" if "json" in ctype else "application/x-protobuf",
                )

        return Handler

    def run(self, on_batch: Callable[[int], None] | None = None) -> IngestReport:
        self.on_batch = on_batch
        t0 = time.perf_counter()
        try:
            self.server = ThreadingHTTPServer(self.address, self._handler_class())
        except OSError as e:
            raise SourceError(
                f"source {self.source.name}: cannot listen on {self.source.listen}: {e.strerror}"
            ) from None
        th = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        th.start()
        logger.info(
            "source %s: OTLP/HTTP on http://%s:%d%s", self.source.name, *self.address, TRACES_PATH
        )
        self.last_data = time.monotonic()
        try:
            while not self.stop_event.wait(0.2):
                if self.max_messages is not None and self.report.records >= self.max_messages:
                    break
                if (
                    self.idle_timeout is not None
                    and time.monotonic() - self.last_data > self.idle_timeout
                ):
                    break
        finally:
            self.server.shutdown()
            self.server.server_close()
            th.join()
        self.report.seconds = time.perf_counter() - t0
        return self.report
