"""Mapping: one raw record -> an OrderEvent, or a QuarantineRecord saying why not."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ordertrail.collectors.base import RawRecord
from ordertrail.collectors.timestamps import TimestampError, parse_timestamp, zone
from ordertrail.schemas.config import SourceConfig
from ordertrail.schemas.event import PHASES, OrderEvent, QuarantineRecord, derive_event_id
from ordertrail.store.writer import make_row

_MISSING = object()


def get_path(data: Mapping[str, Any], path: str, parts: tuple[str, ...]) -> Any:
    """Value at a dotted path; a flat key spelled with dots (``"order.id"``) wins."""
    v = data.get(path, _MISSING)
    if v is not _MISSING or len(parts) == 1:
        return v
    cur: Any = data
    for p in parts:
        if isinstance(cur, dict):
            cur = cur.get(p, _MISSING)
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            return _MISSING
        if cur is _MISSING:
            return _MISSING
    return cur


Getter = Callable[[Mapping[str, Any]], Any]


def getter(path: str) -> Getter:
    """A fast accessor for one dotted path (plain ``dict.get`` when there is no dot)."""
    parts = tuple(path.split("."))
    if len(parts) == 1:
        return lambda d: d.get(path, _MISSING)
    if len(parts) == 2:
        a, b = parts

        def two(d: Mapping[str, Any]) -> Any:
            v = d.get(path, _MISSING)
            if v is not _MISSING:
                return v
            inner = d.get(a)
            if type(inner) is dict:
                return inner.get(b, _MISSING)
            return get_path(d, path, parts)

        return two
    return lambda d: get_path(d, path, parts)


def as_text_id(v: Any) -> str | None:
    """An id as text, unchanged; numbers are accepted (1234 -> "1234"); empty is None."""
    if v is None or v is _MISSING or isinstance(v, bool):
        return None
    if isinstance(v, str):
        return v if v.strip() else None
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, float):
        return repr(v)
    return None


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """W3C ``traceparent`` -> (trace_id, span_id), or None when malformed."""
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    if parts[1] == "0" * 32 or parts[2] == "0" * 16:
        return None
    try:
        int(parts[1], 16)
        int(parts[2], 16)
    except ValueError:
        return None
    return parts[1].lower(), parts[2].lower()


class Mapper:
    """Maps records of one source according to its config."""

    def __init__(self, source: SourceConfig, hops: tuple[str, ...] | list[str]):
        self.source = source
        self.name = source.name
        self.hops = frozenset(hops)
        self.tz = zone(source.timezone)
        self._order = getter(source.order_id)
        self._ts = getter(source.timestamp)
        self._hop_field = getter(source.hop_field) if source.hop_field else None
        self._phase = getter(source.phase) if source.phase else None
        self._eid = getter(source.event_id) if source.event_id else None
        self._trace = getter(source.trace_id) if source.trace_id else None
        self._span = getter(source.span_id) if source.span_id else None
        self._attrs = [(k, getter(p)) for k, p in source.attributes.items()]
        self._phase_map = {k.lower(): v for k, v in source.phase_map.items()}

    def _quarantine(self, rec: RawRecord, reason: str) -> QuarantineRecord:
        return QuarantineRecord(
            source=self.name,
            source_ref=rec.source_ref,
            reason=reason,
            raw=rec.raw.decode("utf-8", "replace"),
        )

    def map(self, rec: RawRecord) -> OrderEvent | QuarantineRecord:
        """One record as an OrderEvent, or a QuarantineRecord saying why not."""
        f = self._fields(rec)
        if isinstance(f, QuarantineRecord):
            return f
        event_id, order_id, hop, phase, occurred, trace_id, span_id, attrs = f
        return OrderEvent(event_id, order_id, hop, occurred, self.name, rec.source_ref, phase,
                          trace_id, span_id, attrs)  # fmt: skip

    def map_row(self, rec: RawRecord, ingested_at: int) -> tuple[Any, ...] | QuarantineRecord:
        """The same as :meth:`map`, as a ready ``events`` row (the bulk path: no objects)."""
        f = self._fields(rec)
        if isinstance(f, QuarantineRecord):
            return f
        event_id, order_id, hop, phase, occurred, trace_id, span_id, attrs = f
        return make_row(event_id, self.name, order_id, hop, phase, occurred, rec.source_ref,
                        trace_id, span_id, attrs, ingested_at)  # fmt: skip

    def _fields(self, rec: RawRecord) -> tuple[Any, ...] | QuarantineRecord:
        if rec.error:
            return self._quarantine(rec, rec.error)
        data = rec.data
        if data is None:
            try:
                data = orjson.loads(rec.raw)
            except orjson.JSONDecodeError as e:
                return self._quarantine(rec, f"malformed JSON: {e}")
            if not isinstance(data, dict):
                return self._quarantine(
                    rec, f"record is a JSON {type(data).__name__}, not an object"
                )
        src = self.source

        raw_oid = self._order(data)
        if type(raw_oid) is float and abs(raw_oid) >= 2**53 and rec.data is None:
            # orjson reads integers beyond 64 bits as floats; ids must stay exact
            data = json.loads(rec.raw)
            raw_oid = self._order(data)
        order_id = raw_oid if type(raw_oid) is str and raw_oid.strip() else as_text_id(raw_oid)
        if order_id is None:
            what = "missing" if raw_oid is _MISSING or raw_oid is None else "empty or invalid"
            return self._quarantine(rec, f"{what} order id (field {src.order_id!r})")

        if self._hop_field:
            hv = self._hop_field(data)
            if hv is _MISSING or hv is None or hv == "":
                return self._quarantine(rec, f"missing hop (field {src.hop_field!r})")
            hop = str(hv)
            hop = src.hop_map.get(hop, hop)
        else:
            hop = src.hop or ""
        if hop not in self.hops:
            return self._quarantine(rec, f"unknown hop {hop!r} (not declared in the pipeline)")

        tv = self._ts(data)
        if tv is _MISSING or tv is None:
            return self._quarantine(rec, f"missing timestamp (field {src.timestamp!r})")
        try:
            occurred = parse_timestamp(tv, self.tz)
        except TimestampError as e:
            return self._quarantine(rec, f"{e} (field {src.timestamp!r})")

        phase = "completed"
        if self._phase:
            pv = self._phase(data)
            if pv is not _MISSING and pv is not None and pv != "":
                p = str(pv).lower()
                p = self._phase_map.get(p, p)
                if p not in PHASES:
                    return self._quarantine(
                        rec,
                        f"unknown phase {pv!r} (field {src.phase!r}; expected "
                        "completed, started or failed, or map it with phase_map)",
                    )
                phase = p

        attrs: dict[str, Any] = {}
        for key, get in self._attrs:
            v = get(data)
            if v is not _MISSING:
                attrs[key] = v

        trace_id = span_id = None
        if self._trace:
            trace_id = as_text_id(self._trace(data))
        if self._span:
            span_id = as_text_id(self._span(data))
        if trace_id is None and "traceparent" in rec.headers:
            tp = parse_traceparent(rec.headers["traceparent"])
            if tp:
                trace_id, span_id = tp

        event_id = as_text_id(self._eid(data)) if self._eid else None
        if event_id is None:
            event_id = derive_event_id(self.name, order_id, hop, phase, occurred, rec.raw)
        return (event_id, order_id, hop, phase, occurred, trace_id, span_id, attrs)
