"""OTLP/HTTP collector: any OpenTelemetry SDK exporter can send spans here (protobuf or JSON,
optionally gzip); the receiver in front of it (limits, timeouts, throttling, token, TLS) is
:mod:`ordertrail.collectors.otlp_http`. Spans map through the source's own mapping: ``order_id``,
``objects``, ``hop_field``, ``phase``, ``attributes`` and ``where`` name span attributes (defaults:
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
import hashlib
import ipaddress
import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import orjson

from ordertrail.collectors.base import RawBatch, RawRecord
from ordertrail.collectors.mapping import Mapper
from ordertrail.collectors.otlp_http import (
    TRACES_PATH,
    BadRequest,
    OtlpReceiver,
    ReceiverLimits,
    ServerThread,
    bind,
)
from ordertrail.collectors.runner import IngestReport, map_batch, record_write
from ordertrail.errors import ConfigError, SourceError
from ordertrail.schemas.config import Config, SourceConfig, parse_listen
from ordertrail.schemas.event import QuarantineRecord
from ordertrail.store import Checkpoint, Store
from ordertrail.store.writer import now_us

logger = logging.getLogger(__name__)
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
    out: list[RawRecord] = []
    not_order = 0
    for records, n in iter_span_records(req, mapper):
        out += records
        not_order += n
    return out, not_order


def iter_span_records(
    req: Any, mapper: Mapper, slice_size: int = 2000
) -> Iterator[tuple[list[RawRecord], int]]:
    """:func:`spans_to_records` in slices of ``slice_size`` records (with the not-order spans
    counted since the previous slice): a record weighs ~5 KiB in memory, its mapped row ~1 KiB, so
    mapping a large request slice by slice holds a fraction of what mapping it whole would."""
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
                if len(out) >= slice_size:
                    yield out, not_order
                    out, not_order = [], 0
    if out or not_order:
        yield out, not_order


def _hex_ids_to_base64(doc: Any) -> Any:
    """OTLP/JSON writes trace and span ids in hex; protobuf's JSON parser wants base64."""
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if sp.get(key):
                        sp[key] = base64.b64encode(bytes.fromhex(sp[key])).decode()
    return doc


def parse_request(body: bytes | bytearray, content_type: str) -> Any:
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


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) reaches only this machine."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


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
        self.config_path = config.path
        # cumulative counts as stored in the source's checkpoint, and the latest requests' digests
        cp = store.checkpoints(source.name).get("")
        pos = cp.position if cp else {}
        self.filtered = int(pos.get("filtered", 0))
        self.not_order_spans = int(pos.get("not_order_spans", 0))
        self.recent: deque[str] = deque(pos.get("recent", []), maxlen=RECENT_REQUESTS)
        self.stop_event = threading.Event()
        self.force_stop = False
        self.lock = threading.Lock()  # the store write and the counts
        self.map_lock = threading.Lock()  # parsing and mapping a request
        self.last_data = time.monotonic()
        self.on_batch: Callable[[int], None] | None = None
        try:
            self.address = parse_listen(source.listen)
        except ValueError as e:
            raise ConfigError(
                str(e), path=config.path, key=f"source {source.name}: listen"
            ) from None
        self.token = self._token()
        self.tls = self._tls()
        self.limits = ReceiverLimits(
            source.max_body, source.max_decompressed_body, source.max_concurrency,
            source.read_timeout,
        )  # fmt: skip
        self.receiver: OtlpReceiver | None = None
        self.server: ServerThread | None = None  # set once the socket listens

    def _token(self) -> str | None:
        src = self.source
        if src.token_env is None:
            return src.token
        token = os.environ.get(src.token_env, "").strip()
        if not token:
            raise ConfigError(
                f"environment variable {src.token_env} is not set or empty",
                path=self.config_path, key=f"source {src.name}: token_env",
            )  # fmt: skip
        return token

    def _tls(self) -> tuple[str, str] | None:
        src = self.source
        if src.tls_cert is None or src.tls_key is None:
            return None
        base = src.base_dir or "."
        cert, key = (os.path.join(base, p) for p in (src.tls_cert, src.tls_key))
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        except OSError as e:  # ssl.SSLError is one too
            why = (e.reason if isinstance(e, ssl.SSLError) else e.strerror) or str(e)
            raise ConfigError(
                f"cannot load the certificate {cert} with the key {key}: {why}",
                path=self.config_path, key=f"source {src.name}: tls_cert",
            ) from None  # fmt: skip
        return cert, key

    def stop(self, *_: object) -> None:
        """Stop accepting; requests in flight are answered and stored first."""
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            if self.stop_event.is_set():  # a second signal: stop waiting for requests in flight
                self.force_stop = True
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def handle(self, body: bytes | bytearray, content_type: str) -> None:
        """Store one export request in one transaction (raises BadRequest or StoreError to the
        HTTP layer). One request is parsed and mapped at a time: that work holds the GIL anyway,
        and a large request expands ~15x in memory while it is mapped."""
        digest = hashlib.blake2b(body, digest_size=12).hexdigest()
        with self.map_lock:
            try:
                req = parse_request(body, content_type)
            except Exception as e:  # protobuf, JSON or id decoding: the sender's error
                raise BadRequest(f"cannot parse OTLP request: {e}") from None
            n_records = not_order = 0
            rows: list[tuple[Any, ...]] = []
            bad: list[QuarantineRecord] = []
            filtered: list[int] = []
            for records, n in iter_span_records(req, self.mapper):
                slice_rows, slice_bad, slice_filtered = map_batch(
                    self.mapper, RawBatch(records, [])
                )
                rows += slice_rows
                bad += slice_bad
                filtered += slice_filtered
                n_records += len(records)
                not_order += n
            del req
        with self.lock:  # one writer at a time keeps SQLite happy and counts exact
            repeat = digest in self.recent  # an exporter retrying a request we stored
            n_filtered = self.filtered + (0 if repeat else len(filtered))
            n_not_order = self.not_order_spans + (0 if repeat else not_order)
            recent = [*self.recent, digest][-RECENT_REQUESTS:] if not repeat else list(self.recent)
            position = {"last_batch": n_records, "filtered": n_filtered,
                        "not_order_spans": n_not_order, "recent": recent}  # fmt: skip
            cp = Checkpoint(self.source.name, "", position, now_us())
            res = self.store.write_batch(quarantined=bad, checkpoints=[cp], rows=rows)
            self.filtered, self.not_order_spans = n_filtered, n_not_order
            self.recent = deque(recent, maxlen=RECENT_REQUESTS)
            # the records were mapped slice by slice: count them here, the rest as every source
            self.report.records += n_records
            self.report.batches += 1 if n_records else 0
            if repeat:  # seen before: its filtered spans are redelivered, like its events
                record_write(self.report, RawBatch([], []), bad, res)
                self.report.redelivered += len(filtered)
            else:
                record_write(self.report, RawBatch([], []), bad, res, len(filtered))
                self.report.not_order_spans = (self.report.not_order_spans or 0) + not_order
            self.last_data = time.monotonic()
        if self.on_batch and n_records:
            self.on_batch(n_records)

    def _listen(self) -> ServerThread:
        host, port = self.address
        try:
            sock = bind(host, port)
        except OSError as e:
            why = e.strerror or str(e)
            raise SourceError(
                f"source {self.source.name}: cannot listen on {self.source.listen}: {why}"
            ) from None
        bound = sock.getsockname()
        self.address = (host, int(bound[1]))
        self.receiver = OtlpReceiver(self.source.name, self.handle, self.limits, self.token)
        try:
            server = ServerThread(self.receiver.app, sock, self.limits.read_timeout, self.tls)
        except BaseException:
            sock.close()
            raise
        self._warn_if_exposed()
        scheme = "https" if self.tls else "http"
        shown = f"[{host}]" if ":" in host else host
        logger.info("source %s: OTLP/HTTP on %s://%s:%d%s", self.source.name, scheme, shown,
                    self.address[1], TRACES_PATH)  # fmt: skip
        return server

    def _warn_if_exposed(self) -> None:
        if _is_loopback(self.address[0]):
            return
        name, where = self.source.name, self.source.listen
        if self.token is None:
            logger.warning(
                "source %s listens on %s, beyond loopback, without a token: anyone who can reach "
                "it can write events (set token_env, and tls_cert/tls_key)", name, where,
            )  # fmt: skip
        elif self.tls is None:
            logger.warning(
                "source %s listens on %s, beyond loopback, without TLS: its token travels in "
                "clear text (set tls_cert and tls_key, or put a TLS proxy in front)", name, where,
            )  # fmt: skip

    def run(self, on_batch: Callable[[int], None] | None = None) -> IngestReport:
        self.on_batch = on_batch
        t0 = time.perf_counter()
        server = self._listen()
        server.start()
        self.server = server
        self.last_data = time.monotonic()
        try:
            while not self.stop_event.wait(0.2) and server.alive():
                if self.max_messages is not None and self.report.records >= self.max_messages:
                    break
                if (
                    self.idle_timeout is not None
                    and time.monotonic() - self.last_data > self.idle_timeout
                ):
                    break
        finally:
            server.stop()
            while server.alive():  # requests in flight are answered (and stored) first
                server.thread.join(0.2)
                if self.force_stop:
                    server.stop(force=True)
        if server.error is not None:
            raise SourceError(
                f"source {self.source.name}: the OTLP receiver stopped: {server.error}"
            ) from server.error
        self._log_refusals()
        self.report.seconds = time.perf_counter() - t0
        return self.report

    def _log_refusals(self) -> None:
        refused = self.receiver.refused if self.receiver else {}
        if refused:  # 503s are retried by the exporters; the others are lost to them
            shown = ", ".join(f"{n:,} × {code}" for code, n in sorted(refused.items()))
            logger.warning("source %s: requests not stored: %s", self.source.name, shown)
