"""Simulate a web-order pipeline that loses orders, and write what each hop would log.

Every injected fault is recorded with the findings it must produce, so the demo can say
"injected vs caught" and tests can measure precision and recall. Faults other than the hop
outage go into orders placed early in the window, far from the outage and from ``as_of``,
so that each fault has exactly one right answer under DESIGN.md's semantics.
"""

from __future__ import annotations

import csv
import gzip
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

H = 3600
D = 86400

DEMO_CONFIG = """\
# ordertrail demo pipeline: web orders from checkout to shipping.
[store]
url = "sqlite:///ordertrail.db"

[pipeline]
name = "web-orders"
clock_skew = "2m"
lookback = "30d"
personal = ["customer.email", "customer.name"]

[[hops]]
name = "checkout"
next = ["payment"]
within = "15m"

[[hops]]
name = "payment"
next = ["confirmation", "fulfillment"]
within = { confirmation = "5m", fulfillment = "24h" }
unique = true

[[hops]]
name = "confirmation"
promises = ["fulfillment"]
promise_within = "48h"

[[hops]]
name = "fulfillment"
next = ["shipping"]
within = "48h"

[[hops]]
name = "shipping"

[[hops]]
name = "cancelled"
closes = true

[[checks]]
field = "amount"
hops = ["checkout", "payment"]
tolerance = 0.01

[[sources]]
name = "checkout"
kind = "file"
path = "data/checkout/*.jsonl"
hop = "checkout"
order_id = "order.id"
timestamp = "ts"
attributes = ["amount", "customer.email", "customer.name"]

[[sources]]
name = "payments"
kind = "file"
path = "data/payments/*.jsonl.gz"
hop = "payment"
order_id = "order_id"
timestamp = "ts"
event_id = "id"
phase = "status"
phase_map = { ok = "completed", declined = "failed" }
attributes = ["amount"]

[[sources]]
name = "confirmations"
kind = "file"
path = "data/confirmations.csv"
hop = "confirmation"
order_id = "order_id"
timestamp = "sent_at"
attributes = ["channel"]

[[sources]]
name = "warehouse"
kind = "file"
path = "data/warehouse/*.jsonl"
hop = "fulfillment"
order_id = "orderId"
timestamp = "packedAt"
attributes = { items = "items.count" }

[[sources]]
name = "shipping"
kind = "file"
path = "data/shipping.csv"
hop = "shipping"
order_id = "order"
timestamp = "shipped_at"
attributes = ["carrier"]

[[sources]]
name = "cancellations"
kind = "file"
path = "data/cancellations.jsonl"
hop = "cancelled"
order_id = "order"
timestamp = "at"
"""

# fault name -> the findings (kind, hop, from_hop) it must produce
FAULT_KINDS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "lost_before_payment": (("vanished", "payment", "checkout"),),
    "lost_before_fulfillment": (
        ("vanished", "fulfillment", "payment"),
        ("confirmed_unfulfilled", "fulfillment", "confirmation"),
    ),
    "lost_before_shipping": (("vanished", "shipping", "fulfillment"),),
    "double_charge": (("duplicate", "payment", ""),),
    "shipped_without_payment": (("skipped", "payment", ""),),
    "orphan_shipment": (("orphan", "checkout", ""),),
    "payment_declined": (("failed", "payment", ""),),
    "amount_mismatch": (("mismatch", "payment", "checkout"),),
    "clock_skewed_warehouse": (("out_of_order", "shipping", "fulfillment"),),
    "late_shipping": (("late", "shipping", "fulfillment"),),
    "shipping_outage": (("stalled", "shipping", "fulfillment"),),
}
# orders that must produce no finding at all
CONTROL_KINDS = ("cancelled", "declined_then_paid", "redelivered", "cancelled_after_decline")

FIRST_NAMES = ["Mary", "李", "José", "Zoë", "Olúwa", "Søren", "Анна", "Mary Sethwamy-Smithson"]


@dataclass
class SimulationResult:
    """What the simulator wrote and what it expects ordertrail to find."""

    root: Path
    config_path: Path
    as_of: datetime
    orders: int
    events: int
    malformed: int
    expected: dict[tuple[str, str, str, str], str] = field(default_factory=dict)  # finding -> fault
    faults: Counter[str] = field(default_factory=Counter)
    controls: Counter[str] = field(default_factory=Counter)
    outage_start: datetime | None = None

    def expected_by_kind(self) -> Counter[str]:
        return Counter(k[1] for k in self.expected)


@dataclass
class Simulation:
    orders: int = 2000
    seed: int = 7
    fault_rate: float = 0.06
    days: int = 10  # at least 8: faults need 4 days of room before the outage
    as_of: datetime = datetime(2026, 3, 1, tzinfo=UTC)
    outage_hours: float = 60.0
    malformed_rate: float = 0.002
    shuffle: bool = False
    files_per_source: int = 2

    def run(self, root: Path) -> SimulationResult:
        return simulate(self, root)


def _iso(t: float, rng: random.Random) -> str:
    """ISO-8601 with a varying offset — the same instant, as different services write it."""
    off = rng.choice((0, 2, -5, 5.5))
    tz = UTC if off == 0 else __import__("datetime").timezone(timedelta(hours=off))
    dt = datetime.fromtimestamp(t, tz=tz)
    s = dt.isoformat(timespec="milliseconds")
    return s.replace("+00:00", "Z")


def simulate(sim: Simulation, root: Path) -> SimulationResult:
    """Write the demo pipeline's files under ``root`` and return the ground truth."""
    rng = random.Random(sim.seed)
    root = Path(root)
    data = root / "data"
    for sub in ("checkout", "payments", "warehouse"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    config_path = root / "ordertrail.toml"
    config_path.write_text(DEMO_CONFIG, encoding="utf-8")

    end = sim.as_of.timestamp()
    t0 = end - sim.days * D
    outage = end - sim.outage_hours * H
    # faults only in orders placed 4 days and more before the outage, so each has one answer
    fault_until = outage - 4 * D
    res = SimulationResult(root, config_path, sim.as_of, sim.orders, 0, 0)
    res.outage_start = datetime.fromtimestamp(outage, tz=UTC)

    checkout: list[dict[str, Any]] = []
    payments: list[dict[str, Any]] = []
    confirmations: list[list[Any]] = []
    warehouse: list[dict[str, Any]] = []
    shipping: list[list[Any]] = []
    cancels: list[dict[str, Any]] = []
    fault_names = list(FAULT_KINDS)
    fault_names.remove("shipping_outage")
    pay_seq = 0

    def expect(fault: str, oid: str) -> None:
        res.faults[fault] += 1
        for kind, hop, frm in FAULT_KINDS[fault]:
            res.expected[(oid, kind, hop, frm)] = fault

    width = max(6, len(str(sim.orders)))
    for i in range(sim.orders):
        oid = f"WO-{i:0{width}d}"
        if i % 997 == 13:
            oid = f"WO-{i:0{width}d}-" + "x" * 300  # very long ids must survive untouched
        placed = t0 + (i + rng.random()) * (sim.days * D - 3 * H) / sim.orders
        amount = round(rng.uniform(5, 500), 2)
        name = rng.choice(FIRST_NAMES)
        fault = None
        control = None
        if placed < fault_until:
            r = rng.random()
            if r < sim.fault_rate:
                fault = fault_names[i % len(fault_names)]
            elif r < sim.fault_rate * 1.5:
                control = CONTROL_KINDS[i % len(CONTROL_KINDS)]
        if fault == "orphan_shipment":
            # a shipment for an order no checkout ever saw
            oid = f"ZZ-{i:0{width}d}"
            shipping.append([oid, _iso(placed + 3 * H, rng), "DHL"])
            expect(fault, oid)
            continue
        if fault != "shipped_without_payment":
            checkout.append(
                {
                    "order": {"id": oid},
                    "ts": _iso(placed, rng),
                    "amount": amount,
                    "customer": {"email": f"c{i}@example.com", "name": name},
                }
            )
        if fault == "lost_before_payment":
            expect(fault, oid)
            continue
        t_pay = placed + rng.uniform(10, 300)
        pay_amount = amount + (7.5 if fault == "amount_mismatch" else 0)
        if fault == "shipped_without_payment":
            checkout.append(
                {
                    "order": {"id": oid},
                    "ts": _iso(placed, rng),
                    "amount": amount,
                    "customer": {"email": f"c{i}@example.com", "name": name},
                }
            )
            t_ful = placed + rng.uniform(1, 12) * H
            warehouse.append({"orderId": oid, "packedAt": _iso(t_ful, rng), "items": {"count": 1}})
            shipping.append([oid, _iso(t_ful + rng.uniform(2, 24) * H, rng), "UPS"])
            expect(fault, oid)
            continue
        if fault == "payment_declined" or control in (
            "declined_then_paid",
            "cancelled_after_decline",
        ):
            pay_seq += 1
            payments.append(
                {
                    "id": f"pay-{pay_seq}",
                    "order_id": oid,
                    "ts": int(t_pay * 1000),
                    "status": "declined",
                    "amount": pay_amount,
                }
            )
            if fault == "payment_declined":
                expect(fault, oid)
                continue
            if control == "cancelled_after_decline":
                cancels.append({"order": oid, "at": _iso(t_pay + 120, rng)})
                res.controls[control] += 1
                continue
            t_pay += rng.uniform(30, 240)
        pay_seq += 1
        pay = {
            "id": f"pay-{pay_seq}",
            "order_id": oid,
            "ts": int(t_pay * 1000),
            "status": "ok",
            "amount": pay_amount,
        }
        payments.append(pay)
        if control == "redelivered":
            payments.append(dict(pay))  # the same event delivered twice: not a double charge
        if fault == "double_charge":
            pay_seq += 1
            payments.append(
                {
                    "id": f"pay-{pay_seq}",
                    "order_id": oid,
                    "ts": int((t_pay + 40) * 1000),
                    "status": "ok",
                    "amount": pay_amount,
                }
            )
        t_conf = t_pay + rng.uniform(1, 60)
        confirmations.append([oid, int(t_conf), rng.choice(("email", "sms"))])
        if control == "cancelled":
            cancels.append({"order": oid, "at": _iso(t_pay + 600, rng)})
            res.controls[control] += 1
            continue
        if fault == "lost_before_fulfillment":
            expect(fault, oid)
            continue
        t_ful = t_pay + rng.uniform(1, 12) * H
        t_ship = t_ful + rng.uniform(2, 24) * H
        shown_ful = t_ful
        if fault == "clock_skewed_warehouse":
            t_ful = t_pay + H
            t_ship = t_ful + 2 * H
            shown_ful = t_ship + H  # the warehouse clock is ahead: packed after it shipped
        if fault == "late_shipping":
            t_ship = t_ful + 60 * H
        warehouse.append(
            {
                "orderId": oid,
                "packedAt": _iso(shown_ful, rng),
                "items": {"count": rng.randint(1, 5)},
            }
        )
        if fault == "lost_before_shipping":
            expect(fault, oid)
            continue
        if t_ship >= outage:
            # shipping is down: nothing leaves the warehouse any more
            if t_ful + 48 * H < end and fault is None and control is None:
                expect("shipping_outage", oid)
            continue
        if t_ship <= end:
            shipping.append([oid, _iso(t_ship, rng), rng.choice(("DHL", "UPS", "GLS"))])
        if fault:
            expect(fault, oid)
        elif control:
            res.controls[control] += 1

    # malformed records, as real services produce them
    n_bad = max(3, int(sim.orders * sim.malformed_rate))
    bad_checkout = []
    for j in range(n_bad):
        k = j % 3
        if k == 0:
            bad_checkout.append(b'{"order": {"id": "WO-broken", "ts": ')  # truncated JSON
        elif k == 1:
            bad_checkout.append(orjson.dumps({"order": {"id": ""}, "ts": _iso(t0 + j, rng)}))
        else:
            bad_checkout.append(orjson.dumps({"order": {"id": f"BAD-{j}"}, "ts": "yesterday-ish"}))
    res.malformed = n_bad

    if sim.shuffle:
        for lst in (checkout, payments, confirmations, warehouse, shipping, cancels):
            rng.shuffle(lst)
    n = sim.files_per_source
    lines = [orjson.dumps(r) for r in checkout] + bad_checkout
    if not sim.shuffle:
        # bad lines spread through the file rather than at its end
        rng2 = random.Random(sim.seed + 1)
        for b in bad_checkout:
            lines.remove(b)
            lines.insert(rng2.randrange(len(lines) + 1), b)
    for k, part in enumerate(_split(lines, n)):
        (data / "checkout" / f"checkout-{k}.jsonl").write_bytes(b"".join(x + b"\n" for x in part))
    for k, part in enumerate(_split([orjson.dumps(r) for r in payments], n)):
        with gzip.open(data / "payments" / f"payments-{k}.jsonl.gz", "wb", compresslevel=1) as fh:
            fh.write(b"".join(x + b"\n" for x in part))
    for k, part in enumerate(_split([orjson.dumps(r) for r in warehouse], n)):
        (data / "warehouse" / f"packed-{k}.jsonl").write_bytes(b"".join(x + b"\n" for x in part))
    _write_csv(data / "confirmations.csv", ["order_id", "sent_at", "channel"], confirmations)
    _write_csv(data / "shipping.csv", ["order", "shipped_at", "carrier"], shipping)
    (data / "cancellations.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in cancels))
    res.events = (
        len(checkout)
        + len(payments)
        + len(confirmations)
        + len(warehouse)
        + len(shipping)
        + len(cancels)
    )
    return res


def _split(items: list[bytes], n: int) -> Iterator[list[bytes]]:
    size = max(1, -(-len(items) // max(1, n)))
    for k in range(0, max(1, len(items)), size):
        yield items[k : k + size]


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def compare(res: SimulationResult, active: list[dict[str, Any]]) -> list[tuple[str, str, int, int]]:
    """Per injected fault: (fault, finding kinds, injected findings, caught findings)."""
    got = {(f["order_id"], f["kind"], f["hop"], f["from_hop"] or "") for f in active}
    rows = []
    for fault, kinds in FAULT_KINDS.items():
        keys = [k for k, v in res.expected.items() if v == fault]
        caught = sum(1 for k in keys if k in got)
        rows.append((fault, ", ".join(sorted({k[0] for k in kinds})), len(keys), caught))
    return rows
