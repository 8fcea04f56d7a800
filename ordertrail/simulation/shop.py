"""Simulate a web shop whose orders are followed through items, parcels and tracking numbers.

The v2 demo pipeline: a shop's checkout lists line items; Stripe reports payments (in cents, with
event types ordertrail must filter out, and a second success event for the same payment when the
customer paid through Stripe Checkout); a mail service sends confirmations and "ready for pickup"
notices; the warehouse logs one pick per item (a CSV in local time, minutes only) and one record
per parcel naming the items packed into it (a parcel may hold items of two orders, an order may
leave in up to three parcels); the shipping service hands parcels over under a tracking number;
the carrier reports scans by tracking number only.

Every injected fault is recorded with the exact findings it must produce under DESIGN.md and
notes/semantics.md — order, kind, hop, from_hop and the objects listed — so the demo can show
"injected vs caught" and tests can measure precision and recall per finding kind. Faults and
controls go into orders placed early in the window, far from the carrier outage and from
``as_of``, so that each has exactly one right answer.

Files are written as the orders are generated (streamed), so the generator also makes benchmark
data: a million orders take memory for a few pending records, not for the whole data set.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import IO, Any, cast
from zoneinfo import ZoneInfo

import orjson

from ordertrail.schemas.event import OrderEvent

logger = logging.getLogger(__name__)

S = 1_000_000  # all times are µs since the epoch, UTC
M = 60 * S
H = 60 * M
D = 24 * H

SHOP_CONFIG = """\
# ordertrail demo: a web shop, from checkout to the customer's door or the pickup counter.
# Items, parcels and tracking numbers are followed as objects: the warehouse knows pick lines
# and parcels, the carrier only its tracking numbers.
[store]
url = "sqlite:///ordertrail.db"

[pipeline]
name = "web-shop"
clock_skew = "2m"
lookback = "30d"
personal = ["customer.email", "customer.name"]
searchable = ["customer.email", "payment_ref"]

[[objects]]
name = "item"                # a line item of an order (the shop's line item id)

[[objects]]
name = "parcel"              # packed in the warehouse; may hold items of several orders
via = "item"

[[objects]]
name = "shipment"            # a carrier's tracking number: belongs to the orders of its parcel
via = "parcel"

[[hops]]
name = "checkout"
next = ["payment"]
within = "15m"

[[hops]]
name = "payment"
next = ["confirmation", "picked"]
within = { confirmation = "5m", picked = "24h" }
unique = true
unique_by = "payment_ref"    # Stripe reports one payment in several success events

[[hops]]
name = "confirmation"
promises = ["picked"]        # "your order is being prepared"
promise_within = "48h"

[[hops]]
name = "picked"
each = "item"
next = ["packed"]
within = "12h"

[[hops]]
name = "packed"
each = "item"
next_any = ["shipped", "ready_for_pickup"]
within = "48h"
when = { ready_for_pickup = { delivery = "pickup" }, shipped = { delivery = ["ship", "express"] } }

[[hops]]
name = "shipped"
next = ["delivered"]
within = "4d"

[[hops]]
name = "delivered"
each = "shipment"            # every parcel of the order must arrive

[[hops]]
name = "ready_for_pickup"
promises = ["packed"]        # "your order is ready": every item must be in the pickup parcel
promise_within = "1h"

[[hops]]
name = "cancelled"
closes = true

[[checks]]
field = "amount"
hops = ["checkout", "payment"]
tolerance = 0.01

[[checks]]
field = "currency"
hops = ["checkout", "payment"]
ignore_case = true           # the shop writes EUR, Stripe eur

# The shop's order webhook (Shopify's shape): the order names its line items.
[[sources]]
name = "shop"
kind = "file"
path = "data/shop/*.jsonl"
hop = "checkout"
order_id = "name"
objects = { item = "line_items[*].id" }
timestamp = "created_at"
attributes = { amount = "total_price", currency = "currency", delivery = "shipping_lines.0.code", "customer.email" = "customer.email", "customer.name" = "customer.first_name" }

# Stripe's event stream, read twice: payment intents, and Checkout sessions (a second success
# event for the same payment). Every other event type is filtered out.
[[sources]]
name = "stripe"
kind = "file"
path = "data/stripe/*.jsonl.gz"
where = { type = ["payment_intent.succeeded", "payment_intent.payment_failed"] }
hop = "payment"
order_id = "data.object.metadata.order_id"
timestamp = "created"
event_id = "id"
phase = "type"
phase_map = { "payment_intent.succeeded" = "completed", "payment_intent.payment_failed" = "failed" }
attributes = { amount = { path = "data.object.amount", scale = 0.01 }, currency = "data.object.currency", payment_ref = "data.object.id" }

[[sources]]
name = "stripe-checkout"
kind = "file"
path = "data/stripe/*.jsonl.gz"
where = { type = "checkout.session.completed", "data.object.payment_status" = "paid" }
hop = "payment"
order_id = "data.object.client_reference_id"
timestamp = "created"
event_id = "id"
attributes = { amount = { path = "data.object.amount_total", scale = 0.01 }, currency = "data.object.currency", payment_ref = "data.object.payment_intent" }

# The mail service's event webhook, read twice: confirmations and "ready for pickup" notices.
[[sources]]
name = "mail-confirmation"
kind = "file"
path = "data/mail/*.jsonl"
where = { category = "order_confirmation", event = "processed" }
hop = "confirmation"
order_id = "order_id"
timestamp = "timestamp"
event_id = "sg_event_id"

[[sources]]
name = "mail-pickup"
kind = "file"
path = "data/mail/*.jsonl"
where = { category = "ready_for_pickup", event = "processed" }
hop = "ready_for_pickup"
order_id = "order_id"
timestamp = "timestamp"
event_id = "sg_event_id"

# The warehouse: one pick per line item (local time, minutes), one record per parcel.
[[sources]]
name = "picks"
kind = "file"
path = "data/warehouse/picks-*.csv"
hop = "picked"
order_id = "order"
objects = { item = "line_id" }
timestamp = "picked_at"
timestamp_format = "%d.%m.%Y %H:%M"
timezone = "Europe/Berlin"
attributes = ["sku", "picker"]

[[sources]]
name = "packing"
kind = "file"
path = "data/warehouse/parcels-*.jsonl"
hop = "packed"
objects = { parcel = "parcel_id", item = "items[*]" }
timestamp = "packed_at"
timezone = "Europe/Berlin"   # the packing stations log local time without an offset
attributes = ["station"]

# The shipping service hands a parcel over under a tracking number; the carrier knows only that.
[[sources]]
name = "labels"
kind = "file"
path = "data/shipping/labels-*.jsonl"
hop = "shipped"
objects = { parcel = "parcel_id", shipment = "tracking_number" }
timestamp = "handed_over_at"
event_id = "label_id"
attributes = ["carrier", "service"]

[[sources]]
name = "carrier"
kind = "file"
path = "data/carrier/*.jsonl"
where = { status = ["in_transit", "delivered"] }
hop_field = "status"
hop_map = { in_transit = "shipped", delivered = "delivered" }
objects = { shipment = "tracking_code" }
timestamp = "datetime"
attributes = ["carrier"]

[[sources]]
name = "cancellations"
kind = "file"
path = "data/oms/cancellations-*.jsonl"
hop = "cancelled"
order_id = "order"
timestamp = "at"
"""

# Pipeline times the simulator keeps within (the config's limits, with room to spare)
WITHIN_PICKED = 24 * H  # payment -> picked
WITHIN_PACKED = 12 * H  # picked -> packed
WITHIN_GROUP = 48 * H  # packed -> shipped | ready_for_pickup
WITHIN_DELIVERED = 4 * D  # shipped -> delivered
LONGEST_PATH = 15 * M + WITHIN_PICKED + WITHIN_PACKED + WITHIN_GROUP + WITHIN_DELIVERED
LOOKBACK = 30 * D

# fault -> the findings (kind, hop, from_hop) it must produce; objects differ per order
FAULT_KINDS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "lost_before_payment": (("vanished", "payment", "checkout"),),
    "lost_before_picking": (
        ("vanished", "picked", "payment"),
        ("confirmed_unfulfilled", "picked", "confirmation"),
    ),
    "item_never_picked": (
        ("vanished", "picked", "payment"),
        ("confirmed_unfulfilled", "picked", "confirmation"),
    ),
    "lost_before_packing": (("vanished", "packed", "picked"),),
    "lost_before_shipping": (("vanished", "shipped", "packed"),),
    "parcel_lost": (("vanished", "delivered", "shipped"),),
    "pickup_never_ready": (("vanished", "ready_for_pickup", "packed"),),
    "ready_with_missing_item": (
        ("vanished", "packed", "picked"),
        ("confirmed_unfulfilled", "packed", "ready_for_pickup"),
    ),
    "double_charge": (("duplicate", "payment", ""),),
    "skipped_payment": (("skipped", "payment", ""),),
    "orphan_payment": (("orphan", "checkout", ""),),
    "unlinked_scan": (("orphan", "shipped", ""),),
    "payment_declined": (("failed", "payment", ""),),
    "amount_mismatch": (("mismatch", "payment", "checkout"),),
    "clock_skewed_picker": (("out_of_order", "packed", "picked"),),
    "late_shipping": (("late", "shipped", "packed"),),
    "carrier_outage": (("stalled", "delivered", "shipped"),),
}
INJECTED_FAULTS = tuple(f for f in FAULT_KINDS if f != "carrier_outage")

# Controls: orders that must produce no finding at all. The first five are injected at a rate;
# the others are what ordinary orders do, tagged when they happen in the faults' zone.
RARE_CONTROLS = (
    "cancelled",
    "declined_then_paid",
    "cancelled_after_decline",
    "redelivered",
    "scan_before_label",
)
CONTROL_KINDS = (
    *RARE_CONTROLS,
    "pickup",
    "split_delivered",
    "mixed_parcel",
    "second_success_event",
)

# (order_id, kind, hop, from_hop, objects); "" stands for a null order_id or from_hop
FindingKey = tuple[str, str, str, str, tuple[str, ...]]

# the files the simulator writes, and the sources that read each of them
SINK_READERS: dict[str, tuple[str, ...]] = {
    "shop": ("shop",),
    "stripe": ("stripe", "stripe-checkout"),
    "mail": ("mail-confirmation", "mail-pickup"),
    "picks": ("picks",),
    "packing": ("packing",),
    "labels": ("labels",),
    "carrier": ("carrier",),
    "cancellations": ("cancellations",),
}
_SINK_FILES = {
    "shop": "shop/orders-{k}.jsonl",
    "stripe": "stripe/events-{k}.jsonl.gz",
    "mail": "mail/events-{k}.jsonl",
    "picks": "warehouse/picks-{k}.csv",
    "packing": "warehouse/parcels-{k}.jsonl",
    "labels": "shipping/labels-{k}.jsonl",
    "carrier": "carrier/scans-{k}.jsonl",
    "cancellations": "oms/cancellations-{k}.jsonl",
}
PICKS_HEADER = ("pick_id", "order", "line_id", "sku", "qty", "picked_at", "picker")

BERLIN = ZoneInfo("Europe/Berlin")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST_NAMES = ["Mary", "李", "José", "Zoë", "Olúwa", "Søren", "Анна", "Mary Sethwamy-Smithson"]
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def finding_key(f: Mapping[str, Any]) -> FindingKey:
    """An engine finding (a dict of ``reconcile(...).active()``) as comparable with ``expected``."""
    return (
        f.get("order_id") or "",
        f["kind"],
        f["hop"],
        f.get("from_hop") or "",
        tuple(sorted(f.get("objects") or ())),
    )


@dataclass
class ShopResult:
    """What the shop simulator wrote, and what it expects ordertrail to find and store."""

    root: Path
    config_path: Path
    as_of: datetime
    orders: int
    outage_start: datetime
    events: int = 0  # events the sources must store (redelivered records and filtered ones not)
    records: int = 0  # lines written, all sources
    malformed: int = 0  # records that must be quarantined
    filtered: Counter[str] = field(default_factory=Counter)  # source -> records `where` drops
    expected: dict[FindingKey, str] = field(default_factory=dict)  # finding -> fault
    faults: Counter[str] = field(default_factory=Counter)  # fault -> injected cases
    controls: Counter[str] = field(default_factory=Counter)  # control -> orders
    control_orders: dict[str, tuple[str, ...]] = field(default_factory=dict)  # order -> controls
    event_list: list[OrderEvent] | None = None  # every stored event, as mapped (keep_events)

    def expected_by_kind(self) -> Counter[str]:
        return Counter(k[1] for k in self.expected)


@dataclass
class ShopSimulation:
    """The knobs of a shop simulation; :meth:`run` writes it under a folder."""

    orders: int = 2000
    seed: int = 7
    fault_rate: float = 0.06  # share of the faults' zone's orders given a fault
    control_rate: float = 0.04  # share given a rare control (cancelled, declined then paid …)
    days: int = 20  # orders are placed over this many days before as_of (14 to 21)
    as_of: datetime = datetime(2026, 3, 1, tzinfo=UTC)
    outage_hours: float = 84.0  # the carrier reports nothing in the last hours before as_of
    malformed_rate: float = 0.002
    shuffle: bool = False  # records in random order within each file
    shuffle_buffer: int = 100_000  # lines per file held for shuffling (a full shuffle below)
    files_per_source: int = 2
    keep_events: bool = True  # keep the mapped events in the result (off for benchmark data)
    split_rate: float = 0.25  # orders of two or more items shipped in 2-3 parcels
    mix_rate: float = 0.12  # orders whose last parcel also takes items of the next order
    session_rate: float = 0.3  # orders paid through Stripe Checkout (a second success event)

    def run(self, root: str | Path, on_order: Callable[[int], None] | None = None) -> ShopResult:
        return simulate_shop(self, Path(root), on_order)


def simulate_shop(
    sim: ShopSimulation, root: Path, on_order: Callable[[int], None] | None = None
) -> ShopResult:
    """Write the shop's config and data files under ``root``; return the ground truth."""
    if not 14 <= sim.days <= 21:
        # fewer days leave no room for faults before the outage; more put the first orders
        # within the pipeline's longest path of the lookback window's start (orphan rule)
        raise ValueError(f"days must be between 14 and 21, not {sim.days}")
    if sim.orders < 1:
        raise ValueError("orders must be positive")
    if not 24 <= sim.outage_hours <= 120:
        raise ValueError(f"outage_hours must be between 24 and 120, not {sim.outage_hours}")
    if sim.as_of.tzinfo is None:
        sim = replace(sim, as_of=sim.as_of.replace(tzinfo=UTC))  # naive means UTC
    gen = _ShopGenerator(sim, root)
    try:
        gen.run(on_order)
    finally:
        gen.close()
    return gen.res


def compare(
    res: ShopResult, active: Iterable[Mapping[str, Any]]
) -> list[tuple[str, str, int, int]]:
    """Per fault: (fault, finding kinds, findings injected, findings caught)."""
    got = {finding_key(f) for f in active}
    rows = []
    for fault, kinds in FAULT_KINDS.items():
        keys = [k for k, v in res.expected.items() if v == fault]
        caught = sum(1 for k in keys if k in got)
        rows.append((fault, ", ".join(sorted({k[0] for k in kinds})), len(keys), caught))
    return rows


# -- time formats: each returns the text written and the instant a reader parses back --------


def _dt(us: int, tz: tzinfo = UTC) -> datetime:
    return (_EPOCH + timedelta(microseconds=us)).astimezone(tz)


def _us(dt: datetime) -> int:
    d = dt - _EPOCH
    return (d.days * 86400 + d.seconds) * S + d.microseconds


def _iso_ms(us: int, offset_min: int) -> tuple[str, int]:
    """ISO-8601 in ms with an offset: the same instant, as different services write it."""
    us -= us % 1000
    tz = UTC if offset_min == 0 else timezone(timedelta(minutes=offset_min))
    return _dt(us, tz).isoformat(timespec="milliseconds").replace("+00:00", "Z"), us


def _iso_s(us: int, offset_min: int = 0) -> tuple[str, int]:
    us -= us % S
    tz = UTC if offset_min == 0 else timezone(timedelta(minutes=offset_min))
    return _dt(us, tz).isoformat(timespec="seconds").replace("+00:00", "Z"), us


def _epoch_s(us: int) -> tuple[int, int]:
    us -= us % S
    return us // S, us


def _berlin(us: int, step: int, fmt: str | None) -> tuple[str, int]:
    """Local Berlin time without an offset, rounded up to ``step`` µs: the text and the instant
    it reads back as (an instant in the repeated autumn hour moves on to one that reads back)."""
    us += -us % step
    while True:
        local = _dt(us, BERLIN).replace(tzinfo=None)
        if _us(local.replace(tzinfo=BERLIN)) == us:
            return (local.strftime(fmt) if fmt else local.isoformat(timespec="seconds")), us
        us += H


def _pick_time(us: int) -> tuple[str, int]:
    return _berlin(us, M, "%d.%m.%Y %H:%M")


def _packed_time(us: int) -> tuple[str, int]:
    return _berlin(us, S, None)


# -- output ----------------------------------------------------------------------------------


class _Sink:
    """The files of one kind of record, written as generated (optionally through a shuffle
    buffer), split into parts by order number."""

    FLUSH = 1 << 20  # bytes gathered per file before a write

    def __init__(
        self,
        paths: list[Path],
        header: bytes | None,
        rng: random.Random | None,
        buffer: int,
    ):
        self.paths = paths
        self.rng = rng
        self.buffer = max(1, buffer)
        # lines are copied into one bytearray per file: orjson's bytes each hold a 4 KiB block
        self.pending = [bytearray() for _ in paths]
        self.shuffled: list[list[bytes]] = [[] for _ in paths]
        self.fhs: list[IO[bytes]] = []
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            fh = cast(
                IO[bytes],
                gzip.open(p, "wb", compresslevel=1) if p.name.endswith(".gz") else open(p, "wb"),  # noqa: SIM115
            )
            if header:
                fh.write(header + b"\n")
            self.fhs.append(fh)

    def write(self, part: int, line: bytes) -> None:
        if self.rng is not None:
            buf = self.shuffled[part]
            buf.append(bytes(memoryview(line)))  # a compact copy
            if len(buf) < self.buffer:
                return
            j = self.rng.randrange(len(buf))
            buf[j], buf[-1] = buf[-1], buf[j]
            line = buf.pop()
        out = self.pending[part]
        out += line
        out += b"\n"
        if len(out) >= self.FLUSH:
            self.fhs[part].write(out)
            out.clear()

    def close(self) -> None:
        for part, fh in enumerate(self.fhs):
            if self.rng is not None:
                rest = self.shuffled[part]
                self.rng.shuffle(rest)
                for line in rest:
                    self.pending[part] += line + b"\n"
                rest.clear()
            fh.write(self.pending[part])
            self.pending[part].clear()
            fh.close()


def _csv_field(v: object) -> str:
    s = str(v)
    if any(c in s for c in ',"\r\n'):
        s = '"' + s.replace('"', '""') + '"'
    return s


# -- the generator -----------------------------------------------------------------------------


@dataclass
class _Order:
    i: int
    oid: str
    placed: int
    delivery: str  # pickup | ship | express
    items: list[tuple[int, str]]  # (line item id, sku)
    part: int
    email: str
    zone: bool = False  # placed where faults and controls go
    fault: str | None = None
    control: str | None = None
    t_pay: int = 0
    tags: set[str] = field(default_factory=set)
    packed: list[int] = field(default_factory=list)  # per parcel, when written
    shipped: list[int] = field(default_factory=list)  # times of its events at shipped
    shipments: dict[str, int | None] = field(default_factory=dict)  # tracking -> delivered

    @property
    def ships(self) -> bool:
        return self.delivery != "pickup"


@dataclass
class _Parcel:
    pid: str
    lines: list[tuple[_Order, int, str]]  # (order, line item id, sku)
    part: int


@dataclass
class _Flags:
    """How one parcel's way goes wrong (or not)."""

    skew: bool = False  # the picker's scanner clock runs 3h ahead
    unpacked: frozenset[int] = frozenset()  # picked but left out of the parcel
    stop: str | None = None  # "picked": never packed; "packed": never handed over
    lost: bool = False  # handed over, never delivered
    late: bool = False  # handed over 60h after packing
    scan_first: bool = False  # the carrier's first scan is written before the handover record


class _ShopGenerator:
    def __init__(self, sim: ShopSimulation, root: Path):
        self.sim = sim
        self.rng = random.Random(sim.seed)
        self.root = root
        self.as_of = _us(sim.as_of)
        self.t0 = self.as_of - sim.days * D
        self.span = sim.days * D - 6 * H
        self.outage = self.as_of - int(sim.outage_hours * H)
        # faults and controls only in orders placed this long before the outage: each then has
        # one answer (their edges are decided while the pipeline runs, and nothing is in flight)
        self.fault_until = self.outage - 9 * D
        self.mix_until = self.outage - 5 * D
        root.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "ordertrail.toml"
        self.config_path.write_text(SHOP_CONFIG, encoding="utf-8")
        self.res = ShopResult(
            root, self.config_path, sim.as_of, sim.orders, _dt(self.outage).astimezone(UTC)
        )
        if sim.keep_events:
            self.res.event_list = []
        n = max(1, sim.files_per_source)
        self.nparts = n
        shuffle_rng = random.Random(sim.seed + 1) if sim.shuffle else None
        self.sinks: dict[str, _Sink] = {}
        for name, pattern in _SINK_FILES.items():
            paths = [root / "data" / pattern.format(k=k) for k in range(n)]
            header = ",".join(PICKS_HEADER).encode() if name == "picks" else None
            self.sinks[name] = _Sink(paths, header, shuffle_rng, sim.shuffle_buffer)
        self.width = max(6, len(str(sim.orders)))
        self.seq = 0
        self.fault_seq = 0
        self.control_seq = 0
        self.open_parcel: tuple[_Parcel, _Order] | None = None  # a parcel waiting to be mixed
        self.tags: dict[str, set[str]] = {}  # control orders -> what they do (keep_events only)
        bad = random.Random(sim.seed + 2)
        n_bad = max(3, int(sim.orders * sim.malformed_rate))
        self.bad_shop = Counter(bad.randrange(sim.orders) for _ in range(n_bad))
        self.bad_carrier = Counter(bad.randrange(sim.orders) for _ in range(max(2, n_bad // 3)))

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        for s in self.sinks.values():
            s.close()

    def _id(self, prefix: str, n: int = 24) -> str:
        v = self.rng.getrandbits(6 * n)
        return prefix + "".join(_B62[(v >> (6 * k)) % 62] for k in range(n))

    def _emit(
        self, sink: str, part: int, t: int, line: bytes, events: Sequence[OrderEvent]
    ) -> bool:
        """Write one record unless it happens after as_of; count what its readers make of it."""
        if t > self.as_of:
            return False
        self.sinks[sink].write(part, line)
        self.res.records += 1
        self.res.events += len(events)
        taken = {e.source for e in events}
        for src in SINK_READERS[sink]:
            if src not in taken:
                self.res.filtered[src] += 1
        if self.res.event_list is not None:
            self.res.event_list.extend(events)
        return True

    def _redeliver(self, sink: str, part: int, line: bytes, taken_by: str) -> None:
        """The same record again, byte for byte: the same event, stored once (the file's other
        readers filter it out again)."""
        self.sinks[sink].write(part, line)
        self.res.records += 1
        for src in SINK_READERS[sink]:
            if src != taken_by:
                self.res.filtered[src] += 1

    def _bad(self, sink: str, part: int, line: bytes) -> None:
        self.sinks[sink].write(part, line)
        self.res.records += 1
        self.res.malformed += len(SINK_READERS[sink])

    def _event(
        self,
        source: str,
        line: bytes,
        event_id: str | None,
        order_id: str,
        hop: str,
        t: int,
        phase: str = "completed",
        attributes: dict[str, Any] | None = None,
        objects: dict[str, list[str]] | None = None,
    ) -> list[OrderEvent]:
        if self.res.event_list is None:
            return [_COUNT_ONLY[source]]
        if event_id is None:
            event_id = hashlib.blake2b(source.encode() + b"\x1f" + line, digest_size=16).hexdigest()
        return [
            OrderEvent(
                event_id=event_id,
                order_id=order_id,
                hop=hop,
                occurred_at=t,
                source=source,
                phase=phase,
                attributes=attributes or {},
                objects=objects or {},
            )
        ]

    def _expect(
        self, fault: str, oid: str, kind: str, hop: str, frm: str, objects: Iterable[str] = ()
    ) -> None:
        self.res.expected[(oid, kind, hop, frm, tuple(sorted(objects)))] = fault

    def _u(self, lo: int, hi: int) -> int:
        return lo + int(self.rng.random() * (hi - lo))

    # -- the run ----------------------------------------------------------------------------

    def run(self, on_order: Callable[[int], None] | None = None) -> None:
        sim = self.sim
        step = max(1, sim.orders // 200)
        for i in range(sim.orders):
            if on_order is not None and i % step == 0 and i:
                on_order(step)
            part = i * self.nparts // sim.orders
            for _ in range(self.bad_shop[i]):
                self._bad_shop_record(i, part)
            for _ in range(self.bad_carrier[i]):
                self._bad_carrier_record(i, part)
            self._order(i, part)
        if self.open_parcel:
            self._close_open_parcel()
        for oid, tags in self.tags.items():
            if tags:
                self.res.control_orders[oid] = tuple(sorted(tags))
                self.res.controls.update(tags)

    def _order(self, i: int, part: int) -> None:
        rng = self.rng
        placed = self.t0 + int((i + rng.random()) * self.span / self.sim.orders)
        if self.open_parcel and placed > self.open_parcel[1].t_pay + 6 * H:
            self._close_open_parcel()
        fault = control = None
        zone = placed < self.fault_until
        if zone:
            r = rng.random()
            if r < self.sim.fault_rate:
                fault = INJECTED_FAULTS[self.fault_seq % len(INJECTED_FAULTS)]
                self.fault_seq += 1
                self.res.faults[fault] += 1
            elif r < self.sim.fault_rate + self.sim.control_rate:
                control = RARE_CONTROLS[self.control_seq % len(RARE_CONTROLS)]
                self.control_seq += 1
        if fault == "orphan_payment":
            self._orphan_payment(i, part, placed)
            return
        if fault == "unlinked_scan":
            self._unlinked_scan(part, placed)
            return

        oid = f"WO-{i:0{self.width}d}"
        if i % 997 == 13:
            oid += "-" + "x" * 300  # very long ids must survive untouched
        n_items = rng.choices((1, 2, 3, 4, 5), (15, 25, 30, 20, 10))[0]
        delivery = rng.choices(("ship", "express", "pickup"), (65, 15, 20))[0]
        if fault in ("item_never_picked", "ready_with_missing_item"):
            n_items = 3
        elif fault == "parcel_lost":
            n_items = rng.choice((3, 4))
        if fault in ("ready_with_missing_item", "pickup_never_ready"):
            delivery = "pickup"
        elif fault in (
            "parcel_lost",
            "lost_before_shipping",
            "late_shipping",
            "item_never_picked",  # a pickup order would also break ready_for_pickup's promise
        ) or control in (
            "scan_before_label",
            "redelivered",
        ):
            delivery = rng.choice(("ship", "express"))
        items = []
        for _ in range(n_items):
            self.seq += 1
            items.append((12_000_000_000 + self.seq, f"SKU-{rng.randrange(1, 5000):05d}"))
        o = _Order(i, oid, placed, delivery, items, part, f"c{i}@example.com", zone, fault, control)
        if zone and fault is None and self.sim.keep_events:
            self.tags[oid] = o.tags  # filled as the order goes
            if control:
                o.tags.add(control)
            if delivery == "pickup":
                o.tags.add("pickup")

        cents = self._checkout(o)
        if fault == "lost_before_payment":
            self._stripe_pi(o, "payment_intent.created", placed + 2 * S, self._id("pi_"), cents)
            self._expect(fault, oid, "vanished", "payment", "checkout")
            return
        if not self._pay(o, cents):
            return
        if fault == "lost_before_picking":
            objs = [f"item:{iid}" for iid, _ in items]
            self._expect(fault, oid, "vanished", "picked", "payment", objs)
            self._expect(fault, oid, "confirmed_unfulfilled", "picked", "confirmation", objs)
            return
        self._fulfil(o)

    # -- checkout and payment ---------------------------------------------------------------

    def _checkout(self, o: _Order) -> int:
        rng = self.rng
        lines = []
        total = 0
        for iid, sku in o.items:
            qty = rng.choice((1, 1, 1, 2))
            price = rng.randrange(199, 15000)
            total += qty * price
            lines.append({"id": iid, "sku": sku, "quantity": qty, "price": f"{price / 100:.2f}"})
        ship = {"pickup": 0, "ship": 490, "express": 990}[o.delivery]
        total += ship
        name = rng.choice(FIRST_NAMES)
        ts, t = _iso_ms(o.placed, rng.choice((0, 60, -300, 330)))
        amount = f"{total / 100:.2f}"
        rec = {
            "id": 6_100_000_000_000 + o.i,
            "name": o.oid,
            "created_at": ts,
            "currency": "EUR",
            "total_price": amount,
            "customer": {"first_name": name, "email": o.email},
            "line_items": lines,
            "shipping_lines": [{"code": o.delivery, "price": f"{ship / 100:.2f}"}],
        }
        line = orjson.dumps(rec)
        ev = self._event(
            "shop", line, None, o.oid, "checkout", t,
            attributes={"amount": amount, "currency": "EUR", "delivery": o.delivery,
                        "customer.email": o.email, "customer.name": name},
            objects={"item": [str(iid) for iid, _ in o.items]},
        )  # fmt: skip
        self._emit("shop", o.part, t, line, ev)
        o.placed = t
        return total

    def _stripe_pi(
        self, o: _Order, typ: str, t: int, pi: str, cents: int, oid: str | None = None
    ) -> bytes | None:
        """One payment-intent event; the record's bytes when stored."""
        sec, t = _epoch_s(t)
        oid = o.oid if oid is None else oid
        status = {
            "payment_intent.created": "requires_payment_method",
            "payment_intent.succeeded": "succeeded",
            "payment_intent.payment_failed": "requires_payment_method",
        }[typ]
        obj: dict[str, Any] = {
            "id": pi,
            "object": "payment_intent",
            "amount": cents,
            "currency": "eur",
            "status": status,
            "metadata": {"order_id": oid},
        }
        if typ == "payment_intent.payment_failed":
            obj["last_payment_error"] = {"code": "card_declined", "decline_code": "do_not_honor"}
        evt = self._id("evt_")
        rec = {"id": evt, "object": "event", "api_version": "2024-06-20", "created": sec,
               "type": typ, "livemode": True, "data": {"object": obj}}  # fmt: skip
        line = orjson.dumps(rec)
        ev: list[OrderEvent] = []
        if typ != "payment_intent.created":
            phase = "failed" if typ == "payment_intent.payment_failed" else "completed"
            ev = self._event(
                "stripe", line, evt, oid, "payment", t, phase,
                attributes={"amount": cents * 0.01, "currency": "eur", "payment_ref": pi},
            )  # fmt: skip
        return line if self._emit("stripe", o.part, t, line, ev) else None

    def _stripe_other(self, o: _Order, typ: str, t: int, pi: str, cents: int) -> None:
        """charge.succeeded (filtered by both Stripe sources) or checkout.session.completed."""
        sec, t = _epoch_s(t)
        evt = self._id("evt_")
        ev: list[OrderEvent] = []
        if typ == "charge.succeeded":
            obj: dict[str, Any] = {"id": self._id("ch_"), "object": "charge", "amount": cents,
                                   "currency": "eur", "paid": True, "payment_intent": pi,
                                   "metadata": {"order_id": o.oid}}  # fmt: skip
            rec = {"id": evt, "object": "event", "created": sec, "type": typ,
                   "data": {"object": obj}}  # fmt: skip
            line = orjson.dumps(rec)
        else:
            obj = {"id": self._id("cs_live_", 40), "object": "checkout.session",
                   "amount_total": cents, "currency": "eur", "client_reference_id": o.oid,
                   "payment_intent": pi, "payment_status": "paid", "status": "complete",
                   "metadata": {"order_id": o.oid}}  # fmt: skip
            rec = {"id": evt, "object": "event", "created": sec, "type": typ,
                   "data": {"object": obj}}  # fmt: skip
            line = orjson.dumps(rec)
            ev = self._event(
                "stripe-checkout", line, evt, o.oid, "payment", t,
                attributes={"amount": cents * 0.01, "currency": "eur", "payment_ref": pi},
            )  # fmt: skip
        self._emit("stripe", o.part, t, line, ev)

    def _pay(self, o: _Order, cents: int) -> bool:
        """Payment, confirmation, and cancellation; False when the order goes no further."""
        rng, fault, control = self.rng, o.fault, o.control
        t_pay = o.placed + self._u(10 * S, 300 * S)
        if fault == "skipped_payment":
            # the shop let the order through unpaid: no payment, no confirmation; it still ships
            o.t_pay = t_pay
            self._expect(fault, o.oid, "skipped", "payment", "")
            return True
        pi = self._id("pi_3")
        self._stripe_pi(o, "payment_intent.created", o.placed + 2 * S, pi, cents)
        if fault == "amount_mismatch":
            cents += 750
            self._expect(fault, o.oid, "mismatch", "payment", "checkout")
        if fault == "payment_declined" or control in (
            "declined_then_paid",
            "cancelled_after_decline",
        ):
            self._stripe_pi(o, "payment_intent.payment_failed", t_pay, pi, cents)
            if fault == "payment_declined":
                self._expect(fault, o.oid, "failed", "payment", "")
                return False
            if control == "cancelled_after_decline":
                self._cancel(o, _epoch_s(t_pay)[1] + 120 * S)
                return False
            t_pay += self._u(30 * S, 240 * S)
        line = self._stripe_pi(o, "payment_intent.succeeded", t_pay, pi, cents)
        t_pay = _epoch_s(t_pay)[1]
        o.t_pay = t_pay
        self._stripe_other(o, "charge.succeeded", t_pay, pi, cents)
        if control == "redelivered" and line:
            self._redeliver("stripe", o.part, line, "stripe")
        if fault == "double_charge":
            pi2 = self._id("pi_3")
            self._stripe_pi(o, "payment_intent.created", t_pay + 30 * S, pi2, cents)
            self._stripe_pi(o, "payment_intent.succeeded", t_pay + 40 * S, pi2, cents)
            self._expect(fault, o.oid, "duplicate", "payment", "")
        elif rng.random() < self.sim.session_rate:
            self._stripe_other(o, "checkout.session.completed", t_pay + rng.randrange(4) * S, pi, cents)  # fmt: skip
            if o.zone:
                o.tags.add("second_success_event")
        self._mail(o, "order_confirmation", t_pay + rng.randrange(1, 61) * S)
        if control == "cancelled":
            self._cancel(o, t_pay + 600 * S)
            return False
        return True

    def _mail(self, o: _Order, category: str, t: int) -> None:
        """A mail sent (processed), then delivered and maybe opened (filtered)."""
        src = "mail-confirmation" if category == "order_confirmation" else "mail-pickup"
        hop = "confirmation" if category == "order_confirmation" else "ready_for_pickup"
        msg = self._id("", 22)
        for k, event in enumerate(("processed", "delivered", "open")):
            if event == "open" and self.rng.random() < 0.5:
                continue
            sec, te = _epoch_s(t + k * self._u(2 * S, 600 * S))
            sg = self._id("", 22)
            rec = {"email": o.email, "timestamp": sec, "event": event, "category": category,
                   "sg_event_id": sg, "sg_message_id": f"{msg}.filter0001", "order_id": o.oid}  # fmt: skip
            line = orjson.dumps(rec)
            ev = self._event(src, line, sg, o.oid, hop, te) if event == "processed" else []
            self._emit("mail", o.part, te, line, ev)

    def _cancel(self, o: _Order, t: int) -> None:
        ts, t = _iso_s(t)
        line = orjson.dumps({"order": o.oid, "at": ts, "reason": "customer_request"})
        self._emit("cancellations", o.part, t, line, self._event("cancellations", line, None, o.oid, "cancelled", t))  # fmt: skip

    # -- fulfilment -------------------------------------------------------------------------

    def _fulfil(self, o: _Order) -> None:
        rng, fault = self.rng, o.fault
        items = list(o.items)
        missing: tuple[int, str] | None = None
        if fault in ("item_never_picked", "ready_with_missing_item"):
            missing = items[rng.randrange(len(items))]
        if fault == "item_never_picked":
            assert missing is not None
            items.remove(missing)
            obj = [f"item:{missing[0]}"]
            self._expect(fault, o.oid, "vanished", "picked", "payment", obj)
            self._expect(fault, o.oid, "confirmed_unfulfilled", "picked", "confirmation", obj)
        # parcels: pickup orders and most faults in one; split orders in 2-3
        n_parcels = 1
        if (
            o.ships
            and len(items) >= 2
            and fault in (None, "parcel_lost", "lost_before_shipping", "double_charge")
            and (fault == "parcel_lost" or rng.random() < self.sim.split_rate)
        ):
            n_parcels = rng.randint(2, min(3, len(items)))
        cuts = sorted(rng.sample(range(1, len(items)), n_parcels - 1)) if n_parcels > 1 else []
        groups = [items[a:b] for a, b in zip([0, *cuts], [*cuts, len(items)], strict=True)]
        parcels = [_Parcel(self._id("PCL-", 10), [(o, iid, sku) for iid, sku in g], o.part) for g in groups]  # fmt: skip
        if n_parcels > 1 and o.zone:
            o.tags.add("split_delivered")

        flags = [_Flags() for _ in parcels]
        if fault == "lost_before_packing":
            flags[0].stop = "picked"
            self._expect(fault, o.oid, "vanished", "packed", "picked", [f"item:{iid}" for iid, _ in items])  # fmt: skip
        elif fault == "ready_with_missing_item":
            assert missing is not None
            flags[0].unpacked = frozenset((missing[0],))
            obj = [f"item:{missing[0]}"]
            self._expect(fault, o.oid, "vanished", "packed", "picked", obj)
            self._expect(fault, o.oid, "confirmed_unfulfilled", "packed", "ready_for_pickup", obj)
        elif fault == "lost_before_shipping":
            for f in flags:
                f.stop = "packed"
            self._expect(fault, o.oid, "vanished", "shipped", "packed")
        elif fault == "clock_skewed_picker":
            flags[0].skew = True
            self._expect(fault, o.oid, "out_of_order", "packed", "picked", [f"item:{iid}" for iid, _ in items])  # fmt: skip
        elif fault == "late_shipping":
            flags[0].late = True
            self._expect(fault, o.oid, "late", "shipped", "packed")
        elif fault == "parcel_lost":
            flags[-1].lost = True  # its tracking number is known once the parcel is handed over
        elif o.control == "scan_before_label":
            flags[0].scan_first = True

        # an ordinary shipped order may leave its last parcel open for the next order's items
        mixable = (
            o.ships
            and fault is None
            and o.control is None
            and len(items) >= 2
            and o.placed < self.mix_until
        )
        if self.open_parcel and mixable:
            opened, first = self.open_parcel
            self.open_parcel = None
            head = parcels.pop(0)
            flags.pop(0)
            opened.lines.extend(head.lines)
            opened.part = o.part
            self._process(opened, _Flags(), lo=o.t_pay + H, hi=first.t_pay + 10 * H)
            if first.zone:
                first.tags.add("mixed_parcel")
            if o.zone:
                o.tags.add("mixed_parcel")
        elif mixable and self.rng.random() < self.sim.mix_rate:
            self.open_parcel = (parcels.pop(), o)
            flags.pop()
        for p, f in zip(parcels, flags, strict=True):
            self._process(p, f, lo=o.t_pay + H, hi=o.t_pay + 10 * H)

        if fault == "parcel_lost":
            lost = [trk for trk, d in o.shipments.items() if d is None]
            assert len(lost) == 1, lost
            self._expect(fault, o.oid, "vanished", "delivered", "shipped", [f"shipment:{lost[0]}"])  # fmt: skip
        if not o.ships and fault not in ("lost_before_packing",):
            if fault == "pickup_never_ready":
                self._expect(fault, o.oid, "vanished", "ready_for_pickup", "packed")
            elif o.packed:
                self._mail(o, "ready_for_pickup", max(o.packed) + self._u(30 * M, 6 * H))
        if not o.zone and o.ships and o.fault is None:
            self._outage_findings(o)

    def _close_open_parcel(self) -> None:
        """Nobody joined the open parcel in time: it leaves with its own order's items only."""
        assert self.open_parcel
        p, o = self.open_parcel
        self.open_parcel = None
        self._process(p, _Flags(), lo=o.t_pay + H, hi=o.t_pay + 10 * H)

    def _process(self, p: _Parcel, f: _Flags, lo: int, hi: int) -> None:
        """Pick, pack, hand over and deliver one parcel (as far as its flags let it)."""
        rng = self.rng
        wave = self._u(lo, max(lo + 1, hi))
        picks: list[int] = []
        for o, iid, sku in p.lines:
            actual = wave + self._u(0, 30 * M if f.skew else 2 * H)
            shown = actual + (3 * H if f.skew else 0)
            text, t = _pick_time(shown)
            picks.append(t - (3 * H if f.skew else 0))
            row = (self._id("PK", 10), o.oid, iid, sku, 1, text, f"P-{rng.randrange(1, 40):02d}")
            line = ",".join(_csv_field(v) for v in row).encode()
            ev = self._event("picks", line, None, o.oid, "picked", t,
                             attributes={"sku": sku, "picker": row[6]},
                             objects={"item": [str(iid)]})  # fmt: skip
            if self._emit("picks", p.part, t, line, ev) and o.control == "redelivered" and iid == o.items[0][0]:  # fmt: skip
                self._redeliver("picks", p.part, line, "picks")
        if f.stop == "picked":
            return
        after = max(picks)
        packed_text, t_packed = _packed_time(after + self._u(10 * M, 40 * M if f.skew else 2 * H))
        lines = [iid for _, iid, _ in p.lines if iid not in f.unpacked]
        rec = {"parcel_id": p.pid, "items": lines, "packed_at": packed_text,
               "station": f"PK-{rng.randrange(1, 9)}", "weight_g": rng.randrange(200, 9000)}  # fmt: skip
        line = orjson.dumps(rec)
        ev = self._event("packing", line, None, "", "packed", t_packed,
                         attributes={"station": rec["station"]},
                         objects={"parcel": [p.pid], "item": [str(x) for x in lines]})  # fmt: skip
        self._emit("packing", p.part, t_packed, line, ev)
        owners: list[_Order] = []
        for o, _, _ in p.lines:
            if o not in owners:
                owners.append(o)
        for o in owners:
            o.packed.append(t_packed)
        if f.stop == "packed" or not owners[0].ships:
            return

        carrier = rng.choice(("UPS", "DHL", "GLS"))
        trk = f"1Z{rng.randrange(100000, 999999)}{rng.randrange(10**9, 10**10)}"
        handover = t_packed + (60 * H if f.late else self._u(1 * H, 20 * H))
        scan = handover + self._u(30 * M, 8 * H)
        if f.scan_first:
            scan = t_packed + self._u(1 * H, 6 * H)
            handover = scan + self._u(1 * H, 3 * H)
        ts, handover = _iso_s(handover)
        service = "express" if owners[0].delivery == "express" else "standard"
        label = self._id("lbl_", 20)
        rec2 = {"label_id": label, "parcel_id": p.pid, "tracking_number": trk,
                "carrier": carrier, "service": service, "handed_over_at": ts}  # fmt: skip
        line = orjson.dumps(rec2)
        ev = self._event("labels", line, label, "", "shipped", handover,
                         attributes={"carrier": carrier, "service": service},
                         objects={"parcel": [p.pid], "shipment": [trk]})  # fmt: skip
        if not self._emit("labels", p.part, handover, line, ev):
            return  # not handed over yet: the carrier has nothing for it either
        for o in owners:
            o.shipped.append(handover)
            o.shipments[trk] = None
        delivered = handover + self._u(16 * H, 48 * H)
        statuses = [("pre_transit", handover - self._u(1 * M, 30 * M)), ("in_transit", scan)]
        if not f.lost:
            statuses += [("out_for_delivery", delivered - self._u(1 * H, 5 * H)), ("delivered", delivered)]  # fmt: skip
        off = rng.choice((0, 60, -300))
        for status, t in statuses:
            if t >= self.outage:
                continue  # the carrier's webhook is down: these scans never reach us
            ts, t = _iso_s(t, off)
            rec3 = {"tracking_code": trk, "status": status, "datetime": ts, "carrier": carrier,
                    "message": status.replace("_", " ")}  # fmt: skip
            line = orjson.dumps(rec3)
            ev = []
            if status in ("in_transit", "delivered"):
                hop = "shipped" if status == "in_transit" else "delivered"
                ev = self._event("carrier", line, None, "", hop, t,
                                 attributes={"carrier": carrier}, objects={"shipment": [trk]})  # fmt: skip
            if not self._emit("carrier", p.part, t, line, ev):
                continue
            if status == "in_transit":
                for o in owners:
                    o.shipped.append(t)
                if any(o.control == "redelivered" for o in owners):
                    self._redeliver("carrier", p.part, line, "carrier")
            elif status == "delivered":
                for o in owners:
                    o.shipments[trk] = t

    def _outage_findings(self, o: _Order) -> None:
        """Shipments of an ordinary order that the carrier outage leaves undelivered: stalled
        once the order's time at shipped plus 4 days has passed."""
        if not o.shipped or min(o.shipped) + WITHIN_DELIVERED >= self.as_of:
            return
        waiting = [f"shipment:{trk}" for trk, d in o.shipments.items() if d is None]
        if waiting:
            self._expect("carrier_outage", o.oid, "stalled", "delivered", "shipped", waiting)
            self.res.faults["carrier_outage"] += 1

    # -- faults without an order ---------------------------------------------------------------

    def _orphan_payment(self, i: int, part: int, placed: int) -> None:
        """A payment for an order the shop never saw (a sale from another channel)."""
        oid = f"POS-{i:0{self.width}d}"
        o = _Order(i, oid, placed, "pickup", [], part, f"c{i}@example.com")
        pi = self._id("pi_3")
        cents = self.rng.randrange(500, 20000)
        self._stripe_pi(o, "payment_intent.created", placed, pi, cents)
        self._stripe_pi(o, "payment_intent.succeeded", placed + 20 * S, pi, cents)
        self._stripe_other(o, "charge.succeeded", placed + 20 * S, pi, cents)
        self._expect("orphan_payment", oid, "orphan", "checkout", "")

    def _unlinked_scan(self, part: int, placed: int) -> None:
        """Carrier scans for a tracking number no parcel of ours was handed over under."""
        trk = f"1Z999ZZ9{self.rng.randrange(10**9, 10**10)}"
        t_in = placed + self._u(2 * H, 20 * H)
        for status, t in (("pre_transit", t_in - 20 * M), ("in_transit", t_in), ("delivered", t_in + 30 * H)):  # fmt: skip
            ts, t = _iso_s(t, -300)
            rec = {"tracking_code": trk, "status": status, "datetime": ts, "carrier": "UPS",
                   "message": status.replace("_", " ")}  # fmt: skip
            line = orjson.dumps(rec)
            ev = []
            if status != "pre_transit":
                hop = "shipped" if status == "in_transit" else "delivered"
                ev = self._event("carrier", line, None, "", hop, t,
                                 attributes={"carrier": "UPS"}, objects={"shipment": [trk]})  # fmt: skip
            self._emit("carrier", part, t, line, ev)
        self._expect("unlinked_scan", "", "orphan", "shipped", "", [f"shipment:{trk}"])

    # -- malformed records ------------------------------------------------------------------------

    def _bad_shop_record(self, j: int, part: int) -> None:
        k = j % 3
        ts = _iso_ms(self.t0 + j * S, 0)[0]
        if k == 0:
            line = b'{"name": "WO-broken", "created_at": '  # truncated JSON
        elif k == 1:  # neither an order id nor a line item
            line = orjson.dumps({"name": "", "created_at": ts, "line_items": []})
        else:
            line = orjson.dumps({"name": f"BAD-{j}", "created_at": "yesterday-ish", "line_items": []})  # fmt: skip
        self._bad("shop", part, line)

    def _bad_carrier_record(self, j: int, part: int) -> None:
        if j % 2:
            line = b'{"tracking_code": "1Z9'  # truncated JSON
        else:  # an in-transit scan without a tracking code
            line = orjson.dumps({"status": "in_transit", "datetime": _iso_s(self.t0 + j * S)[0]})
        self._bad("carrier", part, line)


# placeholders counted when events are not kept (benchmark data)
_COUNT_ONLY = {
    src: OrderEvent("", "", "", 0, src) for readers in SINK_READERS.values() for src in readers
}
