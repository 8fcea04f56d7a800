"""A seeded web shop: ~300 orders across Shopify, Stripe and EasyPost, as their webhooks deliver them.

Each system writes what it would really send, as JSON Lines of webhook bodies, one file per
webhook topic (the topic travels in a header, so a receiver files bodies by topic):

- Shopify (REST Admin API webhooks): ``orders/create`` and ``orders/cancelled`` (the Order
  resource: numeric ids, prices as strings, ``line_items``, ``shipping_lines``, times in the
  shop's time zone with an offset), ``fulfillments/create`` (``order_id``, ``line_items`` of the
  fulfilment, ``tracking_numbers``; a split shipment is several fulfilments) and
  ``fulfillment_events/create`` (``status`` ``ready_for_pickup`` for local pickup, carrier
  statuses for shipped parcels).
- Stripe: every Event object of the account (``payment_intent.created``, ``.succeeded``,
  ``.payment_failed``, ``.amount_capturable_updated``, ``.canceled``, ``charge.succeeded``,
  ``.failed``, ``.refunded``, ``.expired``): amounts in cents, ``currency`` lowercase, ``created``
  in epoch seconds, the Shopify order id in ``data.object.metadata.order_id`` (a string, as all
  Stripe metadata); redeliveries repeat the event id; one intent sometimes has two success events.
- EasyPost: ``tracker.created`` / ``tracker.updated`` Event objects whose ``result`` is the
  Tracker (``tracking_code``, ``status`` pre_transit / in_transit / out_for_delivery / delivered,
  ``updated_at``, cumulative ``tracking_details``). No order id anywhere.

Alongside the files the generator returns what ordertrail must make of them: the mapped events
(the oracle's input), how many records each source must filter, and the ground truth — the
findings every injected problem must produce (reasoned from DESIGN.md and notes/semantics.md,
worked out in ``PROBLEMS`` below) — with the clean orders, which must produce none.
"""

from __future__ import annotations

import random
import string
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tests.realshapes.truth import Expected, iso_z, raw_id, us, write_jsonl

CONFIG = Path(__file__).with_name("ordertrail.toml")
SHOP_TZ = ZoneInfo("America/New_York")
START = datetime(2024, 5, 1, 8, 0, tzinfo=SHOP_TZ)
DAYS = 14  # orders are placed over two weeks
AS_OF = datetime(2024, 6, 1, tzinfo=UTC)  # every deadline of every order has passed by then
N_ORDERS = 300
PROBLEM_RANGE = (15, 196)  # problem orders are placed in days ~1-9: later orders show the
#                            pipeline moved on past them (vanished, not stalled)

FILES = {
    "orders": "data/shopify/orders_create.jsonl",
    "cancelled": "data/shopify/orders_cancelled.jsonl",
    "fulfillments": "data/shopify/fulfillments_create.jsonl",
    "fulfillment_events": "data/shopify/fulfillment_events_create.jsonl",
    "stripe": "data/stripe/events.jsonl",
    "easypost": "data/easypost/trackers.jsonl",
}

# The problems, how many orders get each, and the findings each must produce. ``None`` in the
# order column of the table means "no order": an object that links to no order.
#
# problem                  findings (kind hop from_hop objects), and why
# never_captured    x3     vanished payment<-placed: an authorisation never captured (manual
#                          capture, expired after 7 days); only .created / .amount_capturable_
#                          updated / .canceled exist, none of them is a payment.
# payment_failed    x2     failed payment: payment_failed and no later success (§8).
# amount_in_dollars x2     mismatch payment<-placed field amount: the integration sent dollars
#                          into Stripe's cents field (18742 -> 187 cents = 1.87 vs "187.42").
# wrong_currency    x1     mismatch payment<-placed field currency: charged in EUR ("eur" ->
#                          "EUR" vs the shop's "USD"; "usd" -> "USD" is clean).
# partial_fulfilled x3     vanished fulfilled<-payment objects [the never fulfilled line item]:
#                          fulfilled has each = item (§4: one unit per item).
# split_parcel_lost x3     vanished delivered<-shipped objects [shipment:the lost parcel]: the
#                          other parcel of the split shipment was delivered; delivered has
#                          each = shipment. One of the three was never even scanned.
# pickup_never_ready x2    vanished ready_for_pickup<-fulfilled: the next_any group's only
#                          active member for a local_pickup order is ready_for_pickup (§3 label).
# fulfilled_unpaid  x2     skipped payment: a later hop (fulfilled) reached, payment never (§5);
#                          a passed hop is satisfied, so no vanished payment<-placed.
# unknown_tracking  x2     orphan (order null) hop shipped objects [shipment:T]: carrier scans
#                          for a tracking number no fulfilment names (DESIGN "Unlinked").
# double_charge     x2     duplicate payment: two distinct payment intents succeeded (unique_by).
# never_shipped     x2     vanished shipped<-fulfilled: label bought, parcel never scanned.
# never_fulfilled   x2     vanished fulfilled<-payment objects [every line item]: paid, then
#                          nothing (a pickup order's items must be fulfilled too).
# payment_no_order  x1     orphan hop placed: a Stripe payment naming an order id Shopify never
#                          sent (its order has no event at the entry hop).
PROBLEMS: list[tuple[str, int]] = [
    ("never_captured", 3),
    ("payment_failed", 2),
    ("amount_in_dollars", 2),
    ("wrong_currency", 1),
    ("partial_fulfilled", 3),
    ("split_parcel_lost", 3),
    ("pickup_never_ready", 2),
    ("fulfilled_unpaid", 2),
    ("double_charge", 2),
    ("never_shipped", 2),
    ("never_fulfilled", 2),
]
UNLINKED_TRACKING = 2
PAYMENTS_WITHOUT_ORDER = 1

CATALOG = [
    # title, variant, sku, price in cents, grams
    ("Ridgeline Daypack", "Slate / 22L", "RDP-22-SLT", 8900, 820),
    ("Ridgeline Daypack", "Moss / 28L", "RDP-28-MOS", 9900, 910),
    ("Merino Crew Sock", "M", "MCS-M", 1800, 90),
    ("Merino Crew Sock", "L", "MCS-L", 1800, 95),
    ("Trail Bottle 750 ml", "Clear", "TB750-CLR", 2400, 180),
    ("Packable Rain Shell", "Navy / S", "PRS-NVY-S", 14900, 310),
    ("Packable Rain Shell", "Navy / M", "PRS-NVY-M", 14900, 325),
    ("Camp Mug", "Enamel White", "CM-ENW", 1600, 240),
    ("Headlamp 400", "Black", "HL400-BLK", 3950, 110),
    ("Trekking Poles", "Pair", "TP-PAIR", 11900, 540),
    ("Sun Hoodie", "Sand / L", "SH-SND-L", 5800, 260),
    ("Dry Bag 10L", "Orange", "DB10-ORG", 2700, 150),
]
FIRST = ["Mary", "James", "Ana", "Wei", "Priya", "Tom", "Lena", "Omar", "Chloe", "Diego", "Sara"]
LAST = ["Smith", "Garcia", "Chen", "Patel", "Novak", "Okafor", "Keller", "Silva", "Brown", "Kim"]
CITIES = [
    ("Albany", "NY", "12207"),
    ("Buffalo", "NY", "14202"),
    ("Newark", "NJ", "07102"),
    ("Hartford", "CT", "06103"),
    ("Boston", "MA", "02110"),
    ("Scranton", "PA", "18503"),
]
SHOP_ID = 68_713_398_561
LOCATION_ID = 74_519_257_377
B62 = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
SOURCES = {  # file -> the ordertrail source that reads it (see ordertrail.toml)
    "orders": "shopify-orders",
    "cancelled": "shopify-cancellations",
    "fulfillments": "shopify-fulfillments",
    "fulfillment_events": "shopify-pickup",
    "stripe": "stripe",
    "easypost": "easypost",
}


@dataclass
class Line:
    id: int
    product_id: int
    variant_id: int
    title: str
    variant: str
    sku: str
    price: int  # cents
    quantity: int
    grams: int


@dataclass
class Order:
    index: int
    id: int
    number: int
    created: datetime  # UTC
    email: str
    first: str
    last: str
    delivery: str  # standard | express | local_pickup
    lines: list[Line]
    problem: str | None = None
    cancelled: bool = False
    split: bool = False

    @property
    def oid(self) -> str:
        return str(self.id)

    @property
    def name(self) -> str:
        return f"#{self.number}"

    @property
    def subtotal(self) -> int:
        return sum(li.price * li.quantity for li in self.lines)

    @property
    def shipping(self) -> int:
        return {"standard": 599, "express": 1499, "local_pickup": 0}[self.delivery]

    @property
    def tax(self) -> int:
        return round(self.subtotal * 0.08)

    @property
    def total(self) -> int:
        return self.subtotal + self.shipping + self.tax


@dataclass
class Dataset:
    """The generated files, what ordertrail must make of them, and the ground truth."""

    seed: int
    files: dict[str, list[dict[str, Any]]]  # relative path -> records in file order
    events: list[dict[str, Any]]  # the events the mapping must produce (oracle input)
    filtered: dict[str, int]  # source -> records its `where` must filter
    expected: list[Expected]
    problem_orders: dict[str, str]  # order id -> problem
    clean_orders: list[str]
    trace: tuple[str, str, str]  # (tracking number, its order, the hop it still misses)
    as_of: int = us(AS_OF)
    as_of_iso: str = iso_z(AS_OF)
    config: Path = CONFIG
    orders: list[Order] = field(default_factory=list)

    def write(self, root: Path) -> Path:
        """Write the files and the config under ``root``; return the config's path."""
        for rel, records in self.files.items():
            write_jsonl(root / rel, records)
        cfg = root / "ordertrail.toml"
        cfg.write_text(self.config.read_text(encoding="utf-8"), encoding="utf-8")
        return cfg


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _shop_time(t: datetime) -> str:
    """Shopify's format: the shop's local time with its offset, to the second."""
    return t.astimezone(SHOP_TZ).replace(microsecond=0).isoformat()


def _epoch(t: datetime) -> int:
    return int(t.timestamp())


def _price_set(cents: int) -> dict[str, Any]:
    m = {"amount": _money(cents), "currency_code": "USD"}
    return {"shop_money": m, "presentment_money": dict(m)}


class _Gen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.rows: dict[str, list[tuple[int, int, dict[str, Any]]]] = defaultdict(list)
        self.events: list[dict[str, Any]] = []
        self.filtered: Counter[str] = Counter()
        self.seq = 0
        self._ids = {
            "order": 5_812_347_000_000,
            "line": 13_904_218_000_000,
            "fulfillment": 4_718_226_000_000,
            "fevent": 3_102_554_000_000,
            "product": 8_102_993_000_000,
            "customer": 7_231_004_000_000,
            "shipping_line": 4_390_118_000_000,
        }
        self.products = {
            sku: (self._next("product"), self._next("product") * 5 + 3)
            for _, _, sku, _, _ in CATALOG
        }
        self.customers: dict[str, int] = {}
        self.fulfillment_ids: dict[tuple[int, str | None], int] = {}
        self.charges: dict[str, dict[str, Any]] = {}  # order id -> its (last) successful charge

    # -- ids ------------------------------------------------------------------------------------
    def _next(self, kind: str) -> int:
        self._ids[kind] += self.rng.randint(1_000, 90_000)
        return self._ids[kind]

    def stripe_id(self, prefix: str, n: int = 22, mark: str = "3P") -> str:
        return f"{prefix}_{mark}" + "".join(self.rng.choice(B62) for _ in range(n))

    def hex_id(self, prefix: str) -> str:
        return f"{prefix}_" + "".join(self.rng.choice(HEX) for _ in range(32))

    def tracking(self, carrier: str) -> str:
        if carrier == "UPS":
            alnum = string.ascii_uppercase + string.digits
            return (
                "1Z"
                + "".join(self.rng.choice(alnum) for _ in range(6))
                + "03"
                + "".join(self.rng.choice(string.digits) for _ in range(8))
            )
        return "9400111" + "".join(self.rng.choice(string.digits) for _ in range(15))

    def between(self, t: datetime, lo: timedelta, hi: timedelta) -> datetime:
        span = (hi - lo).total_seconds()
        return t + lo + timedelta(seconds=round(self.rng.uniform(0, span)))

    # -- output ---------------------------------------------------------------------------------
    def put(
        self, file: str, delivered: datetime, record: dict[str, Any], mapped: dict[str, Any] | None
    ) -> None:
        """One webhook body into ``file`` (received at ``delivered``), and what its source must
        make of it: ``mapped`` (the event) or None (filtered by the source's ``where``)."""
        self.seq += 1
        self.rows[FILES[file]].append((us(delivered), self.seq, record))
        if mapped is None:
            self.filtered[SOURCES[file]] += 1
        else:
            mapped["source"] = SOURCES[file]
            self.events.append(mapped)

    @staticmethod
    def ev(
        event_id: str,
        order_id: str,
        hop: str,
        at: datetime,
        *,
        phase: str = "completed",
        objects: dict[str, list[str]] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return {
            "event_id": event_id,
            "order_id": order_id,
            "hop": hop,
            "phase": phase,
            "occurred_at": us(at.replace(microsecond=0)),
            "objects": {k: v for k, v in (objects or {}).items() if v},
            "attributes": dict(attributes or {}),
        }

    def files(self) -> dict[str, list[dict[str, Any]]]:
        return {
            rel: [r for _, _, r in sorted(rows, key=lambda x: (x[0], x[1]))]
            for rel, rows in sorted(self.rows.items())
        }

    # -- the shop -------------------------------------------------------------------------------
    def order(self, index: int, created: datetime, problem: str | None) -> Order:
        rng = self.rng
        first, last = rng.choice(FIRST), rng.choice(LAST)
        email = f"{first.lower()}.{last.lower()}{index % 97}@example.com"
        delivery = rng.choices(["standard", "express", "local_pickup"], [70, 12, 18])[0]
        n = rng.choices([1, 2, 3, 4], [45, 30, 17, 8])[0]
        if problem in ("partial_fulfilled", "split_parcel_lost"):
            n = max(n, 2)
        if problem in ("partial_fulfilled", "split_parcel_lost", "never_shipped"):
            delivery = "standard" if delivery == "local_pickup" else delivery
        if problem == "pickup_never_ready":
            delivery = "local_pickup"
        lines = []
        for title, variant, sku, price, grams in rng.sample(CATALOG, n):
            pid, vid = self.products[sku]
            lines.append(
                Line(
                    self._next("line"),
                    pid,
                    vid,
                    title,
                    variant,
                    sku,
                    price,
                    rng.choices([1, 2], [85, 15])[0],
                    grams,
                )
            )
        return Order(
            index,
            self._next("order"),
            1001 + index,
            created,
            email,
            first,
            last,
            delivery,
            lines,
            problem,
        )

    def order_body(self, o: Order, *, cancelled_at: datetime | None = None) -> dict[str, Any]:
        rng = self.rng
        city, state, zip_ = CITIES[o.index % len(CITIES)]
        address = {
            "first_name": o.first,
            "last_name": o.last,
            "name": f"{o.first} {o.last}",
            "address1": f"{100 + o.index} Main St",
            "address2": None,
            "city": city,
            "province": state,
            "province_code": state,
            "zip": zip_,
            "country": "United States",
            "country_code": "US",
            "phone": None,
            "company": None,
        }
        cust_id = self.customers.setdefault(o.email, self._next("customer"))
        created = _shop_time(o.created)
        code, title = {
            "standard": ("standard", "Standard Shipping"),
            "express": ("express", "Express (1-2 business days)"),
            "local_pickup": ("local_pickup", "Pickup at Main Street store"),
        }[o.delivery]
        body: dict[str, Any] = {
            "id": o.id,
            "admin_graphql_api_id": f"gid://shopify/Order/{o.id}",
            "app_id": 580111,
            "browser_ip": f"73.{o.index % 250}.{(o.index * 7) % 250}.{(o.index * 13) % 250}",
            "buyer_accepts_marketing": o.index % 3 == 0,
            "cancel_reason": "customer" if cancelled_at else None,
            "cancelled_at": _shop_time(cancelled_at) if cancelled_at else None,
            "checkout_token": "".join(rng.choice(HEX) for _ in range(32)),
            "closed_at": _shop_time(cancelled_at) if cancelled_at else None,
            "confirmation_number": "".join(rng.choice(string.ascii_uppercase) for _ in range(9)),
            "confirmed": True,
            "contact_email": o.email,
            "created_at": created,
            "currency": "USD",
            "current_subtotal_price": _money(o.subtotal),
            "current_total_price": _money(o.total),
            "current_total_tax": _money(o.tax),
            "customer_locale": "en-US",
            "email": o.email,
            "estimated_taxes": False,
            "financial_status": "refunded" if cancelled_at else "pending",
            "fulfillment_status": None,
            "landing_site": "/collections/trail",
            "name": o.name,
            "note": None,
            "number": o.number - 1000,
            "order_number": o.number,
            "payment_gateway_names": ["stripe"],
            "phone": None,
            "presentment_currency": "USD",
            "processed_at": created,
            "source_name": "web",
            "subtotal_price": _money(o.subtotal),
            "tags": "",
            "taxes_included": False,
            "test": False,
            "total_discounts": "0.00",
            "total_line_items_price": _money(o.subtotal),
            "total_price": _money(o.total),
            "total_price_set": _price_set(o.total),
            "total_shipping_price_set": _price_set(o.shipping),
            "total_tax": _money(o.tax),
            "total_weight": sum(li.grams * li.quantity for li in o.lines),
            "updated_at": _shop_time(cancelled_at) if cancelled_at else created,
            "billing_address": address,
            "customer": {
                "id": cust_id,
                "email": o.email,
                "first_name": o.first,
                "last_name": o.last,
                "state": "enabled",
                "verified_email": True,
                "admin_graphql_api_id": f"gid://shopify/Customer/{cust_id}",
            },
            "discount_codes": [],
            "fulfillments": [],
            "line_items": [self.line_body(li) for li in o.lines],
            "refunds": [],
            "shipping_address": None if o.delivery == "local_pickup" else address,
            "shipping_lines": [
                {
                    "id": self._next("shipping_line"),
                    "carrier_identifier": None,
                    "code": code,
                    "discounted_price": _money(o.shipping),
                    "price": _money(o.shipping),
                    "price_set": _price_set(o.shipping),
                    "source": "shopify",
                    "title": title,
                    "tax_lines": [],
                    "discount_allocations": [],
                }
            ],
        }
        return body

    @staticmethod
    def line_body(li: Line, fulfilled: bool = False) -> dict[str, Any]:
        tax = round(li.price * li.quantity * 0.08)
        return {
            "id": li.id,
            "admin_graphql_api_id": f"gid://shopify/LineItem/{li.id}",
            "fulfillable_quantity": 0 if fulfilled else li.quantity,
            "fulfillment_service": "manual",
            "fulfillment_status": "fulfilled" if fulfilled else None,
            "gift_card": False,
            "grams": li.grams,
            "name": f"{li.title} - {li.variant}",
            "price": _money(li.price),
            "price_set": _price_set(li.price),
            "product_exists": True,
            "product_id": li.product_id,
            "properties": [],
            "quantity": li.quantity,
            "requires_shipping": True,
            "sku": li.sku,
            "taxable": True,
            "title": li.title,
            "total_discount": "0.00",
            "variant_id": li.variant_id,
            "variant_title": li.variant,
            "vendor": "Trailhead Supply Co.",
            "tax_lines": [
                {
                    "price": _money(tax),
                    "rate": 0.08,
                    "title": "NY State Tax",
                    "price_set": _price_set(tax),
                }
            ],
            "duties": [],
            "discount_allocations": [],
        }

    def placed(self, o: Order) -> None:
        body = self.order_body(o)
        mapped = self.ev(
            raw_id(body),
            o.oid,
            "placed",
            o.created,
            objects={"item": [str(li.id) for li in o.lines]},
            attributes={
                "amount": body["total_price"],
                "currency": "USD",
                "delivery": body["shipping_lines"][0]["code"],
                "email": o.email,
            },
        )
        self.put("orders", o.created + timedelta(seconds=2), body, mapped)
        if self.rng.random() < 0.05:  # Shopify retried the webhook: the same body again
            self.put("orders", o.created + timedelta(minutes=5), body, dict(mapped))

    def cancel(self, o: Order, at: datetime) -> None:
        body = self.order_body(o, cancelled_at=at)
        self.put(
            "cancelled",
            at + timedelta(seconds=3),
            body,
            self.ev(raw_id(body), o.oid, "cancelled", at),
        )

    # -- Stripe ---------------------------------------------------------------------------------
    def stripe_event(
        self, etype: str, obj: dict[str, Any], at: datetime, previous: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        data: dict[str, Any] = {"object": obj}
        if previous is not None:
            data["previous_attributes"] = previous
        return {
            "id": self.stripe_id("evt"),
            "object": "event",
            "api_version": "2023-10-16",
            "created": _epoch(at),
            "data": data,
            "livemode": True,
            "pending_webhooks": 1,
            "request": {
                "id": "req_" + "".join(self.rng.choice(B62) for _ in range(14)),
                "idempotency_key": f"{self.rng.getrandbits(64):016x}",
            },
            "type": etype,
        }

    def intent(
        self,
        order_id: str,
        name: str,
        email: str,
        cents: int,
        currency: str,
        created: datetime,
        manual: bool = False,
    ) -> dict[str, Any]:
        pi = self.stripe_id("pi")
        return {
            "id": pi,
            "object": "payment_intent",
            "amount": cents,
            "amount_capturable": 0,
            "amount_details": {"tip": {}},
            "amount_received": 0,
            "application": None,
            "application_fee_amount": None,
            "automatic_payment_methods": None,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": "manual" if manual else "automatic",
            "client_secret": f"{pi}_secret_" + "".join(self.rng.choice(B62) for _ in range(25)),
            "confirmation_method": "automatic",
            "created": _epoch(created),
            "currency": currency,
            "customer": "cus_" + "".join(self.rng.choice(B62) for _ in range(14)),
            "description": f"Trailhead Supply order {name}",
            "invoice": None,
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": True,
            "metadata": {"order_id": order_id, "order_name": name},
            "next_action": None,
            "on_behalf_of": None,
            "payment_method": None,
            "payment_method_options": {
                "card": {
                    "installments": None,
                    "mandate_options": None,
                    "network": None,
                    "request_three_d_secure": "automatic",
                }
            },
            "payment_method_types": ["card"],
            "processing": None,
            "receipt_email": email,
            "review": None,
            "setup_future_usage": None,
            "shipping": None,
            "source": None,
            "statement_descriptor": None,
            "statement_descriptor_suffix": None,
            "status": "requires_payment_method",
            "transfer_data": None,
            "transfer_group": None,
        }

    def charge(
        self, pi: dict[str, Any], at: datetime, *, status: str = "succeeded", captured: bool = True
    ) -> dict[str, Any]:
        ch = self.stripe_id("ch")
        ok = status == "succeeded"
        return {
            "id": ch,
            "object": "charge",
            "amount": pi["amount"],
            "amount_captured": pi["amount"] if ok and captured else 0,
            "amount_refunded": 0,
            "balance_transaction": self.stripe_id("txn") if ok and captured else None,
            "billing_details": {
                "address": {"postal_code": "12207", "country": "US"},
                "email": pi["receipt_email"],
                "name": None,
                "phone": None,
            },
            "captured": ok and captured,
            "created": _epoch(at),
            "currency": pi["currency"],
            "customer": pi["customer"],
            "description": pi["description"],
            "failure_code": None if ok else "card_declined",
            "failure_message": None if ok else "Your card has insufficient funds.",
            "livemode": True,
            "metadata": {},
            "outcome": {
                "network_status": "approved_by_network" if ok else "declined_by_network",
                "reason": None if ok else "insufficient_funds",
                "risk_level": "normal",
                "risk_score": self.rng.randint(5, 60),
                "seller_message": "Payment complete."
                if ok
                else "The bank returned the decline code `insufficient_funds`.",
                "type": "authorized" if ok else "issuer_declined",
            },
            "paid": ok,
            "payment_intent": pi["id"],
            "payment_method": pi["payment_method"],
            "payment_method_details": {
                "card": {
                    "brand": "visa",
                    "country": "US",
                    "exp_month": 11,
                    "exp_year": 2027,
                    "funding": "credit",
                    "last4": "4242",
                },
                "type": "card",
            },
            "receipt_email": pi["receipt_email"],
            "receipt_url": f"https://pay.stripe.com/receipts/payment/{ch[3:]}",
            "refunded": False,
            "refunds": {
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": f"/v1/charges/{ch}/refunds",
            },
            "status": status,
        }

    def pay(
        self,
        o_id: str,
        name: str,
        email: str,
        cents: int,
        currency: str,
        t0: datetime,
        *,
        fail_first: bool = False,
        fail_only: bool = False,
        second_success: bool = False,
        redeliver: bool = False,
    ) -> datetime:
        """One payment intent, created after ``t0``: optionally a declined attempt first (or
        only), then success with its charge. Returns the success (or failure) time."""
        rng = self.rng
        created = self.between(t0, timedelta(seconds=20), timedelta(minutes=3))
        pi = self.intent(o_id, name, email, cents, currency, created)
        pi["payment_method"] = "pm_1P" + "".join(rng.choice(B62) for _ in range(22))
        self.put(
            "stripe", created, self.stripe_event("payment_intent.created", dict(pi), created), None
        )
        t = created
        if fail_first or fail_only:
            t = self.between(t, timedelta(seconds=8), timedelta(seconds=50))
            ch = self.charge(pi, t, status="failed")
            failed = dict(
                pi,
                status="requires_payment_method",
                latest_charge=ch["id"],
                last_payment_error={
                    "charge": ch["id"],
                    "code": "card_declined",
                    "decline_code": "insufficient_funds",
                    "doc_url": "https://stripe.com/docs/error-codes/card-declined",
                    "message": "Your card has insufficient funds.",
                    "type": "card_error",
                },
            )
            self.put("stripe", t, self.stripe_event("charge.failed", ch, t), None)
            body = self.stripe_event("payment_intent.payment_failed", failed, t)
            self.put(
                "stripe",
                t + timedelta(seconds=1),
                body,
                self.ev(
                    body["id"], o_id, "payment", t, phase="failed", attributes=self.pay_attrs(pi)
                ),
            )
            if fail_only:
                return t
            t = self.between(t, timedelta(minutes=2), timedelta(minutes=20))  # a second card
        else:
            t = self.between(t, timedelta(seconds=5), timedelta(minutes=12))
        ch = self.charge(pi, t)
        self.charges[o_id] = ch
        ok = dict(pi, status="succeeded", amount_received=cents, latest_charge=ch["id"])
        self.put("stripe", t, self.stripe_event("charge.succeeded", ch, t), None)
        body = self.stripe_event("payment_intent.succeeded", ok, t)
        mapped = self.ev(body["id"], o_id, "payment", t, attributes=self.pay_attrs(pi))
        self.put("stripe", t + timedelta(seconds=1), body, mapped)
        if second_success:  # a second, distinct success event for the same intent
            t2 = t + timedelta(seconds=rng.randint(1, 4))
            body2 = self.stripe_event("payment_intent.succeeded", ok, t2)
            self.put(
                "stripe",
                t2 + timedelta(seconds=1),
                body2,
                self.ev(body2["id"], o_id, "payment", t2, attributes=self.pay_attrs(pi)),
            )
        if redeliver:  # Stripe retried the webhook: the same event id, later
            again = dict(body, pending_webhooks=0)
            self.put("stripe", t + timedelta(hours=rng.randint(1, 3)), again, dict(mapped))
        return t

    @staticmethod
    def pay_attrs(pi: dict[str, Any]) -> dict[str, Any]:
        """What the stripe source stores: amount x scale 0.01, currency upper-cased."""
        return {
            "amount": pi["amount"] * 0.01,
            "currency": pi["currency"].upper(),
            "payment_ref": pi["id"],
        }

    def never_captured(self, o: Order) -> None:
        """An authorisation (manual capture) that was never captured and expired."""
        created = self.between(o.created, timedelta(seconds=20), timedelta(minutes=3))
        pi = self.intent(o.oid, o.name, o.email, o.total, "usd", created, manual=True)
        pi["payment_method"] = "pm_1P" + "".join(self.rng.choice(B62) for _ in range(22))
        self.put(
            "stripe", created, self.stripe_event("payment_intent.created", dict(pi), created), None
        )
        t = self.between(created, timedelta(seconds=10), timedelta(minutes=2))
        ch = self.charge(pi, t, captured=False)
        held = dict(
            pi, status="requires_capture", amount_capturable=o.total, latest_charge=ch["id"]
        )
        self.put("stripe", t, self.stripe_event("charge.succeeded", ch, t), None)
        self.put(
            "stripe",
            t,
            self.stripe_event(
                "payment_intent.amount_capturable_updated", held, t, {"amount_capturable": 0}
            ),
            None,
        )
        expired = t + timedelta(days=7)
        self.put(
            "stripe",
            expired,
            self.stripe_event("charge.expired", dict(ch, status="failed"), expired),
            None,
        )
        gone = dict(
            held,
            status="canceled",
            amount_capturable=0,
            canceled_at=_epoch(expired),
            cancellation_reason="automatic",
        )
        self.put(
            "stripe", expired, self.stripe_event("payment_intent.canceled", gone, expired), None
        )

    def refund(self, o: Order, at: datetime) -> None:
        ch = dict(self.charges[o.oid], amount_refunded=o.total, refunded=True)
        self.put(
            "stripe", at, self.stripe_event("charge.refunded", ch, at, {"amount_refunded": 0}), None
        )

    # -- fulfilment and carriers ----------------------------------------------------------------
    def fulfill(
        self, o: Order, lines: list[Line], at: datetime, seq: int, carrier: str | None
    ) -> str | None:
        fid = self._next("fulfillment")
        tracking = self.tracking(carrier) if carrier else None
        url = None
        if tracking:
            url = (
                f"https://www.ups.com/track?tracknum={tracking}"
                if carrier == "UPS"
                else f"https://tools.usps.com/go/TrackConfirmAction?tLabels={tracking}"
            )
        body = {
            "id": fid,
            "admin_graphql_api_id": f"gid://shopify/Fulfillment/{fid}",
            "created_at": _shop_time(at),
            "location_id": LOCATION_ID,
            "name": f"{o.name}.{seq}",
            "order_id": o.id,
            "origin_address": {},
            "receipt": {},
            "service": "manual",
            "shipment_status": None,
            "status": "success",
            "tracking_company": carrier,
            "tracking_number": tracking,
            "tracking_numbers": [tracking] if tracking else [],
            "tracking_url": url,
            "tracking_urls": [url] if url else [],
            "updated_at": _shop_time(at),
            "line_items": [self.line_body(li, fulfilled=True) for li in lines],
        }
        objects = {"item": [str(li.id) for li in lines], "shipment": [tracking] if tracking else []}
        self.put(
            "fulfillments",
            at + timedelta(seconds=4),
            body,
            self.ev(str(fid), o.oid, "fulfilled", at, objects=objects),
        )
        self.fulfillment_ids[(o.id, tracking)] = fid
        return tracking

    def fulfillment_event(
        self, o: Order, fid: int, status: str, at: datetime, message: str | None = None
    ) -> dict[str, Any]:
        feid = self._next("fevent")
        return {
            "id": feid,
            "fulfillment_id": fid,
            "status": status,
            "message": message,
            "happened_at": _shop_time(at),
            "city": None,
            "province": None,
            "country": None,
            "zip": None,
            "address1": None,
            "latitude": None,
            "longitude": None,
            "shop_id": SHOP_ID,
            "created_at": _shop_time(at),
            "updated_at": _shop_time(at),
            "estimated_delivery_at": None,
            "order_id": o.id,
            "admin_graphql_api_id": f"gid://shopify/FulfillmentEvent/{feid}",
        }

    def ready_for_pickup(self, o: Order, fid: int, at: datetime) -> None:
        body = self.fulfillment_event(
            o,
            fid,
            "ready_for_pickup",
            at,
            "Your order is ready for pickup at our Main Street store.",
        )
        self.put(
            "fulfillment_events",
            at + timedelta(seconds=3),
            body,
            self.ev(str(body["id"]), o.oid, "ready_for_pickup", at),
        )
        if self.rng.random() < 0.5:
            later = self.between(at, timedelta(hours=2), timedelta(days=2))
            self.put(
                "fulfillment_events",
                later,
                self.fulfillment_event(o, fid, "picked_up", later),
                None,
            )

    def parcel(
        self,
        o: Order | None,
        tracking: str,
        carrier: str,
        fulfilled: datetime,
        *,
        express: bool,
        scanned: bool = True,
        delivered: bool = True,
        mirror: bool = False,
    ) -> None:
        """EasyPost tracker events for one tracking code (``o`` None: no order knows it)."""
        rng = self.rng
        trk = self.hex_id("trk")
        created = self.between(fulfilled, -timedelta(minutes=40), -timedelta(minutes=10))
        details: list[dict[str, Any]] = []
        where = CITIES[rng.randrange(len(CITIES))]

        def detail(status: str, sub: str, msg: str, at: datetime) -> None:
            details.append(
                {
                    "object": "TrackingDetail",
                    "message": msg,
                    "description": "",
                    "status": status,
                    "status_detail": sub,
                    "datetime": iso_z(at),
                    "source": carrier,
                    "carrier_code": "",
                    "tracking_location": {
                        "object": "TrackingLocation",
                        "city": where[0],
                        "state": where[1],
                        "country": "US",
                        "zip": where[2],
                    },
                }
            )

        def event(status: str, sub: str, at: datetime, previous: str | None) -> dict[str, Any]:
            tracker = {
                "id": trk,
                "object": "Tracker",
                "mode": "production",
                "tracking_code": tracking,
                "status": status,
                "status_detail": sub,
                "created_at": iso_z(created),
                "updated_at": iso_z(at),
                "signed_by": "M SMITH" if status == "delivered" else None,
                "weight": None,
                "est_delivery_date": iso_z(fulfilled + timedelta(days=3)),
                "shipment_id": None,
                "carrier": carrier,
                "tracking_details": [dict(d) for d in details],
                "carrier_detail": {
                    "object": "CarrierDetail",
                    "service": "Ground Advantage" if carrier == "USPS" else "UPS Ground",
                    "container_type": None,
                    "est_delivery_date_local": None,
                    "origin_location": "ALBANY NY, 12207",
                    "destination_location": f"{where[0].upper()} {where[1]}, {where[2]}",
                },
                "public_url": "https://track.easypost.com/djE6dHJrXz" + trk[4:20],
                "fees": [],
                "finalized": status == "delivered",
            }
            return {
                "id": self.hex_id("evt"),
                "object": "Event",
                "mode": "production",
                "description": "tracker.created" if previous is None else "tracker.updated",
                "previous_attributes": {} if previous is None else {"status": previous},
                "created_at": iso_z(at),
                "updated_at": iso_z(at),
                "pending_urls": [],
                "completed_urls": [],
                "user_id": "user_0c8e5f3a1b2d4c6e8f9a0b1c2d3e4f50",
                "status": "completed",
                "result": tracker,
            }

        detail(
            "pre_transit",
            "label_created",
            "Shipping Label Created, USPS Awaiting Item"
            if carrier == "USPS"
            else "Shipper created a label",
            created,
        )
        self.put("easypost", created, event("pre_transit", "label_created", created, None), None)
        if not scanned:
            return
        t = self.between(fulfilled, timedelta(hours=3), timedelta(hours=20))
        detail("in_transit", "arrived_at_facility", "Arrived at Regional Facility", t)
        body = event("in_transit", "arrived_at_facility", t, "pre_transit")
        self.put(
            "easypost",
            t + timedelta(seconds=rng.randint(5, 90)),
            body,
            self.ev(body["id"], "", "shipped", t, objects={"shipment": [tracking]}),
        )
        mirror_times = [("in_transit", t)]
        if rng.random() < 0.6:
            t2 = self.between(t, timedelta(hours=4), timedelta(hours=12))
            detail("in_transit", "departed_facility", "Departed Regional Facility", t2)
            body = event("in_transit", "departed_facility", t2, "in_transit")
            self.put(
                "easypost",
                t2 + timedelta(seconds=rng.randint(5, 90)),
                body,
                self.ev(body["id"], "", "shipped", t2, objects={"shipment": [tracking]}),
            )
        if not delivered:
            return
        lo, hi = (
            (timedelta(hours=14), timedelta(hours=28))
            if express
            else (timedelta(hours=36), timedelta(hours=84))
        )
        done = self.between(t, lo, hi)
        out = done - timedelta(hours=rng.randint(2, 6))
        detail("out_for_delivery", "out_for_delivery", "Out for Delivery", out)
        self.put(
            "easypost", out, event("out_for_delivery", "out_for_delivery", out, "in_transit"), None
        )
        detail("delivered", "arrived_at_destination", "Delivered, In/At Mailbox", done)
        body = event("delivered", "arrived_at_destination", done, "out_for_delivery")
        self.put(
            "easypost",
            done + timedelta(seconds=rng.randint(5, 90)),
            body,
            self.ev(body["id"], "", "delivered", done, objects={"shipment": [tracking]}),
        )
        mirror_times.append(("delivered", done))
        if mirror and o is not None:  # Shopify's own carrier tracking mirrors the statuses
            fid = self.fulfillment_ids[(o.id, tracking)]
            for status, at in mirror_times:
                when = at + timedelta(minutes=rng.randint(5, 40))
                self.put(
                    "fulfillment_events", when, self.fulfillment_event(o, fid, status, when), None
                )


def generate(seed: int = 20240501) -> Dataset:
    """The whole data set for ``seed`` (deterministic: the same seed gives the same bytes)."""
    g = _Gen(seed)
    rng = g.rng
    span = DAYS * 86_400
    times = sorted(
        START.astimezone(UTC) + timedelta(seconds=rng.randrange(span)) for _ in range(N_ORDERS)
    )

    plan: dict[int, str] = {}
    slots = rng.sample(range(*PROBLEM_RANGE), sum(n for _, n in PROBLEMS))
    it = iter(slots)
    for problem, n in PROBLEMS:
        for _ in range(n):
            plan[next(it)] = problem

    orders = [g.order(i, t, plan.get(i)) for i, t in enumerate(times)]
    expected: list[Expected] = []
    trace: tuple[str, str, str] | None = None
    lost_unscanned = 0  # one of the lost split parcels is never scanned at all

    for o in orders:
        p = o.problem
        g.placed(o)
        items = [f"item:{li.id}" for li in o.lines]
        # -- payment --------------------------------------------------------------------------
        paid_at: datetime | None
        if p == "never_captured":
            g.never_captured(o)
            expected.append(Expected(o.oid, "vanished", "payment", "placed", problem=p))
            continue  # the warehouse waits for the money: nothing follows
        if p == "payment_failed":
            g.pay(o.oid, o.name, o.email, o.total, "usd", o.created, fail_only=True)
            expected.append(Expected(o.oid, "failed", "payment", None, problem=p))
            continue
        if p == "fulfilled_unpaid":
            paid_at = None
            if rng.random() < 0.5:  # a checkout abandoned at the payment form
                t = o.created + timedelta(minutes=1)
                pi = g.intent(o.oid, o.name, o.email, o.total, "usd", t)
                g.put("stripe", t, g.stripe_event("payment_intent.created", pi, t), None)
            expected.append(Expected(o.oid, "skipped", "payment", None, problem=p))
        else:
            cents = int(o.total // 100) if p == "amount_in_dollars" else o.total
            currency = "eur" if p == "wrong_currency" else "usd"
            paid_at = g.pay(
                o.oid,
                o.name,
                o.email,
                cents,
                currency,
                o.created,
                fail_first=p is None and rng.random() < 0.06,
                second_success=p is None and rng.random() < 0.15,
                redeliver=rng.random() < 0.10,
            )
            if p == "amount_in_dollars":
                expected.append(
                    Expected(o.oid, "mismatch", "payment", "placed", field="amount", problem=p)
                )
            if p == "wrong_currency":
                expected.append(
                    Expected(o.oid, "mismatch", "payment", "placed", field="currency", problem=p)
                )
            if p == "double_charge":  # the customer paid again: a second, distinct intent
                g.pay(
                    o.oid,
                    o.name,
                    o.email,
                    o.total,
                    "usd",
                    paid_at + timedelta(minutes=rng.randint(1, 4)),
                )
                expected.append(Expected(o.oid, "duplicate", "payment", None, problem=p))
        # -- cancelled by the customer (clean: the closing hop ends every expectation) -------
        if p is None and rng.random() < 0.04:
            assert paid_at is not None
            o.cancelled = True
            at = g.between(paid_at, timedelta(hours=1), timedelta(hours=20))
            g.cancel(o, at)
            g.refund(o, at + timedelta(minutes=rng.randint(1, 10)))
            continue
        # -- fulfilment -----------------------------------------------------------------------
        base = paid_at or o.created + timedelta(minutes=20)
        if p == "never_fulfilled":
            expected.append(
                Expected(o.oid, "vanished", "fulfilled", "payment", tuple(items), problem=p)
            )
            continue
        f1 = g.between(base, timedelta(hours=2), timedelta(hours=29))
        if o.delivery == "local_pickup":
            g.fulfill(o, o.lines, f1, 1, None)
            fid = g.fulfillment_ids[(o.id, None)]
            if p == "pickup_never_ready":
                expected.append(
                    Expected(o.oid, "vanished", "ready_for_pickup", "fulfilled", problem=p)
                )
            else:
                g.ready_for_pickup(o, fid, g.between(f1, timedelta(minutes=10), timedelta(hours=6)))
            continue
        carrier = rng.choices(["USPS", "UPS"], [70, 30])[0]
        express = o.delivery == "express"
        mirror = rng.random() < 0.4
        if p == "partial_fulfilled":  # the last line item is never fulfilled
            t1 = g.fulfill(o, o.lines[:-1], f1, 1, carrier)
            assert t1
            g.parcel(o, t1, carrier, f1, express=express, mirror=mirror)
            expected.append(
                Expected(
                    o.oid,
                    "vanished",
                    "fulfilled",
                    "payment",
                    (f"item:{o.lines[-1].id}",),
                    problem=p,
                )
            )
            continue
        o.split = p == "split_parcel_lost" or (len(o.lines) >= 2 and rng.random() < 0.25)
        if o.split:
            k = rng.randint(1, len(o.lines) - 1)
            f2 = g.between(f1, timedelta(hours=12), timedelta(hours=29))
            t1 = g.fulfill(o, o.lines[:k], f1, 1, carrier)
            t2 = g.fulfill(o, o.lines[k:], f2, 2, carrier)
            assert t1 and t2
            g.parcel(o, t1, carrier, f1, express=express, mirror=mirror)
            if p == "split_parcel_lost":
                scanned = lost_unscanned > 0
                lost_unscanned += 1
                g.parcel(o, t2, carrier, f2, express=express, scanned=scanned, delivered=False)
                expected.append(
                    Expected(
                        o.oid, "vanished", "delivered", "shipped", (f"shipment:{t2}",), problem=p
                    )
                )
                if scanned and trace is None:
                    trace = (t2, o.oid, "delivered")
            else:
                g.parcel(o, t2, carrier, f2, express=express, mirror=mirror)
            continue
        t1 = g.fulfill(o, o.lines, f1, 1, carrier)
        assert t1
        if p == "never_shipped":  # a label was bought; the parcel was never handed over
            g.parcel(o, t1, carrier, f1, express=express, scanned=False)
            expected.append(Expected(o.oid, "vanished", "shipped", "fulfilled", problem=p))
            continue
        g.parcel(o, t1, carrier, f1, express=express, mirror=mirror)

    # -- things no order knows ---------------------------------------------------------------
    for i in range(UNLINKED_TRACKING):  # scans of a parcel someone else's store shipped
        carrier = ["USPS", "UPS"][i % 2]
        tracking = g.tracking(carrier)
        at = START.astimezone(UTC) + timedelta(days=2 + i, hours=5)
        g.parcel(None, tracking, carrier, at, express=False)
        expected.append(
            Expected(
                None,
                "orphan",
                "shipped",
                None,
                (f"shipment:{tracking}",),
                problem="unknown_tracking",
            )
        )
    for i in range(PAYMENTS_WITHOUT_ORDER):  # a payment for an order Shopify never sent
        ghost = str(g._next("order") + 77)
        at = START.astimezone(UTC) + timedelta(days=5 + i, hours=3)
        g.pay(ghost, "#0000", "ghost@example.com", 4200, "usd", at)
        expected.append(Expected(ghost, "orphan", "placed", None, problem="payment_no_order"))

    assert trace is not None
    problem_orders = {e.order_id: e.problem for e in expected if e.order_id}
    clean = [o.oid for o in orders if o.oid not in problem_orders]
    return Dataset(
        seed,
        g.files(),
        g.events,
        dict(g.filtered),
        expected,
        problem_orders,
        clean,
        trace,
        orders=orders,
    )
