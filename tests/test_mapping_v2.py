"""Mapping of real vendors' records (v2): paths with [*], objects, where, transforms, formats.

The payloads are written in the shapes Shopify, Stripe and EasyPost publish in their docs
(trimmed to the fields that matter, ids as they send them).
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

import orjson
import pytest

from ordertrail.collectors.base import RawRecord
from ordertrail.collectors.mapping import Mapper
from ordertrail.errors import ConfigError
from ordertrail.schemas.config import parse_config
from ordertrail.schemas.event import OrderEvent, QuarantineRecord
from ordertrail.schemas.paths import MISSING, PathError, compile_path

PIPELINE = """
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
"""


def mapper(source_toml: str) -> Mapper:
    cfg = parse_config(tomllib.loads(PIPELINE + "[[sources]]\n" + source_toml))
    return Mapper(cfg.sources[0], cfg.hop_names)


def run(m: Mapper, rec: Any, ref: str = "hook:1") -> OrderEvent | QuarantineRecord | None:
    raw = rec if isinstance(rec, bytes) else orjson.dumps(rec)
    return m.map(RawRecord(raw, ref))


def event(m: Mapper, rec: Any) -> OrderEvent:
    e = run(m, rec)
    assert isinstance(e, OrderEvent), e
    return e


def reason(m: Mapper, rec: Any) -> str:
    q = run(m, rec)
    assert isinstance(q, QuarantineRecord), q
    return q.reason


# -- vendor payloads -----------------------------------------------------------------------------

SHOPIFY_ORDER = {  # orders/create webhook (REST Admin API), trimmed
    "id": 820982911946154508,
    "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
    "name": "#9999",
    "email": "jon@example.com",
    "created_at": "2026-03-01T07:00:00-05:00",
    "currency": "USD",
    "financial_status": "paid",
    "total_price": "403.00",
    "subtotal_price": "393.00",
    "line_items": [
        {
            "id": 866550311766439020,
            "admin_graphql_api_id": "gid://shopify/LineItem/866550311766439020",
            "name": "IPod Nano - 8GB",
            "price": "199.00",
            "product_id": 632910392,
            "quantity": 1,
            "sku": "IPOD2008BLACK",
            "variant_id": 808950810,
        },
        {
            "id": 141249953214522974,
            "admin_graphql_api_id": "gid://shopify/LineItem/141249953214522974",
            "name": "IPod Nano - 8GB",
            "price": "194.00",
            "product_id": 632910392,
            "quantity": 1,
            "sku": "IPOD2008RED",
            "variant_id": 49148385,
        },
    ],
    "shipping_lines": [
        {
            "id": 271878346596884015,
            "code": "Standard",
            "price": "10.00",
            "source": "shopify",
            "title": "Standard Shipping",
        }
    ],
}

SHOPIFY_FULFILLMENT = {  # fulfillments/create webhook, trimmed
    "id": 255858046,
    "order_id": 820982911946154508,
    "status": "success",
    "created_at": "2026-03-02T10:15:00-05:00",
    "service": "manual",
    "tracking_company": "UPS",
    "shipment_status": None,
    "email": "jon@example.com",
    "line_items": [
        {"id": 866550311766439020, "sku": "IPOD2008BLACK", "quantity": 1},
        {"id": 141249953214522974, "sku": "IPOD2008RED", "quantity": 1},
    ],
    "tracking_number": "1Z2345",
    "tracking_numbers": ["1Z2345", "1Z2346"],
    "tracking_url": "https://www.ups.com/WebTracking?loc=en_US&requester=ST&trackNums=1Z2345",
    "name": "#9999.1",
    "admin_graphql_api_id": "gid://shopify/Fulfillment/255858046",
}


def stripe_event(kind: str, *, amount: int = 2000, order: str = "820982911946154508") -> Any:
    """A Stripe event envelope around a PaymentIntent (or a Charge for charge.*)."""
    charge = kind.startswith("charge.")
    obj: dict[str, Any] = {
        "id": "ch_3MtwBwLkdIwHu7ix2ZBvCNRo" if charge else "pi_3MtwBwLkdIwHu7ix28a3tqPa",
        "object": "charge" if charge else "payment_intent",
        "amount": amount,
        "amount_received": amount if kind.endswith("succeeded") else 0,
        "currency": "usd",
        "customer": None,
        "metadata": {"order_id": order},
        "livemode": False,
        "status": {
            "payment_intent.created": "requires_payment_method",
            "payment_intent.succeeded": "succeeded",
            "payment_intent.payment_failed": "requires_payment_method",
            "charge.succeeded": "succeeded",
        }[kind],
    }
    if charge:
        obj["payment_intent"] = "pi_3MtwBwLkdIwHu7ix28a3tqPa"
        obj["paid"] = True
    if kind == "payment_intent.payment_failed":
        obj["last_payment_error"] = {"code": "card_declined", "decline_code": "generic_decline"}
    return {
        "id": f"evt_{kind.replace('.', '_')}_1",
        "object": "event",
        "api_version": "2024-06-20",
        "created": 1772366460,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": "req_8bLbBaBOEJMwZn", "idempotency_key": "a5b5c0f5-5d8f"},
        "type": kind,
    }


def easypost_tracker(status: str, code: str = "1Z2345") -> Any:
    """An EasyPost tracker.updated webhook Event; ``status`` of the Event is its delivery."""
    return {
        "id": "evt_0b2a3f4e1c2d11ed",
        "object": "Event",
        "mode": "production",
        "description": "tracker.updated",
        "previous_attributes": {"status": "pre_transit"},
        "created_at": "2026-03-03T08:00:05Z",
        "updated_at": "2026-03-03T08:00:05Z",
        "pending_urls": [],
        "completed_urls": [],
        "status": "completed",
        "result": {
            "id": "trk_c8e0edb5bb284caa934a0d3db23a148z",
            "object": "Tracker",
            "mode": "production",
            "tracking_code": code,
            "status": status,
            "status_detail": "arrived_at_facility",
            "created_at": "2026-03-02T16:00:00Z",
            "updated_at": "2026-03-03T08:00:00Z",
            "signed_by": None,
            "weight": None,
            "est_delivery_date": "2026-03-05T00:00:00Z",
            "shipment_id": None,
            "carrier": "UPS",
            "tracking_details": [
                {
                    "object": "TrackingDetail",
                    "message": "Arrived at Facility",
                    "status": status,
                    "datetime": "2026-03-03T08:00:00Z",
                    "source": "UPS",
                    "tracking_location": {"city": "Louisville", "state": "KY", "country": "US"},
                }
            ],
            "public_url": f"https://track.easypost.com/djE6dHJrX2{code}",
        },
    }


SHOPIFY_SOURCE = """
name = "shopify"
kind = "kafka"
topic = "shopify-orders"
hop = "checkout"
order_id = "id"
timestamp = "created_at"
objects = { item = "line_items[*].id" }
attributes = { name = "name", email = "email", amount = { path = "total_price", scale = 1 }, shipping = "shipping_lines.0.code", skus = "line_items[*].sku" }
"""

STRIPE_SOURCE = """
name = "stripe"
kind = "kafka"
topic = "stripe-events"
where = { type = ["payment_intent.succeeded", "payment_intent.payment_failed"] }
hop = "payment"
order_id = "data.object.metadata.order_id"
timestamp = "created"
event_id = "id"
phase = "type"
phase_map = { "payment_intent.payment_failed" = "failed", "payment_intent.succeeded" = "completed" }
objects = { payment = "data.object.id" }
attributes = { amount = { path = "data.object.amount", scale = 0.01 }, currency = { path = "data.object.currency", case = "upper" }, payment_ref = "data.object.id" }
"""

EASYPOST_SOURCE = """
name = "carrier"
kind = "file"
path = "easypost/*.jsonl"
hop_field = "result.status"
hop_map = { in_transit = "shipped", delivered = "delivered" }
objects = { shipment = "result.tracking_code" }
timestamp = "result.updated_at"
event_id = "id"
"""


def test_shopify_order_names_the_order_and_its_items_exactly() -> None:
    e = event(mapper(SHOPIFY_SOURCE), SHOPIFY_ORDER)
    assert e.order_id == "820982911946154508"
    assert e.objects == {"item": ["866550311766439020", "141249953214522974"]}
    assert e.attributes == {
        "name": "#9999",
        "email": "jon@example.com",
        "amount": 403,
        "shipping": "Standard",
        "skus": ["IPOD2008BLACK", "IPOD2008RED"],
    }
    assert e.occurred_at == 1_772_366_400_000_000  # 07:00 -05:00 is 12:00 UTC


def test_shopify_fulfillment_names_items_and_every_tracking_number() -> None:
    m = mapper("""
name = "fulfillments"
kind = "kafka"
topic = "shopify-fulfillments"
hop = "shipped"
order_id = "order_id"
timestamp = "created_at"
objects = { item = "line_items[*].id", shipment = "tracking_numbers[*]" }
attributes = ["tracking_company"]
""")
    e = event(m, SHOPIFY_FULFILLMENT)
    assert e.order_id == "820982911946154508"
    assert e.objects == {
        "item": ["866550311766439020", "141249953214522974"],
        "shipment": ["1Z2345", "1Z2346"],
    }
    assert e.attributes == {"tracking_company": "UPS"}


def test_easypost_tracker_names_no_order_only_its_shipment() -> None:
    m = mapper(EASYPOST_SOURCE)
    e = event(m, easypost_tracker("in_transit"))
    assert (e.order_id, e.hop, e.objects) == ("", "shipped", {"shipment": ["1Z2345"]})
    assert e.event_id == "evt_0b2a3f4e1c2d11ed"
    assert event(m, easypost_tracker("delivered")).hop == "delivered"
    # the Event's own "status" is its webhook delivery; the tracker's is result.status
    assert reason(m, easypost_tracker("return_to_sender")).startswith(
        "unknown hop 'return_to_sender' (field 'result.status'"
    )


# -- Stripe: where, phases, transforms -----------------------------------------------------------


def test_stripe_where_takes_payment_outcomes_and_filters_the_rest() -> None:
    m = mapper(STRIPE_SOURCE)
    ok = event(m, stripe_event("payment_intent.succeeded", amount=1999))
    assert (ok.order_id, ok.hop, ok.phase) == ("820982911946154508", "payment", "completed")
    assert ok.attributes == {
        "amount": 19.99,
        "currency": "USD",
        "payment_ref": "pi_3MtwBwLkdIwHu7ix28a3tqPa",
    }
    assert ok.objects == {"payment": ["pi_3MtwBwLkdIwHu7ix28a3tqPa"]}
    failed = event(m, stripe_event("payment_intent.payment_failed"))
    assert failed.phase == "failed" and failed.attributes["amount"] == 20
    assert run(m, stripe_event("payment_intent.created")) is None
    assert run(m, stripe_event("charge.succeeded")) is None
    assert m.where_mismatch(stripe_event("charge.succeeded")) == (
        'type = "charge.succeeded" (not "payment_intent.succeeded", '
        '"payment_intent.payment_failed")'
    )


def test_a_filtered_record_is_not_quarantined_even_when_it_would_not_map() -> None:
    m = mapper(STRIPE_SOURCE)
    broken = stripe_event("charge.succeeded")
    del broken["created"]
    assert run(m, broken) is None
    # but a record that cannot even be read is quarantined: where cannot be judged
    assert reason(m, b'{"type": "payment_intent.succeeded"').startswith("malformed JSON")


@pytest.mark.parametrize(
    ("where", "value", "taken"),
    [
        ("true", True, True),
        ("true", "true", False),
        ('"true"', "true", True),
        ('"true"', True, False),
        ("1", 1.0, True),
        ("1.0", 1, True),
        ("1", True, False),
        ("true", 1, False),
        ('"1"', 1, False),
        ("[1, 2]", 2, True),
        ('["a", "b"]', "c", False),
        ('"x"', None, False),
        ('"x"', ["x"], False),  # a list matches only through [*]
    ],
)
def test_where_compares_json_values(where: str, value: Any, taken: bool) -> None:
    m = mapper(f"""
name = "s"
kind = "kafka"
topic = "t"
where = {{ flag = {where} }}
hop = "checkout"
order_id = "id"
timestamp = "ts"
""")
    out = run(m, {"id": "o-1", "ts": 1772366400, "flag": value})
    assert isinstance(out, OrderEvent) if taken else out is None  # filtered, not quarantined


def test_where_missing_path_filters_and_wildcards_match_any_element() -> None:
    m = mapper("""
name = "s"
kind = "kafka"
topic = "t"
where = { "line_items[*].vendor" = "Apple", financial_status = ["paid", "partially_paid"] }
hop = "checkout"
order_id = "id"
timestamp = "created_at"
""")
    rec = {
        **SHOPIFY_ORDER,
        "line_items": [{"id": 1, "vendor": "Acme"}, {"id": 2, "vendor": "Apple"}],
    }
    assert isinstance(run(m, rec), OrderEvent)
    assert run(m, {**rec, "line_items": [{"id": 1, "vendor": "Acme"}]}) is None
    assert run(m, {**rec, "line_items": []}) is None
    assert run(m, {k: v for k, v in rec.items() if k != "financial_status"}) is None
    assert run(m, {**rec, "financial_status": "refunded"}) is None


# -- transforms ------------------------------------------------------------------------------


def transformed(spec: str, value: Any) -> Any:
    m = mapper(f"""
name = "s"
kind = "kafka"
topic = "t"
hop = "checkout"
order_id = "id"
timestamp = "ts"
attributes = {{ v = {spec} }}
""")
    out = run(m, {"id": "o-1", "ts": 1772366400, "data": {"value": value}})
    if isinstance(out, QuarantineRecord):
        return out
    assert isinstance(out, OrderEvent)
    return out.attributes.get("v", "absent")


@pytest.mark.parametrize(
    ("spec", "value", "stored"),
    [
        ('{ path = "data.value", scale = 0.01 }', 1999, 19.99),
        ('{ path = "data.value", scale = 0.01 }', 2000, 20),
        ('{ path = "data.value", scale = 0.01 }', "1999", 19.99),
        ('{ path = "data.value", scale = 0.01 }', " 1999 ", 19.99),
        ('{ path = "data.value", scale = 0.01 }', 10.1, 0.101),
        ('{ path = "data.value", scale = 0.001 }', 1, 0.001),
        ('{ path = "data.value", scale = 100 }', 0.29, 29),
        ('{ path = "data.value", scale = 0.01 }', -150, -1.5),
        ('{ path = "data.value", scale = 0.01 }', "1e3", 10),
        ('{ path = "data.value", scale = 0.01 }', None, None),
        ('{ path = "data.value", case = "upper" }', "usd", "USD"),
        ('{ path = "data.value", case = "lower" }', "EUR", "eur"),
        ('{ path = "data.value", case = "upper" }', 12, 12),
        ('{ path = "data.value", strip_prefix = "gid://shopify/Order/" }', "gid://shopify/Order/8209", "8209"),
        ('{ path = "data.value", strip_prefix = "gid://shopify/Order/" }', "8209", "8209"),
        ('{ path = "data.value", strip_prefix = "EUR ", scale = 0.01 }', "EUR 1250", 12.5),
        ('{ path = "data.value", strip_prefix = "sku-", case = "upper" }', "sku-ab1", "AB1"),
        ('{ path = "data.missing", scale = 0.01, case = "upper" }', 1, "absent"),
    ],
)  # fmt: skip
def test_attribute_transforms(spec: str, value: Any, stored: Any) -> None:
    got = transformed(spec, value)
    assert got == stored and type(got) is type(stored)


@pytest.mark.parametrize("value", ["12,50", "abc", True, [1], {"a": 1}, "", "NaN", "1_000"])
def test_scale_on_a_non_number_quarantines_naming_the_attribute_and_path(value: Any) -> None:
    q = transformed('{ path = "data.value", scale = 0.01 }', value)
    assert isinstance(q, QuarantineRecord)
    assert q.reason == (f"cannot scale {value!r}: not a number (attribute 'v', path 'data.value')")


def test_transforms_apply_to_every_element_of_a_wildcard_attribute() -> None:
    m = mapper("""
name = "s"
kind = "kafka"
topic = "t"
hop = "checkout"
order_id = "id"
timestamp = "created_at"
attributes = { prices = { path = "line_items[*].price", scale = 100 }, none = "line_items[*].nothing" }
""")
    e = event(m, SHOPIFY_ORDER)
    assert e.attributes == {"prices": [19900, 19400]}


# -- objects, ids ------------------------------------------------------------------------------


def objects_of(paths: str, rec: Any, order_id: str | None = None) -> Any:
    oid = f'order_id = "{order_id}"\n' if order_id else ""
    m = mapper(f"""
name = "s"
kind = "kafka"
topic = "t"
hop = "picked"
timestamp = "ts"
objects = {{ {paths} }}
{oid}""")
    out = run(m, {"ts": 1772366400, **rec})
    return out.objects if isinstance(out, OrderEvent) else out


@pytest.mark.parametrize(
    ("rec", "objects"),
    [
        ({"items": ["A", "B", "A", "", None, "C"]}, {"item": ["A", "B", "C"]}),
        ({"items": [5, 5.0, 7]}, {"item": ["5", "7"]}),
        ({"items": [], "o": "x"}, {}),
        ({"o": "x"}, {}),
        ({"items": None, "o": "x"}, {}),
        ({"items": "not a list", "o": "x"}, {}),
    ],
)
def test_wildcard_ids_dedupe_in_order_and_skip_empty(rec: Any, objects: Any) -> None:
    assert objects_of('item = "items[*]"', rec, order_id="o") == objects


def test_nested_wildcards_and_missing_levels() -> None:
    rec = {
        "fulfillments": [
            {"tracking_numbers": ["1Z1", "1Z2"]},
            {"tracking_numbers": []},
            {},
            {"tracking_numbers": ["1Z2", "1Z3"]},
        ]
    }
    got = objects_of('shipment = "fulfillments[*].tracking_numbers[*]"', rec)
    assert got == {"shipment": ["1Z1", "1Z2", "1Z3"]}


def test_a_list_without_wildcard_is_quarantined_with_a_hint() -> None:
    q = objects_of('shipment = "tracking_numbers"', {"tracking_numbers": ["1Z1"]})
    assert isinstance(q, QuarantineRecord)
    assert q.reason == (
        "object id ['1Z1'] is a list (objects field 'shipment' = 'tracking_numbers'; "
        "select its elements with 'tracking_numbers[*]')"
    )
    q = objects_of('item = "line_items[*]"', {"line_items": [{"id": 1}]})
    assert isinstance(q, QuarantineRecord)
    assert q.reason == "invalid object id {'id': 1} (objects field 'item' = 'line_items[*]')"


def test_neither_order_nor_object_id_names_every_field() -> None:
    m = mapper("""
name = "s"
kind = "kafka"
topic = "t"
hop = "picked"
order_id = "x"
timestamp = "ts"
objects = { item = "line_items[*].id", shipment = "tracking_code" }
""")
    rec = {"ts": 1772366400, "line_items": [], "x": ""}
    assert reason(m, rec) == (
        "no order id and no object id (order_id field 'x'; objects fields "
        "'item' = 'line_items[*].id', 'shipment' = 'tracking_code')"
    )
    e = event(m, {"ts": 1772366400, "tracking_code": "1Z9"})  # an object alone is enough
    assert (e.order_id, e.objects) == ("", {"shipment": ["1Z9"]})
    e = event(m, {"ts": 1772366400, "x": "o-1"})  # an order alone too
    assert (e.order_id, e.objects) == ("o-1", {})


def test_an_objects_only_source() -> None:
    m = mapper(EASYPOST_SOURCE)
    rec = easypost_tracker("in_transit")
    rec["result"]["tracking_code"] = None
    assert reason(m, rec) == (
        "no order id and no object id (objects fields 'shipment' = 'result.tracking_code')"
    )


def test_large_integer_ids_stay_exact() -> None:
    beyond_64 = 123456789012345678901234567890
    raw = json.dumps(
        {
            "id": beyond_64,
            "created_at": "2026-03-01T12:00:00Z",
            "line_items": [{"id": beyond_64 + 1, "sku": "S"}, {"id": 2**63 + 1}],
            "total_price": beyond_64,
        }
    ).encode()
    m = mapper(
        SHOPIFY_SOURCE.replace(
            'amount = { path = "total_price", scale = 1 }', 'amount = "total_price"'
        )
    )
    e = run(m, raw)
    assert isinstance(e, OrderEvent), e
    assert e.order_id == str(beyond_64)
    assert e.objects == {"item": [str(beyond_64 + 1), str(2**63 + 1)]}
    assert e.attributes["amount"] == str(beyond_64)  # kept exact, as its digits
    row = m.map_row(RawRecord(raw, "x:1"), 0)  # and the row can be stored
    assert isinstance(row, tuple)
    # within 64 bits and beyond 2**53 (Shopify's own ids): exact without the slow path
    e = event(m, {**SHOPIFY_ORDER, "id": 2**60 + 1})
    assert e.order_id == str(2**60 + 1)


def test_order_id_through_a_wildcard_must_be_one_order() -> None:
    m = mapper("""
name = "s"
kind = "kafka"
topic = "t"
hop = "picked"
order_id = "lines[*].order"
timestamp = "ts"
""")
    assert event(m, {"ts": 1772366400, "lines": [{"order": "A"}, {"order": "A"}]}).order_id == "A"
    assert reason(m, {"ts": 1772366400, "lines": [{"order": "A"}, {"order": "B"}]}) == (
        "several order ids ['A', 'B'] (field 'lines[*].order'; an event names one order: "
        "name the others as objects)"
    )


# -- paths ---------------------------------------------------------------------------------------

PATH_DATA = {
    "order.id": "flat",
    "order": {"id": "nested", "lines": [{"sku": "a"}, {"sku": "b"}]},
    "shipping_lines": [{"code": "Standard"}, {"code": "Express"}],
    "attrs": {"order.items": ["i1", "i2"], "deep": {"x.y": {"z": 1}}},
    "matrix": [[1, 2], [3]],
    "m": {"0": "zero-key"},
}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("order.id", "flat"),
        ("shipping_lines.0.code", "Standard"),
        ("shipping_lines.1.code", "Express"),
        ("shipping_lines[1].code", "Express"),
        ("shipping_lines.2.code", "missing"),
        ("shipping_lines.code", "missing"),
        ("order.lines.1.sku", "b"),
        ("attrs.order.items", ["i1", "i2"]),
        ("attrs.deep.x.y.z", 1),
        ("m.0", "zero-key"),
        ("matrix.0.1", 2),
        ("matrix[0][1]", 2),
        ("nothing.here", "missing"),
        ("order.id.more", "missing"),
    ],
)
def test_single_paths(path: str, value: Any) -> None:
    get, multi = compile_path(path)
    got = get(PATH_DATA)
    assert not multi
    assert got is MISSING if value == "missing" else got == value


@pytest.mark.parametrize(
    ("path", "values"),
    [
        ("order.lines[*].sku", ["a", "b"]),
        ("attrs.order.items[*]", ["i1", "i2"]),
        ("shipping_lines[*].code", ["Standard", "Express"]),
        ("matrix[*][*]", [1, 2, 3]),
        ("matrix[*].0", [1, 3]),
        ("nothing[*]", []),
        ("order[*]", []),
        ("order.id[*]", []),
    ],
)
def test_wildcard_paths(path: str, values: list[Any]) -> None:
    get, multi = compile_path(path)
    assert multi and get(PATH_DATA) == values


@pytest.mark.parametrize("path", ["", "a..b", "a.", "items[x]", "items[", "[*]", "a[*]b"])
def test_bad_paths(path: str) -> None:
    with pytest.raises(PathError):
        compile_path(path)
    with pytest.raises(ConfigError, match="bad path"):
        mapper(f"""
name = "s"
kind = "kafka"
topic = "t"
hop = "picked"
order_id = "id"
timestamp = "ts"
attributes = {{ a = "{path or "x..y"}" }}
""")


# -- timestamps --------------------------------------------------------------------------------

WAREHOUSE = """
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


@pytest.mark.parametrize(
    ("value", "utc_us"),
    [
        ("01.03.2026 13:00", 1_772_366_400_000_000),  # CET: UTC+1
        ("01.07.2026 14:00", 1_782_907_200_000_000),  # CEST: UTC+2
        ("2026-03-01T12:00:00Z", 1_772_366_400_000_000),  # ISO-8601 after the format
        ("2026-03-01T13:00:00", 1_772_366_400_000_000),  # naive ISO: the source's zone
        (1772366400, 1_772_366_400_000_000),  # epoch after that
    ],
)
def test_timestamp_format_first_then_iso_and_epoch(value: Any, utc_us: int) -> None:
    m = mapper(WAREHOUSE)
    rec = RawRecord(
        b"raw", "wh/a.csv:2", data={"order": "o-1", "sku_line": "L1", "picked_at": value}
    )
    e = m.map(rec)
    assert isinstance(e, OrderEvent) and e.occurred_at == utc_us


def test_timestamp_reasons_name_the_field_and_the_formats_tried() -> None:
    m = mapper(WAREHOUSE)
    q = m.map(RawRecord(b"raw", "wh/a.csv:3", data={"order": "o-1", "picked_at": "31/12/2026"}))
    assert isinstance(q, QuarantineRecord)
    assert q.reason == (
        "unparseable timestamp '31/12/2026' (field 'picked_at'; tried '%d.%m.%Y %H:%M', "
        "ISO-8601, epoch)"
    )
    q = m.map(RawRecord(b"raw", "wh/a.csv:4", data={"order": "o-1"}))
    assert isinstance(q, QuarantineRecord) and q.reason == "missing timestamp (field 'picked_at')"


def test_timestamp_format_with_offset_and_on_integers() -> None:
    m = mapper(WAREHOUSE.replace("%d.%m.%Y %H:%M", "%Y%m%d%H%M%S"))
    e = m.map(RawRecord(b"r", "x", data={"order": "o", "picked_at": 20260301130000}))
    assert isinstance(e, OrderEvent) and e.occurred_at == 1_772_366_400_000_000  # not an epoch
    m = mapper(WAREHOUSE.replace("%d.%m.%Y %H:%M", "%d/%m/%Y %H:%M %z"))
    e = m.map(RawRecord(b"r", "x", data={"order": "o", "picked_at": "01/03/2026 07:00 -0500"}))
    assert isinstance(e, OrderEvent) and e.occurred_at == 1_772_366_400_000_000


# -- event ids -----------------------------------------------------------------------------------


def test_derived_ids_depend_on_the_source_and_raw_bytes_only() -> None:
    raw = b"4711,L1,01.03.2026 13:00"
    data = {"order": "4711", "sku_line": "L1", "picked_at": "01.03.2026 13:00"}
    wrong_zone = mapper(WAREHOUSE.replace("Europe/Berlin", "UTC"))
    fixed = mapper(WAREHOUSE)
    other_path = mapper(WAREHOUSE.replace('order_id = "order"', 'order_id = "sku_line"'))
    a, b, c = (
        m.map(RawRecord(raw, "wh/a.csv:2", data=data)) for m in (wrong_zone, fixed, other_path)
    )
    assert isinstance(a, OrderEvent) and isinstance(b, OrderEvent) and isinstance(c, OrderEvent)
    assert a.occurred_at != b.occurred_at and a.order_id != c.order_id
    assert a.event_id == b.event_id == c.event_id
    moved = fixed.map(RawRecord(raw, "wh/b.csv:9", data=data))  # a copy elsewhere: the same event
    assert isinstance(moved, OrderEvent) and moved.event_id == a.event_id
    other = fixed.map(RawRecord(raw + b" ", "wh/a.csv:2", data=data))
    assert isinstance(other, OrderEvent) and other.event_id != a.event_id
