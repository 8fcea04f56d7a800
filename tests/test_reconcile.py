"""The reconciliation semantics, scenario by scenario (DESIGN.md), on real stores."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from ordertrail.reconcile import reconcile
from ordertrail.schemas.config import Config, parse_config
from ordertrail.schemas.event import OrderEvent
from ordertrail.simulation.pipeline import DEMO_CONFIG
from ordertrail.store import Checkpoint, Store

T0 = 1_772_366_400_000_000  # 2026-03-01T12:00:00Z
M = 60_000_000
H = 60 * M
AS_OF = T0 + 10 * 24 * H


def pipeline(with_sources: bool = False) -> Config:
    data = tomllib.loads(DEMO_CONFIG)
    data.pop("store")
    if not with_sources:
        data.pop("sources")
    return parse_config(data)


CFG = pipeline()
_seq = iter(range(10**9))


def e(order: str, hop: str, at: int, phase: str = "completed", **attrs: Any) -> OrderEvent:
    return OrderEvent(
        event_id=f"ev{next(_seq)}", order_id=order, hop=hop, occurred_at=at, source="test",
        source_ref=f"t:{order}:{hop}", phase=phase, attributes=attrs,
    )  # fmt: skip


def happy(order: str, start: int, **kw: Any) -> list[OrderEvent]:
    """A complete order placed at ``start``."""
    return [
        e(order, "checkout", start, amount=kw.get("amount", 10)),
        e(order, "payment", start + 2 * M, amount=kw.get("pay", kw.get("amount", 10))),
        e(order, "confirmation", start + 3 * M),
        e(order, "fulfillment", start + 2 * H),
        e(order, "shipping", start + 10 * H),
    ]


def background(n: int = 8, start: int = T0, gap: int = 12 * H) -> list[OrderEvent]:
    """Healthy orders placed after ``start``: proof that the pipeline moved on."""
    return [ev for i in range(n) for ev in happy(f"bg{i}", start + (i + 1) * gap)]


def run(
    url: str, events: list[OrderEvent], cfg: Config = CFG, as_of: int = AS_OF, **kw: Any
) -> Any:
    with Store(url) as s:
        s.write_batch(events)
        return reconcile(s, cfg, as_of=as_of, **kw)


def found(result: Any, order: str | None = None) -> set[tuple[str, str, str]]:
    return {
        (f["kind"], f["hop"], f["from_hop"] or "")
        for f in result.active()
        if order is None or f["order_id"] == order
    }


SCENARIOS: list[tuple[str, list[OrderEvent], set[tuple[str, str, str]]]] = [
    ("complete order", happy("A", T0), set()),
    ("lost between checkout and payment", [e("A", "checkout", T0)], {("vanished", "payment", "checkout")}),
    (
        "confirmed but never fulfilled",
        happy("A", T0)[:3],
        {("vanished", "fulfillment", "payment"), ("confirmed_unfulfilled", "fulfillment", "confirmation")},
    ),
    ("lost before shipping", happy("A", T0)[:4], {("vanished", "shipping", "fulfillment")}),
    (
        "promise kept by a later hop; the missing hop is skipped",
        [*happy("A", T0)[:3], e("A", "shipping", T0 + 5 * H)],
        {("skipped", "fulfillment", "")},
    ),
    ("double charge", [*happy("A", T0), e("A", "payment", T0 + 4 * M)], {("duplicate", "payment", "")}),
    (
        "declined, then paid: neither failed nor duplicate",
        [e("A", "checkout", T0), e("A", "payment", T0 + M, "failed"), *happy("A", T0)[1:]],
        set(),
    ),
    (
        "declined and never retried: failed, nothing downstream expected",
        [e("A", "checkout", T0), e("A", "payment", T0 + M, "failed")],
        {("failed", "payment", "")},
    ),
    (
        "declined, then cancelled in time",
        [e("A", "checkout", T0), e("A", "payment", T0 + M, "failed"), e("A", "cancelled", T0 + 5 * M)],
        set(),
    ),
    (
        "declined, cancelled too late: still failed",
        [e("A", "checkout", T0), e("A", "payment", T0 + M, "failed"), e("A", "cancelled", T0 + 5 * H)],
        {("failed", "payment", "")},
    ),
    (
        "shipped without payment",
        [e("A", "checkout", T0), e("A", "fulfillment", T0 + H), e("A", "shipping", T0 + 3 * H)],
        {("skipped", "payment", "")},
    ),
    ("orphan shipment", [e("A", "shipping", T0)], {("orphan", "checkout", "")}),
    ("amount mismatch", happy("A", T0, amount=10, pay=12.5), {("mismatch", "payment", "checkout")}),
    ("amount within tolerance", happy("A", T0, amount=10, pay=10.005), set()),
    ("numeric string equals number", happy("A", T0, amount="10.00", pay=10), set()),
    (
        "shipped an hour before it was packed",
        [*happy("A", T0)[:3], e("A", "fulfillment", T0 + 5 * H), e("A", "shipping", T0 + 4 * H)],
        {("out_of_order", "shipping", "fulfillment")},
    ),
    (
        "clock skew within tolerance",
        [*happy("A", T0)[:3], e("A", "fulfillment", T0 + 5 * H), e("A", "shipping", T0 + 5 * H - M)],
        set(),
    ),
    (
        "shipped late",
        [*happy("A", T0)[:4], e("A", "shipping", T0 + 2 * H + 50 * H)],
        {("late", "shipping", "fulfillment")},
    ),
    (
        "cancelled after payment: no expectation left",
        [*happy("A", T0)[:3], e("A", "cancelled", T0 + H)],
        set(),
    ),
    ("in flight: not due yet", [e("A", "checkout", AS_OF - 5 * M)], set()),
    ("only started at payment: not reached", [e("A", "checkout", T0), e("A", "payment", T0 + M, "started")],
     {("vanished", "payment", "checkout")}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "events", "expected"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenario(sqlite_url: str, name: str, events: list[OrderEvent], expected: set[Any]) -> None:
    result = run(sqlite_url, [*events, *background()])
    assert found(result, "A") == expected
    assert found(result) - found(result, "A") == set(), "background orders must stay clean"


def test_stalled_when_the_hop_passes_no_later_order(sqlite_url: str) -> None:
    # everything placed after A waits at payment too: payment is silent, not losing orders
    events = [*background(3, T0 - 2 * 24 * H), e("A", "checkout", T0), e("B", "checkout", T0 + H)]
    result = run(sqlite_url, events)
    assert found(result, "A") == {("stalled", "payment", "checkout")}
    assert found(result, "B") == {("stalled", "payment", "checkout")}
    [inc] = result.incidents
    assert (inc["kind"], inc["hop"], inc["orders"]) == ("hop_silent", "payment", 2)
    a = next(f for f in result.findings if f["order_id"] == "A")
    assert "payment has passed no later order since" in a["detail"]
    assert "last event: checkout completed" in a["detail"] and "(test t:A:checkout)" in a["detail"]


def test_vanished_detail_counts_later_orders(sqlite_url: str) -> None:
    result = run(sqlite_url, [e("A", "checkout", T0), *background(5)])
    [f] = [f for f in result.findings if f["order_id"] == "A"]
    assert "5 later orders reached payment since" in f["detail"]
    assert f["since"] == "2026-03-01T12:15:00Z" and f["status"] == "new"


def test_redelivered_event_is_not_a_duplicate(sqlite_url: str) -> None:
    events = happy("A", T0)
    with Store(sqlite_url) as s:
        s.write_batch(events)
        s.write_batch([events[1]])  # the same payment event again
        r = reconcile(s, CFG, as_of=AS_OF)
    assert found(r) == set()
    assert r.states == {"complete": 1}


def test_states_and_lifecycle_across_runs(store_url: str) -> None:
    with Store(store_url) as s:
        s.write_batch([e("A", "checkout", T0), *happy("C", T0 - H)[:3], *background(4)])
        r1 = reconcile(s, CFG, as_of=AS_OF)
        assert found(r1, "A") == {("vanished", "payment", "checkout")}
        assert {f["status"] for f in r1.findings} == {"new"}
        # A's payment turns up; C is still lost
        s.write_batch([e("A", "payment", T0 + 3 * M), e("A", "confirmation", T0 + 4 * M),
                       e("A", "fulfillment", T0 + H), e("A", "shipping", T0 + 2 * H)])  # fmt: skip
        r2 = reconcile(s, CFG, as_of=AS_OF)
    st = {(f["order_id"], f["kind"]): f["status"] for f in r2.findings}
    assert st[("A", "vanished")] == "resolved"
    assert st[("C", "vanished")] == "open"
    assert st[("C", "confirmed_unfulfilled")] == "open"
    assert "A" not in {f["order_id"] for f in r2.active()}
    assert r2.summary == {"vanished": 1, "confirmed_unfulfilled": 1}


def test_lagging_source_waits_instead_of_alarming(sqlite_url: str) -> None:
    cfg = pipeline(with_sources=True)
    with Store(sqlite_url) as s:
        s.write_batch([e("A", "checkout", T0), *background(4)])
        marks = {src.name: AS_OF for src in cfg.sources}
        marks["payments"] = T0  # the payment collector stopped at T0
        s.write_batch(checkpoints=[Checkpoint(n, "", {}, w) for n, w in marks.items()])
        r = reconcile(s, cfg, as_of=AS_OF)
        assert found(r, "A") == set()
        lag = [i for i in r.incidents if i["kind"] == "source_lagging"]
        assert len(lag) == 1 and lag[0]["hop"] == "payment" and lag[0]["orders"] >= 1
        assert "source payments is complete up to" in lag[0]["detail"]
        # once the collector catches up and the hop is still silent for A, A is lost
        s.write_batch(checkpoints=[Checkpoint("payments", "", {}, AS_OF)])
        r = reconcile(s, cfg, as_of=AS_OF)
        assert found(r, "A") == {("vanished", "payment", "checkout")}
        assert not [i for i in r.incidents if i["kind"] == "source_lagging"]


def test_same_as_of_same_output(sqlite_url: str) -> None:
    events = [e("A", "checkout", T0), *happy("B", T0)[:3], e("C", "shipping", T0), *background(5)]
    r1 = run(sqlite_url, events)
    with Store(sqlite_url) as s:
        r2 = reconcile(s, CFG, as_of=AS_OF)
    strip = [{k: v for k, v in f.items() if k != "status"} for f in r1.findings]
    assert strip == [{k: v for k, v in f.items() if k != "status"} for f in r2.findings]
    assert r1.summary == r2.summary and r1.incidents == r2.incidents


def test_events_after_as_of_and_before_the_window_are_ignored(sqlite_url: str) -> None:
    late_payment = e("A", "payment", AS_OF + H)
    ancient = e("Z", "shipping", AS_OF - 40 * 24 * H)
    r = run(sqlite_url, [e("A", "checkout", T0), late_payment, ancient, *background(3)])
    assert found(r, "A") == {("vanished", "payment", "checkout")}
    assert found(r, "Z") == set()


def test_order_cut_off_by_the_window_start_is_not_an_orphan(sqlite_url: str) -> None:
    lookback = CFG.pipeline.lookback
    start = AS_OF - lookback
    # checkout and payment fell out of the window an hour ago; the rest is inside
    events = [
        e("cut", "checkout", start - 2 * H), e("cut", "payment", start - 2 * H + M),
        e("cut", "confirmation", start + M), e("cut", "fulfillment", start + H), e("cut", "shipping", start + 5 * H),
        e("real", "shipping", start + 5 * 24 * H),  # well inside: a real orphan
        *background(3, start + 24 * H),
    ]  # fmt: skip
    r = run(sqlite_url, events)
    assert found(r, "cut") == set()
    assert found(r, "real") == {("orphan", "checkout", "")}
