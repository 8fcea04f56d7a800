from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from ordertrail.collectors.base import RawRecord
from ordertrail.collectors.mapping import Mapper, parse_traceparent
from ordertrail.collectors.timestamps import TimestampError, parse_timestamp, zone
from ordertrail.schemas.config import parse_config
from ordertrail.schemas.event import OrderEvent, QuarantineRecord

T = int(datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()) * 1_000_000


@pytest.mark.parametrize(
    "value",
    [
        "2026-03-01T12:00:00Z",
        "2026-03-01T12:00:00+00:00",
        "2026-03-01T14:00:00+02:00",
        "2026-03-01T07:00:00-05:00",
        "2026-03-01 12:00:00",
        1772366400,
        1772366400000,
        1772366400000000,
        "1772366400",
        "1772366400000",
        1772366400.0,
    ],
)
def test_timestamps_any_offset_and_epoch_unit(value: object) -> None:
    assert parse_timestamp(value) == T


def test_naive_timestamp_takes_the_zone() -> None:
    assert parse_timestamp("2026-03-01T13:00:00", zone("Europe/Berlin")) == T


@pytest.mark.parametrize("bad", ["yesterday", "", None, True, "2026-13-45T00:00:00", float("nan")])
def test_bad_timestamps(bad: object) -> None:
    with pytest.raises(TimestampError):
        parse_timestamp(bad)


def _mapper(**src: object) -> Mapper:
    base = {"name": "s", "kind": "file", "path": "p", "order_id": "order.id", "timestamp": "ts"}
    base.update(src)
    if "hop_field" not in base:
        base.setdefault("hop", "payment")
    cfg = parse_config({"hops": [{"name": "payment"}, {"name": "shipping"}], "sources": [base]})
    return Mapper(cfg.sources[0], cfg.hop_names)


def _map(m: Mapper, rec: dict[str, object] | bytes) -> OrderEvent | QuarantineRecord:
    raw = rec if isinstance(rec, bytes) else orjson.dumps(rec)
    return m.map(RawRecord(raw, "f.jsonl:7"))


@pytest.mark.parametrize(
    "oid", ["Mary Sethwamy-Smithson", "李小龍", "x" * 300, 'a/b\\c "quoted" ,;', "😀-order"]
)
def test_ids_round_trip_unchanged(oid: str) -> None:
    e = _map(_mapper(), {"order": {"id": oid}, "ts": "2026-03-01T12:00:00Z"})
    assert isinstance(e, OrderEvent)
    assert e.order_id == oid
    assert e.occurred_at == T


def test_mapping_fields_phase_attributes_and_ids() -> None:
    m = _mapper(
        hop_field="stage",
        hop_map={"paid": "payment"},
        phase="st",
        phase_map={"declined": "failed"},
        event_id="id",
        attributes=["amount", "customer.email"],
    )
    e = _map(
        m,
        {
            "order": {"id": 12},
            "ts": 1772366400000,
            "stage": "paid",
            "st": "DECLINED",
            "id": 99,
            "amount": "12.50",
            "customer": {"email": "a@b.c"},
        },
    )
    assert isinstance(e, OrderEvent)
    assert (e.order_id, e.hop, e.phase, e.event_id) == ("12", "payment", "failed", "99")
    assert e.attributes == {"amount": "12.50", "customer.email": "a@b.c"}
    assert e.source_ref == "f.jsonl:7"


def test_flat_dotted_key_wins() -> None:
    e = _map(_mapper(), {"order.id": "flat", "order": {"id": "nested"}, "ts": T})
    assert isinstance(e, OrderEvent) and e.order_id == "flat"


@pytest.mark.parametrize(
    ("rec", "reason"),
    [
        (b'{"order": {"id": "x"', "malformed JSON"),
        (b"[1, 2]", "record is a JSON list, not an object"),
        ({"ts": "2026-03-01T12:00:00Z"}, "missing order id (field 'order.id')"),
        (
            {"order": {"id": "  "}, "ts": "2026-03-01T12:00:00Z"},
            "empty order id (field 'order.id')",
        ),
        ({"order": {"id": {"x": 1}}, "ts": T}, "invalid order id {'x': 1} (field 'order.id')"),
        ({"order": {"id": "a"}}, "missing timestamp (field 'ts')"),
        (
            {"order": {"id": "a"}, "ts": "soon"},
            "unparseable timestamp 'soon' (field 'ts'; tried ISO-8601, epoch)",
        ),
    ],
)
def test_bad_records_are_quarantined_with_reason(
    rec: dict[str, object] | bytes, reason: str
) -> None:
    q = _map(_mapper(), rec)
    assert isinstance(q, QuarantineRecord)
    assert reason in q.reason
    assert q.source_ref == "f.jsonl:7"
    assert q.raw


def test_unknown_hop_and_phase_are_quarantined() -> None:
    m = _mapper(hop_field="stage", phase="p")
    q = _map(m, {"order": {"id": "a"}, "ts": T, "stage": "teleport"})
    assert isinstance(q, QuarantineRecord) and "unknown hop 'teleport'" in q.reason
    q = _map(m, {"order": {"id": "a"}, "ts": T, "stage": "payment", "p": "maybe"})
    assert isinstance(q, QuarantineRecord) and "unknown phase 'maybe'" in q.reason


def test_derived_event_id_is_deterministic() -> None:
    m = _mapper()
    rec = {"order": {"id": "a"}, "ts": T}
    a, b = _map(m, rec), _map(m, rec)
    c = _map(m, {"order": {"id": "a"}, "ts": T + 1})
    assert isinstance(a, OrderEvent) and isinstance(b, OrderEvent) and isinstance(c, OrderEvent)
    assert a.event_id == b.event_id != c.event_id
    # the source and the raw bytes only: another mapping of the same record is the same event
    d = _map(_mapper(timezone="Europe/Berlin", hop="shipping"), rec)
    assert isinstance(d, OrderEvent) and d.event_id == a.event_id
    e = _map(_mapper(name="other"), rec)
    assert isinstance(e, OrderEvent) and e.event_id != a.event_id


def test_traceparent_header_fills_trace_ids() -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert parse_traceparent(tp) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert parse_traceparent("garbage") is None
    m = _mapper()
    e = m.map(
        RawRecord(
            orjson.dumps({"order": {"id": "a"}, "ts": T}), "t:0:1", headers={"traceparent": tp}
        )
    )
    assert isinstance(e, OrderEvent) and e.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
