"""Mapping: one raw record -> an OrderEvent, a QuarantineRecord saying why not, or None when the
source's ``where`` does not take it (a *filtered* record: counted, neither stored nor quarantined).

Paths are dotted (``order.id``). A number indexes a list (``shipping_lines.0.code``, or
``shipping_lines[0].code``); ``[*]`` selects every element (``line_items[*].id``, ``items[*]``
for a list of plain ids, ``fulfillments[*].tracking_numbers[*]``). The whole path as one flat key
wins (``{"order.id": …}``); otherwise each level is a plain key first, then a key spelled with
dots over several parts (OpenTelemetry attribute names such as ``order.items``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from math import isfinite
from typing import Any

import orjson

from ordertrail.collectors.base import RawRecord
from ordertrail.collectors.timestamps import (
    TimestampError,
    formats_tried,
    parse_timestamp,
    parse_with_format,
    zone,
)
from ordertrail.errors import ConfigError
from ordertrail.schemas.config import AttributeSpec, SourceConfig
from ordertrail.schemas.event import PHASES, OrderEvent, QuarantineRecord, derive_event_id
from ordertrail.schemas.paths import (
    _MISSING,
    Getter,
    PathError,
    compile_path,
)
from ordertrail.store.writer import make_row

_EXACT_LIMIT = 2**53  # floats from here on may not be the integer the record wrote


def getter(path: str) -> Getter:
    """A single-valued accessor (the first value of a ``[*]`` path)."""
    get, multi = compile_path(path)
    if not multi:
        return get
    return lambda d: next(iter(get(d)), _MISSING)


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


def _reject_nul(fields: Mapping[str, Any]) -> None:
    """Raise _Reject naming the first field whose text holds a NUL character."""

    def has_nul(v: Any) -> bool:
        if isinstance(v, str):
            return "\x00" in v
        if isinstance(v, dict):
            return any(has_nul(k) or has_nul(x) for k, x in v.items())
        if isinstance(v, list | tuple):
            return any(has_nul(x) for x in v)
        return False

    for name, v in fields.items():
        if isinstance(v, dict):
            for k, x in v.items():
                if has_nul(k) or has_nul(x):
                    raise _Reject(f"a NUL character in {name} {k!r}")
        elif has_nul(v):
            raise _Reject(f"a NUL character in the {name}")


class _Reject(Exception):
    """The record goes to quarantine; args[0] is the reason."""


class _Inexact(Exception):
    """An id was read as a float that may not be the integer the record wrote."""


def _exact_int(text: str) -> int | str:
    """JSON integers as ints where the store can keep them (64 bits), else as their digits."""
    v = int(text)
    return v if -(2**63) <= v < 2**64 else text


def _exact_json(raw: bytes) -> Any:
    return json.loads(raw, parse_int=_exact_int)


def _matcher(values: tuple[Any, ...]) -> Callable[[Any], bool]:
    """``where`` values compared as JSON values: true is not "true" nor 1; 1 equals 1.0."""
    strs = frozenset(v for v in values if type(v) is str)
    bools = frozenset(v for v in values if type(v) is bool)
    nums = frozenset(v for v in values if type(v) is int or type(v) is float)

    def match(x: Any) -> bool:
        t = type(x)
        if t is str:
            return x in strs
        if t is bool:
            return x in bools
        if t is int or t is float:
            return x in nums
        return False

    return match


_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")


def _transform(name: str, spec: AttributeSpec) -> Callable[[Any], Any] | None:
    """strip_prefix (text), then scale (numbers and numeric text, in decimal), then case (text)."""
    if spec.scale is None and spec.case is None and spec.strip_prefix is None:
        return None
    prefix = spec.strip_prefix
    factor = Decimal(repr(spec.scale)) if spec.scale is not None else None
    case = spec.case

    def tf(v: Any) -> Any:
        if v is None:
            return None
        if prefix is not None and type(v) is str and v.startswith(prefix):
            v = v[len(prefix) :]
        if factor is not None:
            v = _scale(v, factor, name, spec.path)
        if type(v) is str:
            if case == "upper":
                v = v.upper()
            elif case == "lower":
                v = v.lower()
        return v

    return tf


def _scale(v: Any, factor: Decimal, name: str, path: str) -> int | float:
    t = type(v)
    d: Decimal | None = None
    if t is int:
        d = Decimal(v)
    elif t is float and isfinite(v):
        d = Decimal(repr(v))  # the float's shortest text: 0.1, not 0.1000000000000000055…
    elif t is str and _NUMBER.fullmatch(v):
        try:
            d = Decimal(v.strip())
        except InvalidOperation:
            d = None
    if d is None:
        raise _Reject(f"cannot scale {v!r}: not a number (attribute {name!r}, path {path!r})")
    r = d * factor
    if r == r.to_integral_value() and abs(r) < 2**63:
        return int(r)
    return float(r)


def _single(get: Getter, path: str) -> Getter:
    """A ``[*]`` path used where one value is expected: its one distinct value."""

    def one(d: Any) -> Any:
        found: list[Any] = []
        for v in get(d):
            if v is not None and v not in found:
                found.append(v)
        if len(found) > 1:
            raise _Reject(f"several values {found!r} (field {path!r}; one expected)")
        return found[0] if found else _MISSING

    return one


Fields = tuple[
    str, str, str, str, int, str | None, str | None, dict[str, Any], dict[str, list[str]] | None
]


class Mapper:
    """Maps records of one source according to its config."""

    def __init__(self, source: SourceConfig, hops: tuple[str, ...] | list[str]):
        self.source = source
        self.name = source.name
        self.hops = frozenset(hops)
        self.tz = zone(source.timezone)
        self._fmt = source.timestamp_format
        self._tried = formats_tried(source.timestamp_format)

        def one(path: str | None) -> Getter | None:
            if not path:
                return None
            get, multi = self._compile(path)
            return _single(get, path) if multi else get

        self._ts = one(source.timestamp)
        self._hop_field = one(source.hop_field)
        self._phase = one(source.phase)
        self._eid = one(source.event_id)
        self._trace = one(source.trace_id)
        self._span = one(source.span_id)
        self._order: Getter | None = None
        self._order_multi = False
        if source.order_id:
            self._order, self._order_multi = self._compile(source.order_id)
        self._objects = [(k, p, *self._compile(p)) for k, p in source.objects.items()]
        self._where = [(p, *self._compile(p), _matcher(v)) for p, v in source.where.items()]
        self._plain_attrs: list[tuple[str, Getter]] = []
        self._attrs: list[tuple[str, Getter, bool, Callable[[Any], Any] | None]] = []
        for k, spec in source.attributes.items():
            get, multi = self._compile(spec.path)
            tf = _transform(k, spec)
            if multi or tf is not None:
                self._attrs.append((k, get, multi, tf))
            else:
                self._plain_attrs.append((k, get))
        self._phase_map = {k.lower(): v for k, v in source.phase_map.items()}
        self._no_id_reason = self._describe_ids()

    def _compile(self, path: str) -> tuple[Getter, bool]:
        try:
            return compile_path(path)
        except PathError as e:
            raise ConfigError(f"source {self.name!r}: {e}") from None

    def _describe_ids(self) -> str:
        parts = []
        if self.source.order_id:
            parts.append(f"order_id field {self.source.order_id!r}")
        if self.source.objects:
            fields = ", ".join(f"{k!r} = {p!r}" for k, p in self.source.objects.items())
            parts.append(f"objects fields {fields}")
        return f"no order id and no object id ({'; '.join(parts)})"

    def _quarantine(self, rec: RawRecord, reason: str) -> QuarantineRecord:
        return QuarantineRecord(
            source=self.name,
            source_ref=rec.source_ref,
            reason=reason,
            raw=rec.raw.decode("utf-8", "replace"),
        )

    # -- the public face -------------------------------------------------------------------
    def map(self, rec: RawRecord) -> OrderEvent | QuarantineRecord | None:
        """One record as an OrderEvent, a QuarantineRecord saying why not, or None (filtered)."""
        f = self._fields(rec)
        if not isinstance(f, tuple):
            return f
        event_id, order_id, hop, phase, occurred, trace_id, span_id, attrs, objects = f
        return OrderEvent(event_id, order_id, hop, occurred, self.name, rec.source_ref, phase,
                          trace_id, span_id, attrs, objects=objects or {})  # fmt: skip

    def map_row(
        self, rec: RawRecord, ingested_at: int
    ) -> tuple[Any, ...] | QuarantineRecord | None:
        """The same as :meth:`map`, as a ready ``events`` row (the bulk path)."""
        f = self._fields(rec)
        if not isinstance(f, tuple):
            return f
        event_id, order_id, hop, phase, occurred, trace_id, span_id, attrs, objects = f
        return make_row(event_id, self.name, order_id, hop, phase, occurred, rec.source_ref,
                        trace_id, span_id, attrs, ingested_at, objects)  # fmt: skip

    def passes(self, data: Mapping[str, Any]) -> bool:
        """Whether a decoded record matches the source's ``where`` (every path, one value)."""
        for _, get, multi, match in self._where:
            v = get(data)
            if multi:
                if not any(match(x) for x in v):
                    return False
            elif v is _MISSING or not match(v):
                return False
        return True

    def where_mismatch(self, data: Mapping[str, Any]) -> str | None:
        """Why ``where`` does not take a decoded record ("type = 'charge.succeeded' (not …)")."""
        for path, get, multi, match in self._where:
            v = get(data)
            ok = any(match(x) for x in v) if multi else v is not _MISSING and match(v)
            if not ok:
                allowed = ", ".join(json.dumps(x) for x in self.source.where[path])
                shown = "missing" if v is _MISSING or v == [] else json.dumps(v, default=str)
                return f"{path} = {shown} (not {allowed})"
        return None

    def names_an_id(self, data: Mapping[str, Any]) -> bool:
        """Whether a decoded record carries an order id or an object id (OTLP: an order span)."""
        gets = [(self._order, self._order_multi)] if self._order else []
        gets += [(get, multi) for _, _, get, multi in self._objects]
        for get, multi in gets:
            assert get is not None
            vals = get(data) if multi else [get(data)]
            if any(v is not _MISSING and v is not None and v != "" for v in vals):
                return True
        return False

    def names_a_hop(self, data: Mapping[str, Any]) -> bool:
        """Whether a decoded record says its hop (a constant hop always does)."""
        if not self._hop_field:
            return True
        v = self._hop_field(data)
        return v is not _MISSING and v is not None and v != ""

    # -- the work ----------------------------------------------------------------------------
    def _fields(self, rec: RawRecord) -> Fields | QuarantineRecord | None:
        if rec.error:
            return self._quarantine(rec, rec.error)
        data = rec.data
        exact = data is not None
        if data is None:
            try:
                data = orjson.loads(rec.raw)
            except orjson.JSONDecodeError as e:
                return self._quarantine(rec, f"malformed JSON: {e}")
            if not isinstance(data, dict):
                return self._quarantine(
                    rec, f"record is a JSON {type(data).__name__}, not an object"
                )
        try:
            try:
                return self._extract(rec, data, exact)
            except _Inexact:
                # orjson reads integers beyond 64 bits as floats; ids must stay exact
                return self._extract(rec, _exact_json(rec.raw), True)
        except _Reject as e:
            return self._quarantine(rec, e.args[0])

    @staticmethod
    def _id(v: Any, exact: bool, label: str, field: str) -> str | None:
        """One id value as text (numbers too, exactly); None when empty; raises for a non-id."""
        t = type(v)
        if t is str:
            return v if v.strip() else None
        if v is _MISSING or v is None:
            return None
        if t is int:
            return str(v)
        if t is float and isfinite(v):
            if not exact and abs(v) >= _EXACT_LIMIT:
                raise _Inexact
            return as_text_id(v)
        raise _Reject(f"invalid {label} {v!r} ({field})")

    def _ids(self, values: list[Any], exact: bool, label: str, field: str) -> list[str]:
        """Distinct ids in order of appearance; empty values skipped."""
        out: list[str] = []
        for v in values:
            i = self._id(v, exact, label, field)
            if i is not None and i not in out:
                out.append(i)
        return out

    def _extract(self, rec: RawRecord, data: Any, exact: bool) -> Fields | None:
        src = self.source
        if self._where and not self.passes(data):
            return None

        order_id = ""
        raw_oid = _MISSING
        if self._order is not None:
            raw_oid = self._order(data)
            if type(raw_oid) is str and raw_oid.strip():
                order_id = raw_oid
            elif self._order_multi:
                ids = self._ids(raw_oid, exact, "order id", f"field {src.order_id!r}")
                if len(ids) > 1:
                    raise _Reject(
                        f"several order ids {ids!r} (field {src.order_id!r}; an event names one "
                        "order: name the others as objects)"
                    )
                order_id = ids[0] if ids else ""
            else:
                order_id = self._id(raw_oid, exact, "order id", f"field {src.order_id!r}") or ""

        objects: dict[str, list[str]] | None = None
        if self._objects:
            objects = {}
            for kind, path, get, multi in self._objects:
                v = get(data)
                if not multi and type(v) is list:
                    raise _Reject(
                        f"object id {v!r} is a list (objects field {kind!r} = {path!r}; "
                        f"select its elements with '{path}[*]')"
                    )
                field = f"objects field {kind!r} = {path!r}"
                ids = self._ids(v if multi else [v], exact, "object id", field)
                if ids:
                    objects[kind] = ids

        if not order_id and not objects:
            if src.objects or not src.order_id:
                raise _Reject(self._no_id_reason)
            empty = raw_oid is _MISSING or raw_oid is None or raw_oid == []
            raise _Reject(f"{'missing' if empty else 'empty'} order id (field {src.order_id!r})")

        if self._hop_field:
            hv = self._hop_field(data)
            if hv is _MISSING or hv is None or hv == "":
                raise _Reject(f"missing hop (field {src.hop_field!r})")
            hop = str(hv)
            hop = src.hop_map.get(hop, hop)
            if hop not in self.hops:
                raise _Reject(
                    f"unknown hop {hop!r} (field {src.hop_field!r}; not declared in the pipeline"
                    " — map it with hop_map)"
                )
        else:
            hop = src.hop or ""
            if hop not in self.hops:
                raise _Reject(f"unknown hop {hop!r} (not declared in the pipeline)")

        tv = self._ts(data) if self._ts else _MISSING
        if tv is _MISSING or tv is None:
            raise _Reject(f"missing timestamp (field {src.timestamp!r})")
        try:
            if self._fmt is None:
                occurred = parse_timestamp(tv, self.tz)
            else:
                occurred = parse_with_format(tv, self._fmt, self.tz)
        except TimestampError as e:
            raise _Reject(f"{e} (field {src.timestamp!r}; tried {self._tried})") from None

        phase = "completed"
        if self._phase:
            pv = self._phase(data)
            if pv is not _MISSING and pv is not None and pv != "":
                p = str(pv).lower()
                p = self._phase_map.get(p, p)
                if p not in PHASES:
                    raise _Reject(
                        f"unknown phase {pv!r} (field {src.phase!r}; expected "
                        "completed, started or failed, or map it with phase_map)"
                    )
                phase = p

        attrs: dict[str, Any] = {}
        for key, get in self._plain_attrs:
            v = get(data)
            if v is not _MISSING:
                attrs[key] = v
        for key, get, multi, tf in self._attrs:
            v = get(data)
            if multi:
                if not v:
                    continue
                if tf is not None:
                    v = [tf(x) for x in v]
            elif v is _MISSING:
                continue
            elif tf is not None:
                v = tf(v)
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

        event_id = None
        if self._eid:
            ev = self._eid(data)
            if type(ev) is float and not exact and abs(ev) >= _EXACT_LIMIT:
                raise _Inexact
            event_id = as_text_id(ev)
        if event_id is None:
            event_id = derive_event_id(self.name, rec.raw)
        if b"\\u0000" in rec.raw or b"\x00" in rec.raw:
            # PostgreSQL's text and jsonb cannot hold NUL: such a record would block every later
            # batch of the source, so it is quarantined (ids are never altered)
            _reject_nul(
                {
                    "order id": order_id,
                    "event id": event_id,
                    "trace id": trace_id,
                    "span id": span_id,
                    "objects": objects,
                    "attributes": attrs,
                }
            )
        return (event_id, order_id, hop, phase, occurred, trace_id, span_id, attrs, objects)
