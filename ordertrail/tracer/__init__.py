"""Instrumentation for services: mark hops with OpenTelemetry spans, turn them into OrderEvents.

    from ordertrail.tracer import hop

    with hop("payment", order_id=oid, amount=12.5):
        charge(card)            # an exception marks the hop failed, and is re-raised

Spans carry ``order.id``, ``order.hop`` and ``order.phase``, so any OTLP exporter pointed at an
``ordertrail collect`` OTLP source records them. Without a collector, add
:class:`OrderEventExporter` to the service's TracerProvider: it turns finished hop spans into
OrderEvents and hands them to a sink — :class:`StoreSink` (straight into the store) or
:class:`KafkaSink` (JSON to a topic, with the W3C trace context in the message headers).
:func:`inject_headers` / :func:`extract_context` carry trace context through Kafka messages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Span, Status, StatusCode

from ordertrail.schemas.event import OrderEvent

logger = logging.getLogger(__name__)
TRACER_NAME = "ordertrail.tracer"

__all__ = [
    "EventSink",
    "KafkaSink",
    "OrderEventExporter",
    "StoreSink",
    "extract_context",
    "hop",
    "inject_headers",
    "span_to_event",
]


@contextmanager
def hop(name: str, order_id: str, **attributes: Any) -> Iterator[Span]:
    """A span for one hop of one order; an exception marks it ``failed`` and propagates."""
    tracer = trace.get_tracer(TRACER_NAME)
    attrs = {
        "order.id": str(order_id),
        "order.hop": name,
        **{k: v for k, v in attributes.items() if v is not None},
    }
    with tracer.start_as_current_span(f"hop {name}", attributes=attrs, record_exception=True,
                                      set_status_on_exception=False) as span:  # fmt: skip
        try:
            yield span
        except BaseException as e:
            span.set_attribute("order.phase", "failed")
            span.set_status(Status(StatusCode.ERROR, f"{type(e).__name__}: {e}"))
            raise
        else:
            span.set_attribute("order.phase", "completed")


def span_to_event(span: ReadableSpan, source: str = "tracer") -> OrderEvent | None:
    """A finished hop span as an OrderEvent (None for spans that are not hops)."""
    attrs = dict(span.attributes or {})
    oid, hop_name = attrs.pop("order.id", None), attrs.pop("order.hop", None)
    if oid is None or hop_name is None or span.context is None:
        return None
    phase = str(
        attrs.pop(
            "order.phase", "failed" if span.status.status_code == StatusCode.ERROR else "completed"
        )
    )
    trace_id = format(span.context.trace_id, "032x")
    span_id = format(span.context.span_id, "016x")
    t = span.end_time or span.start_time or 0
    return OrderEvent(
        event_id=f"{trace_id}:{span_id}", order_id=str(oid), hop=str(hop_name), occurred_at=t // 1000,
        source=source, source_ref=f"otlp:{trace_id}/{span_id}", phase=phase, trace_id=trace_id,
        span_id=span_id, attributes=attrs,
    )  # fmt: skip


class EventSink(Protocol):
    """Where OrderEventExporter sends events."""

    def send(self, events: Sequence[OrderEvent]) -> None: ...


class StoreSink:
    """Write events straight into an ordertrail store (idempotent: span ids are event ids)."""

    def __init__(self, store: Any, source: str = "tracer"):
        self.store = store
        self.source = source

    def send(self, events: Sequence[OrderEvent]) -> None:
        self.store.write_batch(events)


class KafkaSink:
    """Produce events as JSON to a topic, keyed by order id, with W3C trace context headers."""

    def __init__(self, producer: Any, topic: str):
        self.producer = producer
        self.topic = topic

    def send(self, events: Sequence[OrderEvent]) -> None:
        import orjson

        for e in events:
            value = orjson.dumps({
                "id": e.event_id, "order": {"id": e.order_id}, "stage": e.hop, "phase": e.phase,
                "ts": e.occurred_at // 1000, **e.attributes,
            })  # fmt: skip
            headers = (
                [("traceparent", f"00-{e.trace_id}-{e.span_id}-01".encode())] if e.trace_id else []
            )
            self.producer.send(self.topic, key=e.order_id.encode(), value=value, headers=headers)
        self.producer.flush()


class OrderEventExporter(SpanExporter):
    """A SpanExporter that turns hop spans into OrderEvents for a sink; other spans pass by.

    Like the SDK's exporters it never raises into the service: a failing sink is logged and
    reported as FAILURE, and counted in ``failures``.
    """

    def __init__(self, sink: EventSink, source: str = "tracer"):
        self.sink = sink
        self.source = source
        self.failures = 0
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        events = [e for e in (span_to_event(s, self.source) for s in spans) if e is not None]
        if not events:
            return SpanExportResult.SUCCESS
        try:
            self.sink.send(events)
        except Exception as e:  # never break the instrumented service
            self.failures += 1
            logger.warning("ordertrail exporter: sink failed for %d events: %s", len(events), e)
            return SpanExportResult.FAILURE
        self.exported += len(events)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


class _HeaderSetter:
    def set(self, carrier: list[tuple[str, bytes]], key: str, value: str) -> None:
        carrier[:] = [(k, v) for k, v in carrier if k != key]
        carrier.append((key, value.encode()))


class _HeaderGetter:
    def get(self, carrier: Sequence[tuple[str, bytes]], key: str) -> list[str] | None:
        vals = [
            v.decode() if isinstance(v, bytes | bytearray) else str(v)
            for k, v in carrier
            if k == key
        ]
        return vals or None

    def keys(self, carrier: Sequence[tuple[str, bytes]]) -> list[str]:
        return [k for k, _ in carrier]


def inject_headers(
    headers: list[tuple[str, bytes]] | None = None, ctx: Any = None
) -> list[tuple[str, bytes]]:
    """Kafka message headers carrying the current (or given) W3C trace context."""
    headers = list(headers or [])
    propagate.inject(headers, context=ctx, setter=_HeaderSetter())  # type: ignore[arg-type]
    return headers


def extract_context(headers: Sequence[tuple[str, bytes]] | None) -> otel_context.Context:
    """The trace context a producer put into Kafka message headers (for child spans)."""
    return propagate.extract(list(headers or []), getter=_HeaderGetter())  # type: ignore[arg-type]
