"""Hand-written reconciliation scenarios, expected findings worked out by hand from the documents.

Each case: {"name", "config", "events", "as_of", "watermarks", "expected"}. Times are written in
minutes (``m(x)``) and stored as integer microseconds. The comment above each case gives the
reasoning (DESIGN.md section, or notes/semantics.md "§n").
"""

from __future__ import annotations

from typing import Any

M = 60_000_000  # one minute in microseconds


def m(minutes: float) -> int:
    return int(minutes * M)


def ev(
    order: str,
    hop: str,
    t: float,
    *,
    objs: dict[str, list[str]] | None = None,
    phase: str = "completed",
    src: str = "s",
    eid: str | None = None,
    **attributes: Any,
) -> dict[str, Any]:
    """One event dict. The default event id is derived from its content (unique in a case)."""
    if eid is None:
        tag = ",".join(f"{k}={'+'.join(v)}" for k, v in sorted((objs or {}).items()))
        eid = f"{order}/{hop}/{t}/{phase}/{tag}"
    return {
        "source": src,
        "event_id": eid,
        "order_id": order,
        "objects": {k: list(v) for k, v in (objs or {}).items()},
        "hop": hop,
        "phase": phase,
        "occurred_at": m(t),
        "attributes": dict(attributes),
    }


def f(
    order: str | None,
    kind: str,
    hop: str,
    from_hop: str | None,
    since: float,
    objects: list[str] | None = None,
    field: str | None = None,
) -> dict[str, Any]:
    """One expected finding."""
    return {
        "order_id": order,
        "kind": kind,
        "hop": hop,
        "from_hop": from_hop,
        "since": m(since),
        "objects": sorted(objects or []),
        "field": field,
    }


SRC = [{"name": "s", "hop_field": "stage"}]


def pipeline(
    hops: list[dict[str, Any]],
    *,
    objects: list[dict[str, Any]] | None = None,
    checks: list[dict[str, Any]] | None = None,
    sources: list[dict[str, Any]] | None = None,
    clock_skew: str = "2m",
    lookback: str = "30d",
) -> dict[str, Any]:
    return {
        "pipeline": {"name": "t", "clock_skew": clock_skew, "lookback": lookback},
        "objects": list(objects or []),
        "hops": hops,
        "checks": list(checks or []),
        "sources": list(sources if sources is not None else SRC),
    }


# Linear: checkout -15m-> payment -1h-> shipping; cancelled closes. Entry: checkout. Longest: 75m.
LINEAR_HOPS: list[dict[str, Any]] = [
    {"name": "checkout", "next": ["payment"], "within": "15m"},
    {"name": "payment", "next": ["shipping"], "within": "1h", "unique": True},
    {"name": "shipping"},
    {"name": "cancelled", "closes": True},
]
LINEAR = pipeline(LINEAR_HOPS)


def ok(order: str, t0: float = 100) -> list[dict[str, Any]]:
    """A complete order on LINEAR starting at t0."""
    return [ev(order, "checkout", t0), ev(order, "payment", t0 + 5), ev(order, "shipping", t0 + 30)]


# Promise pipeline: checkout -10m-> confirmation -30m-> packed -30m-> shipped -60m-> delivered;
# confirmation promises shipped within 60m.
PROMISE = pipeline(
    [
        {"name": "checkout", "next": ["confirmation"], "within": "10m"},
        {
            "name": "confirmation",
            "next": ["packed"],
            "within": "30m",
            "promises": ["shipped"],
            "promise_within": "60m",
        },
        {"name": "packed", "next": ["shipped"], "within": "30m"},
        {"name": "shipped", "next": ["delivered"], "within": "60m"},
        {"name": "delivered"},
    ]
)

# Items: checkout -60m-> picked (each item) -60m-> shipped.
ITEMS = pipeline(
    [
        {"name": "checkout", "next": ["picked"], "within": "60m"},
        {"name": "picked", "each": "item", "next": ["shipped"], "within": "60m"},
        {"name": "shipped"},
    ],
    objects=[{"name": "item"}],
)

# Items, two each hops: checkout -60m-> picked (item) -30m-> packed (item) -60m-> shipped.
ITEMS2 = pipeline(
    [
        {"name": "checkout", "next": ["picked"], "within": "60m"},
        {"name": "picked", "each": "item", "next": ["packed"], "within": "30m"},
        {"name": "packed", "each": "item", "next": ["shipped"], "within": "60m"},
        {"name": "shipped"},
    ],
    objects=[{"name": "item"}],
)

# Delivery: picked offers shipping or pickup, conditioned on `delivery`.
DELIVERY = pipeline(
    [
        {"name": "checkout", "next": ["picked"], "within": "60m"},
        {
            "name": "picked",
            "next_any": ["shipped", "ready_for_pickup"],
            "within": {"shipped": "2h", "ready_for_pickup": "1h"},
            "when": {
                "ready_for_pickup": {"delivery": "pickup"},
                "shipped": {"delivery": ["ship", "express"]},
            },
        },
        {"name": "shipped", "next": ["delivered"], "within": "5h"},
        {"name": "delivered"},
        {"name": "ready_for_pickup"},
    ]
)

# Shipments: checkout -60m-> shipped -2h-> delivered. Longest path 180m.
SHIPMENTS = pipeline(
    [
        {"name": "checkout", "next": ["shipped"], "within": "60m"},
        {"name": "shipped", "next": ["delivered"], "within": "2h"},
        {"name": "delivered"},
    ],
    objects=[{"name": "shipment"}],
)


CASES: list[dict[str, Any]] = [
    {
        "name": "complete_orders_have_no_findings",
        "config": LINEAR,
        "events": ok("O1") + ok("O2", 110),
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [],
    },
    # O1: payment->shipping deadline 105+60=165 passed, no shipping. O2 reached payment later
    # (120 > 105) and shipping after O1's deadline (200 > 165): vanished. O2 itself is late
    # (deadline 180, shipping at 200).
    {
        "name": "vanished_when_a_later_order_moved_on",
        "config": LINEAR,
        "events": [
            ev("O1", "checkout", 100),
            ev("O1", "payment", 105),
            ev("O2", "checkout", 110),
            ev("O2", "payment", 120),
            ev("O2", "shipping", 200),
        ],
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [
            f("O1", "vanished", "shipping", "payment", 165),
            f("O2", "late", "shipping", "payment", 200),
        ],
    },
    # O1's deadline is 165. O0 reached payment earlier (101 < 105): does not count though it
    # shipped at 250. O2 reached payment later but shipped at 150, before O1's deadline: does not
    # count. -> stalled. O0 is late (deadline 161, shipping at 250).
    {
        "name": "stalled_when_nothing_later_passed_b",
        "config": LINEAR,
        "events": [
            ev("O0", "checkout", 100),
            ev("O0", "payment", 101),
            ev("O0", "shipping", 250),
            ev("O1", "checkout", 102),
            ev("O1", "payment", 105),
            ev("O2", "checkout", 110),
            ev("O2", "payment", 120),
            ev("O2", "shipping", 150),
        ],
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [
            f("O0", "late", "shipping", "payment", 250),
            f("O1", "stalled", "shipping", "payment", 165),
        ],
    },
    # judge(shipping) = min(as_of, wm(wh)) = 150: O1's deadline 165 is not judged yet.
    # judge(payment) = 300: O2's checkout->payment deadline 115 is; the only population unit
    # (O1: t_a 100) did not reach checkout later than O2 (100) -> stalled.
    {
        "name": "watermark_holds_a_hop_back",
        "config": pipeline(
            LINEAR_HOPS,
            sources=[
                {"name": "web", "hop": "checkout"},
                {"name": "pay", "hop": "payment"},
                {"name": "wh", "hop": "shipping"},
            ],
        ),
        "events": [
            ev("O1", "checkout", 100, src="web"),
            ev("O1", "payment", 105, src="pay"),
            ev("O2", "checkout", 100, src="web"),
        ],
        "as_of": m(300),
        "watermarks": {"web": m(300), "pay": m(300), "wh": m(150)},
        "expected": [f("O2", "stalled", "payment", "checkout", 115)],
    },
    # wh has no watermark (missing from the dict): judge(shipping) = -inf, nothing at shipping
    # is judged -- but `late` is judged whatever the watermarks (§4).
    {
        "name": "source_without_watermark_judges_nothing_but_late_stays",
        "config": pipeline(
            LINEAR_HOPS,
            sources=[
                {"name": "web", "hop": "checkout"},
                {"name": "pay", "hop": "payment"},
                {"name": "wh", "hop": "shipping"},
            ],
        ),
        "events": [
            ev("O1", "checkout", 100, src="web"),
            ev("O1", "payment", 105, src="pay"),
            ev("O3", "checkout", 100, src="web"),
            ev("O3", "payment", 101, src="pay"),
            ev("O3", "shipping", 200, src="wh"),
        ],
        "as_of": m(300),
        "watermarks": {"web": m(300), "pay": m(300)},
        "expected": [f("O3", "late", "shipping", "payment", 200)],
    },
    # A hop_field source feeds every hop: with no watermark nothing is judged (no stalled for O1,
    # no orphan for O2); duplicate and late do not depend on judge.
    {
        "name": "hop_field_source_without_watermark_blocks_every_hop",
        "config": LINEAR,
        "events": [
            ev("O1", "checkout", 100),
            ev("O2", "payment", 100),
            ev("O3", "checkout", 100),
            ev("O3", "payment", 101, eid="p1"),
            ev("O3", "payment", 105, eid="p2"),
            ev("O3", "shipping", 120),
            ev("O4", "checkout", 100),
            ev("O4", "payment", 200),
        ],
        "as_of": m(300),
        "watermarks": {"s": None},
        "expected": [
            f("O3", "duplicate", "payment", None, 105),
            f("O4", "late", "payment", "checkout", 200),
        ],
    },
    # O1 cancelled: no stalled. O2 cancelled too, but its late payment stays (DESIGN: late seen
    # stays after a closing hop).
    {
        "name": "closing_hop_ends_expectations_but_late_stays",
        "config": LINEAR,
        "events": [
            ev("O1", "checkout", 100),
            ev("O1", "payment", 105),
            ev("O1", "cancelled", 110),
            ev("O2", "checkout", 100),
            ev("O2", "payment", 200),
            ev("O2", "cancelled", 210),
        ],
        "as_of": m(400),
        "watermarks": {"s": m(400)},
        "expected": [f("O2", "late", "payment", "checkout", 200)],
    },
    # The population counts closed orders too (§4): O2 (closed) reached payment later than O1 and
    # shipping after O1's deadline 165 -> O1 vanished. O2's late shipping stays.
    {
        "name": "closed_orders_count_in_the_population",
        "config": LINEAR,
        "events": [
            ev("O1", "checkout", 100),
            ev("O1", "payment", 105),
            ev("O2", "checkout", 100),
            ev("O2", "payment", 110),
            ev("O2", "shipping", 200),
            ev("O2", "cancelled", 210),
        ],
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [
            f("O1", "vanished", "shipping", "payment", 165),
            f("O2", "late", "shipping", "payment", 200),
        ],
    },
    # O1: a failed payment followed by a success: one completed event, no duplicate, and the
    # success clears the failure. O2: two distinct completed payments -> duplicate at the second.
    {
        "name": "duplicate_vs_failed_then_success",
        "config": LINEAR,
        "events": [
            ev("O1", "checkout", 100),
            ev("O1", "payment", 101, phase="failed"),
            ev("O1", "payment", 102),
            ev("O1", "shipping", 130),
            ev("O2", "checkout", 100),
            ev("O2", "payment", 101, eid="p3"),
            ev("O2", "payment", 103, eid="p4"),
            ev("O2", "shipping", 120),
        ],
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [f("O2", "duplicate", "payment", None, 103)],
    },
    # The same (source, event_id) three times is one event: no duplicate for O1. The same
    # event_id from two sources is two events: O2 has a duplicate; both are at 101, so the
    # second distinct event (tie-break by source) is at 101.
    {
        "name": "redeliveries_count_once",
        "config": pipeline(
            LINEAR_HOPS,
            sources=[{"name": "s", "hop_field": "stage"}, {"name": "s2", "hop": "payment"}],
        ),
        "events": [
            ev("O1", "checkout", 100),
            ev("O1", "payment", 101, eid="p1"),
            ev("O1", "payment", 101, eid="p1"),
            ev("O1", "shipping", 120),
            ev("O1", "payment", 101, eid="p1"),
            ev("O1", "shipping", 120),
            ev("O2", "checkout", 100),
            ev("O2", "payment", 101, eid="x"),
            ev("O2", "payment", 101, eid="x", src="s2"),
            ev("O2", "shipping", 120),
        ],
        "as_of": m(300),
        "watermarks": {"s": m(300), "s2": m(300)},
        "expected": [f("O2", "duplicate", "payment", None, 101)],
    },
    # unique_by payment_ref: two success events for one payment (O1) are one payment; two refs
    # (O2) are a duplicate at the event bringing the second value; an event without the
    # attribute (O3) is not counted.
    {
        "name": "unique_by_counts_distinct_values",
        "config": pipeline(
            [
                {"name": "checkout", "next": ["payment"], "within": "15m"},
                {
                    "name": "payment",
                    "next": ["shipping"],
                    "within": "1h",
                    "unique": True,
                    "unique_by": "payment_ref",
                },
                {"name": "shipping"},
            ]
        ),
        "events": [
            ev("O1", "checkout", 100),
            ev("O1", "payment", 101, eid="e1", payment_ref="pi_1"),
            ev("O1", "payment", 102, eid="e2", payment_ref="pi_1"),
            ev("O1", "shipping", 120),
            ev("O2", "checkout", 100),
            ev("O2", "payment", 101, eid="e3", payment_ref="pi_1"),
            ev("O2", "payment", 103, eid="e4", payment_ref="pi_2"),
            ev("O2", "shipping", 120),
            ev("O3", "checkout", 100),
            ev("O3", "payment", 101, eid="e5"),
            ev("O3", "payment", 102, eid="e6", payment_ref="pi_3"),
            ev("O3", "shipping", 120),
        ],
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [f("O2", "duplicate", "payment", None, 103)],
    },
    # Shipping without payment: payment is skipped (since = when shipping was reached); the
    # edge checkout->payment is satisfied by the passed hop, so no stalled.
    {
        "name": "skipped_required_hop",
        "config": LINEAR,
        "events": [ev("O1", "checkout", 100), ev("O1", "shipping", 120)],
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [f("O1", "skipped", "payment", None, 120)],
    },
    # O1 has no entry-hop event: orphan at checkout, and nothing else (its overdue shipping is
    # not reported). O3, an orphan with two payments, keeps its duplicate. O2 has a `started`
    # checkout: any phase at an entry hop makes it no orphan (§10); started reaches nothing, so
    # t(checkout) is undefined and nothing is judged for it.
    {
        "name": "orphan_orders",
        "config": LINEAR,
        "events": [
            ev("O1", "payment", 100),
            ev("O2", "checkout", 100, phase="started"),
            ev("O3", "payment", 100, eid="e1"),
            ev("O3", "payment", 105, eid="e2"),
        ],
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [
            f("O1", "orphan", "checkout", None, 100),
            f("O3", "duplicate", "payment", None, 105),
            f("O3", "orphan", "checkout", None, 100),
        ],
    },
    # lookback 2h, as_of 300: window (180, 300]; longest path 75m, so an orphan is reported only
    # when its first event is after 255. O1 (first at 200) is an orphan but not reported, and
    # gets nothing else. O3's checkout at 100 is outside the window: same. O2 (260) is reported.
    {
        "name": "orphan_near_the_window_start",
        "config": pipeline(LINEAR_HOPS, lookback="2h"),
        "events": [
            ev("O1", "payment", 200),
            ev("O2", "payment", 260),
            ev("O3", "checkout", 100),
            ev("O3", "payment", 190),
        ],
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [f("O2", "orphan", "checkout", None, 260)],
    },
    # clock_skew 2m. O1: payment (100) before checkout (110) by 10m -> out_of_order, since 100.
    # O2: payment 2m before checkout is within the skew.
    {
        "name": "out_of_order_beyond_clock_skew",
        "config": LINEAR,
        "events": [
            ev("O1", "checkout", 110),
            ev("O1", "payment", 100),
            ev("O1", "shipping", 130),
            ev("O2", "checkout", 110),
            ev("O2", "payment", 108),
            ev("O2", "shipping", 130),
        ],
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [f("O1", "out_of_order", "payment", "checkout", 100)],
    },
    # Ties at equal timestamps. O1 has two checkout events at 100: the first in tie-break order
    # (source, event_id) is "a" with amount 10, so payment's 20 differs. O2 and O3 reached payment
    # at the same time: O3 is not "later" than O2 (strict), so O2 stalled; O3 is late.
    {
        "name": "ties_at_equal_timestamps",
        "config": pipeline(
            LINEAR_HOPS, checks=[{"field": "amount", "hops": ["checkout", "payment"]}]
        ),
        "events": [
            ev("O1", "checkout", 100, eid="b", amount=20),
            ev("O1", "checkout", 100, eid="a", amount=10),
            ev("O1", "payment", 105, amount=20),
            ev("O1", "shipping", 130),
            ev("O2", "checkout", 100),
            ev("O2", "payment", 105),
            ev("O3", "checkout", 100),
            ev("O3", "payment", 105),
            ev("O3", "shipping", 200),
        ],
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [
            f("O1", "mismatch", "payment", "checkout", 105, field="amount"),
            f("O2", "stalled", "shipping", "payment", 165),
            f("O3", "late", "shipping", "payment", 200),
        ],
    },
    # Numeric strings compare as numbers; tolerance 0.01. O1: "12.50" = 12.5, 12.509 within.
    # O2: 12.5 vs "12.52" differs. O3: no checkout value, base = payment "abc"; "ABC" differs
    # (no ignore_case). O4: null is no value. O5: the failed checkout's 7 is not a value.
    {
        "name": "mismatch_numeric_strings_and_tolerance",
        "config": pipeline(
            LINEAR_HOPS,
            checks=[
                {"field": "amount", "hops": ["checkout", "payment", "shipping"], "tolerance": 0.01}
            ],
        ),
        "events": [
            ev("O1", "checkout", 100, amount="12.50"),
            ev("O1", "payment", 105, amount=12.5),
            ev("O1", "shipping", 130, amount=12.509),
            ev("O2", "checkout", 100, amount=12.5),
            ev("O2", "payment", 105, amount="12.52"),
            ev("O2", "shipping", 130),
            ev("O3", "checkout", 100),
            ev("O3", "payment", 105, amount="abc"),
            ev("O3", "shipping", 130, amount="ABC"),
            ev("O4", "checkout", 100, amount=None),
            ev("O4", "payment", 105, amount=10),
            ev("O4", "shipping", 130, amount=10),
            ev("O5", "checkout", 100, phase="failed", amount=7),
            ev("O5", "checkout", 101, amount=5),
            ev("O5", "payment", 105, amount=5),
            ev("O5", "shipping", 130),
        ],
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [
            f("O2", "mismatch", "payment", "checkout", 105, field="amount"),
            f("O3", "mismatch", "shipping", "payment", 130, field="amount"),
        ],
    },
    # ignore_case on currency: "eur" = "EUR"; "EUR" != "USD". The email check has no
    # ignore_case: "A@x" != "a@x".
    {
        "name": "mismatch_ignore_case",
        "config": pipeline(
            LINEAR_HOPS,
            checks=[
                {"field": "currency", "hops": ["checkout", "payment"], "ignore_case": True},
                {"field": "email", "hops": ["checkout", "shipping"]},
            ],
        ),
        "events": [
            ev("O1", "checkout", 100, currency="eur", email="A@x"),
            ev("O1", "payment", 105, currency="EUR"),
            ev("O1", "shipping", 130, email="a@x"),
            ev("O2", "checkout", 100, currency="EUR"),
            ev("O2", "payment", 105, currency="USD"),
            ev("O2", "shipping", 130),
        ],
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [
            f("O1", "mismatch", "shipping", "checkout", 130, field="email"),
            f("O2", "mismatch", "payment", "checkout", 105, field="currency"),
        ],
    },
    # failed window at payment = 15m (the edge into it); at checkout (entry) the shortest
    # outgoing 15m. O1: failed payment at 105, deadline 120 -> failed; the failure counts as
    # payment reached (no stalled), and shipping is not expected. O2: cancelled at 115 <= 120
    # prevents it; O3: cancelled at 125 does not. O4: a failed checkout (no orphan: failed
    # is an entry event).
    {
        "name": "failed_and_closing_within_the_window",
        "config": LINEAR,
        "events": [
            ev("O1", "checkout", 100),
            ev("O1", "payment", 105, phase="failed"),
            ev("O2", "checkout", 100),
            ev("O2", "payment", 105, phase="failed"),
            ev("O2", "cancelled", 115),
            ev("O3", "checkout", 100),
            ev("O3", "payment", 105, phase="failed"),
            ev("O3", "cancelled", 125),
            ev("O4", "checkout", 100, phase="failed"),
        ],
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [
            f("O1", "failed", "payment", None, 105),
            f("O3", "failed", "payment", None, 105),
            f("O4", "failed", "checkout", None, 100),
        ],
    },
    # `started` reaches nothing: O1's payment is still due (deadline 115) -> stalled.
    {
        "name": "started_phase_reaches_nothing",
        "config": LINEAR,
        "events": [ev("O1", "checkout", 100), ev("O1", "payment", 105, phase="started")],
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [f("O1", "stalled", "payment", "checkout", 115)],
    },
    # Nothing after as_of is seen: O1's shipping at 310 does not exist at as_of 300.
    {
        "name": "events_after_as_of_are_unseen",
        "config": LINEAR,
        "events": [
            ev("O1", "checkout", 100),
            ev("O1", "payment", 105),
            ev("O1", "shipping", 310),
        ],
        "as_of": m(300),
        "watermarks": {"s": m(400)},
        "expected": [f("O1", "stalled", "shipping", "payment", 165)],
    },
    # Promise deadline = t(confirmation) + 60m. O1: nothing shipped by 165 ->
    # confirmed_unfulfilled; its packed->shipped deadline 150 passed and O2 packed later (125 >
    # 120) and shipped after 150 -> vanished. O2: promise kept at 200 > 166 -> late promise
    # (from confirmation); edge packed->shipped late too (deadline 155), another identity.
    # O3: delivered (after shipped on the path) keeps the promise at 130; shipped is skipped.
    {
        "name": "promises_late_unfulfilled_and_kept_by_a_later_hop",
        "config": PROMISE,
        "events": [
            ev("O1", "checkout", 100),
            ev("O1", "confirmation", 105),
            ev("O1", "packed", 120),
            ev("O2", "checkout", 100),
            ev("O2", "confirmation", 106),
            ev("O2", "packed", 125),
            ev("O2", "shipped", 200),
            ev("O2", "delivered", 210),
            ev("O3", "checkout", 100),
            ev("O3", "confirmation", 105),
            ev("O3", "packed", 110),
            ev("O3", "delivered", 130),
        ],
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [
            f("O1", "confirmed_unfulfilled", "shipped", "confirmation", 165),
            f("O1", "vanished", "shipped", "packed", 150),
            f("O2", "late", "shipped", "confirmation", 200),
            f("O2", "late", "shipped", "packed", 200),
            f("O3", "skipped", "shipped", None, 130),
        ],
    },
    # confirmation -> shipped is both an edge (30m) and a promise (20m), shipped per item.
    # Edge deadline 135: i2 (200) late. Promise deadline 125: i1 (130) and i2 late. Same
    # identity (late, shipped, confirmation): the edge's finding is kept (§6): only item:i2.
    {
        "name": "promise_late_gives_way_to_edge_late",
        "config": pipeline(
            [
                {"name": "checkout", "next": ["confirmation"], "within": "10m"},
                {
                    "name": "confirmation",
                    "next": ["shipped"],
                    "within": "30m",
                    "promises": ["shipped"],
                    "promise_within": "20m",
                },
                {"name": "shipped", "each": "item"},
            ],
            objects=[{"name": "item"}],
        ),
        "events": [
            ev("O1", "checkout", 100, objs={"item": ["i1", "i2"]}),
            ev("O1", "confirmation", 105),
            ev("O1", "shipped", 130, objs={"item": ["i1"]}),
            ev("O1", "shipped", 200, objs={"item": ["i2"]}),
        ],
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [f("O1", "late", "shipped", "confirmation", 200, ["item:i2"])],
    },
    # each = item on picked. O1 declared 5 items at checkout, 3 were picked: sku4, sku5 overdue
    # (deadline 160). O2's items reached checkout later (105 > 100) and picked after 160 -> one
    # vanished finding listing both. O2's items are late (deadline 165; since = earliest, 200).
    # picked->shipped for O1 is not judged: not every item reached picked.
    {
        "name": "each_two_of_five_items_never_picked",
        "config": ITEMS,
        "events": [
            ev("O1", "checkout", 100, objs={"item": ["sku1", "sku2", "sku3", "sku4", "sku5"]}),
            ev("O1", "picked", 110, objs={"item": ["sku1"]}),
            ev("O1", "picked", 115, objs={"item": ["sku2"]}),
            ev("O1", "picked", 120, objs={"item": ["sku3"]}),
            ev("O2", "checkout", 105, objs={"item": ["sku6", "sku7"]}),
            ev("O2", "picked", 200, objs={"item": ["sku6"]}),
            ev("O2", "picked", 210, objs={"item": ["sku7"]}),
            ev("O2", "shipped", 220),
        ],
        "as_of": m(400),
        "watermarks": {"s": m(400)},
        "expected": [
            f("O1", "vanished", "picked", "checkout", 160, ["item:sku4", "item:sku5"]),
            f("O2", "late", "picked", "checkout", 200, ["item:sku6", "item:sku7"]),
        ],
    },
    # each -> order-level edge: shipped is due 60m after the order's *last* item was picked
    # (O1: 130 -> 190). O2 shipped (140) before its last pick (150) but after its first (110):
    # not out of order, and not late (deadline 210). O2 counts in the population but shipped
    # before O1's deadline -> O1 stalled.
    {
        "name": "each_to_order_level_edge_counts_from_the_last_object",
        "config": ITEMS,
        "events": [
            ev("O1", "checkout", 100, objs={"item": ["a", "b"]}),
            ev("O1", "picked", 110, objs={"item": ["a"]}),
            ev("O1", "picked", 130, objs={"item": ["b"]}),
            ev("O2", "checkout", 100, objs={"item": ["c", "d"]}),
            ev("O2", "picked", 110, objs={"item": ["c"]}),
            ev("O2", "picked", 150, objs={"item": ["d"]}),
            ev("O2", "shipped", 140),
        ],
        "as_of": m(400),
        "watermarks": {"s": m(400)},
        "expected": [f("O1", "stalled", "shipped", "picked", 190)],
    },
    # An order with no item at all reaches the each hop picked with its first event there (O1
    # fine, O2 stalled with objects = []). O3 has an item x, but its picked event names no
    # item: it moves nothing, so item:x is overdue.
    {
        "name": "each_hop_without_objects_and_events_naming_none",
        "config": ITEMS,
        "events": [
            ev("O1", "checkout", 100),
            ev("O1", "picked", 110),
            ev("O1", "shipped", 130),
            ev("O2", "checkout", 100),
            ev("O3", "checkout", 100, objs={"item": ["x"]}),
            ev("O3", "picked", 110),
        ],
        "as_of": m(400),
        "watermarks": {"s": m(400)},
        "expected": [
            f("O2", "stalled", "picked", "checkout", 160),
            f("O3", "stalled", "picked", "checkout", 160, ["item:x"]),
        ],
    },
    # picked -> packed, both each = item: per-object deadlines. b (picked 150, deadline 180) not
    # packed; O2's c reached picked later (160) and packed after 180 -> vanished. c is late
    # (deadline 190, packed 200). O1's packed->shipped is not judged (b never packed).
    {
        "name": "each_to_each_edge_per_object",
        "config": ITEMS2,
        "events": [
            ev("O1", "checkout", 100, objs={"item": ["a", "b"]}),
            ev("O1", "picked", 110, objs={"item": ["a"]}),
            ev("O1", "picked", 150, objs={"item": ["b"]}),
            ev("O1", "packed", 120, objs={"item": ["a"]}),
            ev("O2", "checkout", 100, objs={"item": ["c"]}),
            ev("O2", "picked", 160, objs={"item": ["c"]}),
            ev("O2", "packed", 200, objs={"item": ["c"]}),
            ev("O2", "shipped", 210),
        ],
        "as_of": m(400),
        "watermarks": {"s": m(400)},
        "expected": [
            f("O1", "vanished", "packed", "picked", 180, ["item:b"]),
            f("O2", "late", "packed", "picked", 200, ["item:c"]),
        ],
    },
    # Per-object out_of_order: item a packed (105) 5m before it was picked (110). b is fine.
    # Order level (packed -> shipped): first shipped 150 vs first packed 105: fine.
    {
        "name": "out_of_order_per_object",
        "config": ITEMS2,
        "events": [
            ev("O1", "checkout", 100, objs={"item": ["a", "b"]}),
            ev("O1", "picked", 110, objs={"item": ["a"]}),
            ev("O1", "picked", 120, objs={"item": ["b"]}),
            ev("O1", "packed", 105, objs={"item": ["a"]}),
            ev("O1", "packed", 125, objs={"item": ["b"]}),
            ev("O1", "shipped", 150),
        ],
        "as_of": m(400),
        "watermarks": {"s": m(400)},
        "expected": [f("O1", "out_of_order", "packed", "picked", 105, ["item:a"])],
    },
    # O1: item b packed (120) but never picked -> picked skipped for item:b, since 120. O2: item
    # d neither picked nor packed; the order-level shipped (130) does not excuse it -> overdue
    # on checkout->picked (deadline 160); no unit reached checkout later -> stalled.
    {
        "name": "skipped_per_object_and_order_level_hop_does_not_excuse",
        "config": ITEMS2,
        "events": [
            ev("O1", "checkout", 100, objs={"item": ["a", "b"]}),
            ev("O1", "picked", 110, objs={"item": ["a"]}),
            ev("O1", "packed", 115, objs={"item": ["a"]}),
            ev("O1", "packed", 120, objs={"item": ["b"]}),
            ev("O1", "shipped", 150),
            ev("O2", "checkout", 100, objs={"item": ["c", "d"]}),
            ev("O2", "picked", 110, objs={"item": ["c"]}),
            ev("O2", "packed", 115, objs={"item": ["c"]}),
            ev("O2", "shipped", 130),
        ],
        "as_of": m(400),
        "watermarks": {"s": m(400)},
        "expected": [
            f("O1", "skipped", "picked", None, 120, ["item:b"]),
            f("O2", "stalled", "picked", "checkout", 160, ["item:d"]),
        ],
    },
    # out_of_order between hops of different each kinds is order level: O2's first shipment
    # left (100) before its first item was picked (130). O1's shipment left (120) before its
    # last pick (150) but after its first (110): fine.
    {
        "name": "out_of_order_order_level_across_each_kinds",
        "config": pipeline(
            [
                {"name": "checkout", "next": ["picked"], "within": "60m"},
                {"name": "picked", "each": "item", "next": ["shipped"], "within": "60m"},
                {"name": "shipped", "each": "shipment"},
            ],
            objects=[{"name": "item"}, {"name": "shipment"}],
        ),
        "events": [
            ev("O1", "checkout", 100, objs={"item": ["a", "b"]}),
            ev("O1", "picked", 110, objs={"item": ["a"]}),
            ev("O1", "picked", 150, objs={"item": ["b"]}),
            ev("O1", "shipped", 120, objs={"shipment": ["S1"]}),
            ev("O2", "checkout", 100, objs={"item": ["c", "d"]}),
            ev("O2", "picked", 130, objs={"item": ["c"]}),
            ev("O2", "picked", 140, objs={"item": ["d"]}),
            ev("O2", "shipped", 100, objs={"shipment": ["S2"]}),
        ],
        "as_of": m(400),
        "watermarks": {"s": m(400)},
        "expected": [f("O2", "out_of_order", "shipped", "picked", 100)],
    },
    # unique on an each hop is judged per object: a picked twice (dup at 115), b picked at 112
    # and again by an event naming b and c (dup at 120), c once. One finding, since 115.
    {
        "name": "unique_each_hop_per_object",
        "config": pipeline(
            [
                {"name": "checkout", "next": ["picked"], "within": "60m"},
                {"name": "picked", "each": "item", "unique": True},
            ],
            objects=[{"name": "item"}],
        ),
        "events": [
            ev("O1", "checkout", 100, objs={"item": ["a", "b", "c"]}),
            ev("O1", "picked", 110, objs={"item": ["a"]}, eid="e1"),
            ev("O1", "picked", 115, objs={"item": ["a"]}, eid="e2"),
            ev("O1", "picked", 112, objs={"item": ["b"]}, eid="e3"),
            ev("O1", "picked", 120, objs={"item": ["b", "c"]}, eid="e4"),
        ],
        "as_of": m(400),
        "watermarks": {"s": m(400)},
        "expected": [f("O1", "duplicate", "picked", None, 115, ["item:a", "item:b"])],
    },
    # "Ready for pickup" told while 2 of 5 items are missing: notified (120) promises picked
    # within 30m -> deadline 150; sku4 and sku5 never picked -> confirmed_unfulfilled naming
    # them. checkout->picked (deadline 220) is not due yet at 200.
    {
        "name": "promise_into_each_hop_with_missing_items",
        "config": pipeline(
            [
                {"name": "checkout", "next": ["picked", "notified"], "within": "2h"},
                {"name": "notified", "promises": ["picked"], "promise_within": "30m"},
                {"name": "picked", "each": "item"},
            ],
            objects=[{"name": "item"}],
        ),
        "events": [
            ev("O1", "checkout", 100, objs={"item": ["sku1", "sku2", "sku3", "sku4", "sku5"]}),
            ev("O1", "picked", 110, objs={"item": ["sku1"]}),
            ev("O1", "picked", 112, objs={"item": ["sku2"]}),
            ev("O1", "picked", 115, objs={"item": ["sku3"]}),
            ev("O1", "notified", 120),
        ],
        "as_of": m(200),
        "watermarks": {"s": m(200)},
        "expected": [
            f("O1", "confirmed_unfulfilled", "picked", "notified", 150, ["item:sku4", "item:sku5"])
        ],
    },
    # next_any with `when`. O1 (pickup) ready at 150: fine, never waits for delivered. O2 (ship)
    # expects only shipped: label "shipped", deadline 110+2h = 230; O3 reached picked later
    # (120) and shipped after 230 -> vanished. O3 itself on time (240 is not > 240). O4 lacks
    # `delivery`: both members expected, label "shipped|ready_for_pickup", deadline = longest
    # within = 130+120 = 250; nobody reached picked later than 130 -> stalled. O5 is a pickup
    # order that shipped: the group is satisfied by any member, and delivered is expected
    # (deadline 130+300 = 430); O3 shipped later but delivered (300) before 430 -> stalled.
    {
        "name": "next_any_pickup_and_shipping_branches",
        "config": DELIVERY,
        "events": [
            ev("O1", "checkout", 100, delivery="pickup"),
            ev("O1", "picked", 110),
            ev("O1", "ready_for_pickup", 150),
            ev("O2", "checkout", 100, delivery="ship"),
            ev("O2", "picked", 110),
            ev("O3", "checkout", 100, delivery="express"),
            ev("O3", "picked", 120),
            ev("O3", "shipped", 240),
            ev("O3", "delivered", 300),
            ev("O4", "checkout", 100),
            ev("O4", "picked", 130),
            ev("O5", "checkout", 100, delivery="pickup"),
            ev("O5", "picked", 110),
            ev("O5", "shipped", 130),
        ],
        "as_of": m(1000),
        "watermarks": {"s": m(1000)},
        "expected": [
            f("O2", "vanished", "shipped", "picked", 230),
            f("O4", "stalled", "shipped|ready_for_pickup", "picked", 250),
            f("O5", "stalled", "delivered", "shipped", 430),
        ],
    },
    # skipped inside the branch taken: O1 (ship) reached delivered without shipped -> the
    # group is skipped, named by the members passed: "shipped". O2 (pickup) did the same: no
    # active member was passed, so all passed members name it: "shipped" again.
    {
        "name": "skipped_inside_the_branch_taken",
        "config": DELIVERY,
        "events": [
            ev("O1", "checkout", 100, delivery="ship"),
            ev("O1", "picked", 110),
            ev("O1", "delivered", 200),
            ev("O2", "checkout", 100, delivery="pickup"),
            ev("O2", "picked", 110),
            ev("O2", "delivered", 200),
        ],
        "as_of": m(1000),
        "watermarks": {"s": m(1000)},
        "expected": [
            f("O1", "skipped", "shipped", None, 200),
            f("O2", "skipped", "shipped", None, 200),
        ],
    },
    # `when` on a next edge. gift_wrap is expected when gift = true (O1), or when the attribute
    # is missing (O3), or when the first non-null value is true (O5: null first). Not for
    # false (O2) nor the string "true" (O4: JSON values, "true" != true).
    {
        "name": "when_condition_and_missing_attribute",
        "config": pipeline(
            [
                {
                    "name": "checkout",
                    "next": ["payment", "gift_wrap"],
                    "within": "30m",
                    "when": {"gift_wrap": {"gift": True}},
                },
                {"name": "payment"},
                {"name": "gift_wrap"},
            ]
        ),
        "events": [
            ev("O1", "checkout", 100, gift=True),
            ev("O1", "payment", 110),
            ev("O2", "checkout", 100, gift=False),
            ev("O2", "payment", 110),
            ev("O3", "checkout", 100),
            ev("O3", "payment", 110),
            ev("O4", "checkout", 100, gift="true"),
            ev("O4", "payment", 110),
            ev("O5", "checkout", 100, gift=None),
            ev("O5", "payment", 110, gift=True),
        ],
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [
            f("O1", "stalled", "gift_wrap", "checkout", 130),
            f("O3", "stalled", "gift_wrap", "checkout", 130),
            f("O5", "stalled", "gift_wrap", "checkout", 130),
        ],
    },
    # Conditions compare JSON values: 1.0 == 1 (O1 expects express), "1" != 1 (O2 does not).
    # O3 (priority 2) reached express; it reached checkout at the same time as O1, not later.
    {
        "name": "when_numeric_values_compare_as_json",
        "config": pipeline(
            [
                {
                    "name": "checkout",
                    "next": ["express"],
                    "within": "30m",
                    "when": {"express": {"priority": [1, 2]}},
                },
                {"name": "express"},
            ]
        ),
        "events": [
            ev("O1", "checkout", 100, priority=1.0),
            ev("O2", "checkout", 100, priority="1"),
            ev("O3", "checkout", 100, priority=2),
            ev("O3", "express", 120),
        ],
        "as_of": m(300),
        "watermarks": {"s": m(300)},
        "expected": [f("O1", "stalled", "express", "checkout", 130)],
    },
    # parcel via item: the packing event names items a (O1) and b (O2) and parcel P1, no order:
    # P1 belongs to both orders, and the event too (packed reached at 130 by both). delivered is
    # each = parcel: P1 never delivered (deadline 250). O3's P2 reached packed later (140) and
    # was delivered after 250 -> both vanished. P2 late (deadline 260).
    {
        "name": "via_parcel_holding_items_of_two_orders",
        "config": pipeline(
            [
                {"name": "checkout", "next": ["packed"], "within": "60m"},
                {"name": "packed", "next": ["delivered"], "within": "2h"},
                {"name": "delivered", "each": "parcel"},
            ],
            objects=[{"name": "item"}, {"name": "parcel", "via": "item"}],
        ),
        "events": [
            ev("O1", "checkout", 100, objs={"item": ["a"]}),
            ev("O2", "checkout", 100, objs={"item": ["b"]}),
            ev("", "packed", 130, objs={"item": ["a", "b"], "parcel": ["P1"]}),
            ev("O3", "checkout", 100, objs={"item": ["c"]}),
            ev("", "packed", 140, objs={"item": ["c"], "parcel": ["P2"]}),
            ev("", "delivered", 300, objs={"parcel": ["P2"]}),
        ],
        "as_of": m(400),
        "watermarks": {"s": m(400)},
        "expected": [
            f("O1", "vanished", "delivered", "packed", 250, ["parcel:P1"]),
            f("O2", "vanished", "delivered", "packed", 250, ["parcel:P1"]),
            f("O3", "late", "delivered", "packed", 300, ["parcel:P2"]),
        ],
    },
    # via chains: shipment via parcel via item. The carrier's delivered scan names only the
    # shipment; the shipment is linked to the parcel, the parcel to the item, the item to O1.
    {
        "name": "via_chain_shipment_parcel_item",
        "config": pipeline(
            [
                {"name": "checkout", "next": ["packed"], "within": "60m"},
                {"name": "packed", "next": ["delivered"], "within": "2h"},
                {"name": "delivered"},
            ],
            objects=[
                {"name": "item"},
                {"name": "parcel", "via": "item"},
                {"name": "shipment", "via": "parcel"},
            ],
        ),
        "events": [
            ev("", "delivered", 200, objs={"shipment": ["Z1"]}),
            ev("O1", "checkout", 100, objs={"item": ["a"]}),
            ev("", "packed", 130, objs={"item": ["a"], "parcel": ["P1"]}),
            ev("", "packed", 131, objs={"parcel": ["P1"], "shipment": ["Z1"]}, eid="label"),
        ],
        "as_of": m(1000),
        "watermarks": {"s": m(1000)},
        "expected": [],
    },
    # The carrier scan (stored first) names only shipment Z1; the shipped event stored after
    # it links Z1 to O1: delivered belongs to O1, which is complete. Without the link, Z1
    # would be an unlinked orphan (200 + 180 < 1000).
    {
        "name": "carrier_scan_stored_before_its_link",
        "config": SHIPMENTS,
        "events": [
            ev("", "delivered", 200, objs={"shipment": ["Z1"]}, src="s"),
            ev("O1", "checkout", 100),
            ev("O1", "shipped", 150, objs={"shipment": ["Z1"]}),
        ],
        "as_of": m(1000),
        "watermarks": {"s": m(1000)},
        "expected": [],
    },
    # lookback 10h, as_of 1000: window (400, 1000]; longest path 180m.
    # Z2 (scan at 500, never linked): orphan, order null. Z3 (900): too young. Z4 (600): its link
    # comes at 1100, after as_of, unseen: orphan. Z5 (700) is linked by O5's shipped event at
    # 300 -- outside the window but links hold for good -- so Z5 belongs to O5; O5's only
    # window event is that scan, at no entry hop, but O5 has events of its own before the
    # window (checkout at 250): its start fell out of the window, so it is no orphan.
    {
        "name": "unlinked_objects_and_links_that_hold_for_good",
        "config": pipeline(
            [
                {"name": "checkout", "next": ["shipped"], "within": "60m"},
                {"name": "shipped", "next": ["delivered"], "within": "2h"},
                {"name": "delivered"},
            ],
            objects=[{"name": "shipment"}],
            lookback="10h",
        ),
        "events": [
            ev("", "delivered", 500, objs={"shipment": ["Z2"]}),
            ev("", "delivered", 900, objs={"shipment": ["Z3"]}),
            ev("", "delivered", 600, objs={"shipment": ["Z4"]}),
            ev("O9", "shipped", 1100, objs={"shipment": ["Z4"]}),
            ev("O5", "checkout", 250),
            ev("O5", "shipped", 300, objs={"shipment": ["Z5"]}),
            ev("", "delivered", 700, objs={"shipment": ["Z5"]}),
        ],
        "as_of": m(1000),
        "watermarks": {"s": m(1000)},
        "expected": [
            f(None, "orphan", "delivered", None, 500, ["shipment:Z2"]),
            f(None, "orphan", "delivered", None, 600, ["shipment:Z4"]),
        ],
    },
]
