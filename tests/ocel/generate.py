"""A seeded object-centric order log shaped like the OCEL 2.0 "Order Management" log.

The public log (ocel-standard.org, "Order Management"; Zenodo 10.5281/zenodo.8337464, by the
RWTH Aachen Chair of Process and Data Science, simulated with CPN Tools) has 21,008 events of 11
types over 10,840 objects of 6 types: ``orders``, ``items``, ``packages``, ``customers``,
``products`` and ``employees``. Customers place orders (``place order``) for products; sales staff
confirm them (``confirm order``), remind (``payment reminder``, every ~20 days) and book the payment
(``pay order``, often only after delivery); warehouse staff check stock (``item out of stock``,
``reorder item``), collect items (``pick item``) and put them into packages addressed to one
customer — a package may hold items of several orders of that customer, and an order may be spread
over several packages (``create package``); shipment staff send packages (``send package``, a
"shipper" and sometimes a "forwarder"), which may fail to arrive (``failed delivery``) before
they are delivered (``package delivered``). Ids look like ``o-990001``, ``i-880001``,
``p-660001``; event ids like ``send_p-660001``.

This module writes a smaller log of the same shape as JSON-OCEL 2.0 (``objectTypes``,
``eventTypes``, ``objects`` with time-stamped attributes and qualified object-to-object
``relationships``, ``events`` with qualified ``relationships`` ``[{objectId, qualifier}]``), and
flattens it the way tools and systems log it: one JSONL file per event type, grouped by the
department that records it, each line an event with its id, type, time and related object ids
by type (pm4py's extended-table columns ``ocel:eid``, ``ocel:activity``, ``ocel:timestamp``,
``ocel:type:<object type>``). Only the sales events name an order; the warehouse names items and
packages, the shipment department names packages.

Injected stuck orders (ground truth in ``generate()``):

- items never picked while the rest of the order ships;   vanished picked<-placed [item]
- an item out of stock that was never reordered;          vanished reordered<-out_of_stock [item]
                                                          and vanished picked<-placed [item]
- a package never sent (one mixing two orders' items);    vanished sent<-packed [package], for
                                                          every order with items in it
- a package never delivered while the order's others are; vanished delivered<-sent [package]
- a failed delivery never retried;                        failed delivered [package]
- an order never paid (reminders keep coming);            vanished paid<-confirmed
- an order paid but never confirmed;                      skipped confirmed
- a package sent and delivered that nobody created;       orphan (no order) sent [package]
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.realshapes.truth import Expected, iso_z, us, write_jsonl

CONFIG = Path(__file__).with_name("ordertrail.toml")
START = datetime(2023, 3, 1, tzinfo=UTC)
DAYS = 31  # orders are placed during March 2023
AS_OF = datetime(2023, 6, 15, tzinfo=UTC)
N_ORDERS = 120
PROBLEM_WINDOW = (timedelta(days=1), timedelta(days=14))  # problems: orders placed Mar 2-14
NEVER_PAID_BY = timedelta(days=6)  # never-paid orders are placed by Mar 7 (see late payers)
LATE_PAYERS_FROM = timedelta(days=19)  # some orders placed after Mar 20 pay after 2 reminders

EVENT_TYPES = [
    "place order",
    "confirm order",
    "payment reminder",
    "pay order",
    "item out of stock",
    "reorder item",
    "pick item",
    "create package",
    "send package",
    "failed delivery",
    "package delivered",
]
DEPARTMENT = {
    "place order": "sales",
    "confirm order": "sales",
    "payment reminder": "sales",
    "pay order": "sales",
    "item out of stock": "warehouse",
    "reorder item": "warehouse",
    "pick item": "warehouse",
    "create package": "warehouse",
    "send package": "shipment",
    "failed delivery": "shipment",
    "package delivered": "shipment",
}
EID_PREFIX = {
    "place order": "place",
    "confirm order": "confirm",
    "payment reminder": "reminder",
    "pay order": "pay",
    "item out of stock": "out_of_stock",
    "reorder item": "reorder",
    "pick item": "pick",
    "create package": "create",
    "send package": "send",
    "failed delivery": "failed_delivery",
    "package delivered": "package_delivered",
}
OBJECT_TYPES = ["customers", "employees", "items", "orders", "packages", "products"]
# what ordertrail.toml maps each event type to (hop, phase); the shipment source maps phases
HOPS = {
    "place order": "placed",
    "confirm order": "confirmed",
    "payment reminder": "reminded",
    "pay order": "paid",
    "item out of stock": "out_of_stock",
    "reorder item": "reordered",
    "pick item": "picked",
    "create package": "packed",
    "send package": "sent",
    "failed delivery": "delivered",
    "package delivered": "delivered",
}

CUSTOMERS = [
    "Nordwind Logistik GmbH",
    "Tagus Ceramics Lda",
    "Vistula Print Sp. z o.o.",
    "Saimaa Outdoor Oy",
    "Ebro Valley Foods SL",
    "Moselle Optics SARL",
    "Thames Fabrication Ltd",
    "Danubia Labs Kft.",
    "Adriatic Sails d.o.o.",
    "Rhone Robotics SAS",
    "Elbe Timber AG",
    "Shannon Audio Ltd",
    "Dnieper Glassworks",
    "Po Delta Textiles S.r.l.",
]
PRODUCTS = [
    ("Tablet 10", 399.0, 0.48),
    ("Tablet 12 Pro", 899.0, 0.68),
    ("Laptop 14", 1199.0, 1.4),
    ("Laptop 16 Pro", 2399.0, 2.1),
    ("Smartphone S", 599.0, 0.17),
    ("Smartphone Max", 1099.0, 0.22),
    ("Smartwatch", 349.0, 0.05),
    ("Wireless Earbuds", 179.0, 0.06),
    ("Bluetooth Speaker", 129.0, 0.6),
    ("Monitor 27", 449.0, 5.8),
    ("Docking Station", 229.0, 0.4),
    ("E-Reader", 139.0, 0.19),
    ("Game Console", 499.0, 3.2),
    ("Controller", 69.0, 0.28),
    ("Webcam HD", 89.0, 0.16),
    ("Router 6", 199.0, 0.7),
]
EMPLOYEES = {
    "Sales": [
        "Amara Quist",
        "Bruno Leclerc",
        "Chiara Valli",
        "Dmitri Orlov",
        "Esme Hartley",
        "Farid Haddad",
    ],
    "Warehousing": ["Greta Lind", "Hugo Brandt", "Ines Moura", "Jonas Weber", "Katya Petrova"],
    "Shipment": ["Lars Nygaard", "Maja Novak", "Nico Russo", "Oona Virtanen", "Pavel Dvorak"],
}


@dataclass
class Item:
    id: str
    order: str
    product: str
    price: float
    weight: float
    out_of_stock: datetime | None = None
    reorder: datetime | None = None
    pick: datetime | None = None
    picker: str = ""
    package: str | None = None


@dataclass
class Order:
    id: str
    customer: str
    placed: datetime
    items: list[Item]
    rep: str
    confirm: datetime | None = None
    pay: datetime | None = None
    reminders: list[datetime] = field(default_factory=list)
    problem: str | None = None


@dataclass
class Package:
    id: str
    customer: str
    items: list[Item]
    created: datetime
    sent: datetime | None = None
    failed: list[datetime] = field(default_factory=list)
    delivered: datetime | None = None
    packer: str = ""
    shippers: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def orders(self) -> list[str]:
        return sorted({i.order for i in self.items})


@dataclass
class Log:
    """The generated log, its flattened files, what ordertrail must make of them, the truth."""

    seed: int
    ocel: dict[str, Any]  # the JSON-OCEL 2.0 document
    files: dict[str, list[dict[str, Any]]]  # relative path -> flattened records, in time order
    events: list[dict[str, Any]]  # the events the mapping must produce (oracle input)
    expected: list[Expected]
    stuck_orders: dict[str, str]  # order id -> problem
    clean_orders: list[str]
    mixed_package: tuple[str, list[str]]  # a delivered package holding several orders' items
    as_of: int = us(AS_OF)
    as_of_iso: str = iso_z(AS_OF)
    config: Path = CONFIG

    def write(self, root: Path) -> Path:
        """Write the OCEL file, the flattened files and the config; return the config's path."""
        (root / "ocel").mkdir(parents=True, exist_ok=True)
        (root / "ocel" / "order-management.json").write_text(
            __import__("json").dumps(self.ocel, indent=1), encoding="utf-8"
        )
        for rel, records in self.files.items():
            write_jsonl(root / rel, records)
        cfg = root / "ordertrail.toml"
        cfg.write_text(self.config.read_text(encoding="utf-8"), encoding="utf-8")
        return cfg


def _attr(name: str, value: Any) -> dict[str, Any]:
    """An object attribute value, valid from the beginning of time (OCEL 2.0)."""
    return {"name": name, "time": "1970-01-01T00:00:00Z", "value": value}


def _rel(object_id: str, qualifier: str) -> dict[str, str]:
    return {"objectId": object_id, "qualifier": qualifier}


class _Sim:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def after(self, t: datetime, lo_days: float, hi_days: float) -> datetime:
        return t + timedelta(seconds=round(self.rng.uniform(lo_days, hi_days) * 86_400))


def generate(seed: int = 20230301) -> Log:
    """The whole log for ``seed`` (deterministic: the same seed gives the same bytes)."""
    s = _Sim(seed)
    rng = s.rng
    products = {name: (price, weight) for name, price, weight in PRODUCTS}
    reps = {c: rng.sample(EMPLOYEES["Sales"], 2) for c in CUSTOMERS}  # primary, secondary

    # -- orders and their items ---------------------------------------------------------------
    times = sorted(START + timedelta(seconds=rng.randrange(DAYS * 86_400)) for _ in range(N_ORDERS))
    orders: list[Order] = []
    n_item = 880_000
    for k, t in enumerate(times):
        oid = f"o-{990_001 + k}"
        customer = rng.choice(CUSTOMERS)
        items = []
        for name in rng.choices(
            list(products), k=rng.choices([1, 2, 3, 4, 5], [25, 30, 25, 12, 8])[0]
        ):
            n_item += 1
            price, weight = products[name]
            items.append(Item(f"i-{n_item}", oid, name, price, weight))
        rep = reps[customer][0] if rng.random() < 0.85 else reps[customer][1]
        orders.append(Order(oid, customer, t, items, rep))
    by_id = {o.id: o for o in orders}
    in_window = [o for o in orders if PROBLEM_WINDOW[0] <= o.placed - START <= PROBLEM_WINDOW[1]]
    used: set[str] = set()

    def pick_orders(n: int, ok: Any, pool: list[Order] | None = None) -> list[Order]:
        cands = [o for o in (pool or in_window) if o.id not in used and ok(o)]
        chosen = rng.sample(cands, n)
        for o in chosen:
            used.add(o.id)
        return chosen

    for o in pick_orders(2, lambda o: len(o.items) >= 2):
        o.problem = "item_never_picked"
    for o in pick_orders(1, lambda o: len(o.items) >= 2):
        o.problem = "never_reordered"

    # -- the warehouse ------------------------------------------------------------------------
    for o in orders:
        for n, it in enumerate(o.items):
            it.picker = rng.choice(EMPLOYEES["Warehousing"])
            if o.problem == "item_never_picked" and n == len(o.items) - 1:
                continue  # lost in the warehouse
            if o.problem == "never_reordered" and n == len(o.items) - 1:
                it.out_of_stock = s.after(o.placed, 0.1, 1.2)
                continue  # out of stock, and nobody reordered it
            if rng.random() < 0.15:
                it.out_of_stock = s.after(o.placed, 0.1, 1.2)
                it.reorder = s.after(it.out_of_stock, 0.3, 2.0)
                it.pick = s.after(it.reorder, 2.0, 6.0)
            else:
                it.pick = s.after(o.placed, 0.2, 2.5)

    # packages: addressed to one customer; items picked about the same time travel together,
    # whichever of the customer's orders they belong to
    packages: list[Package] = []
    per_customer: dict[str, list[Item]] = defaultdict(list)
    for o in orders:
        per_customer[o.customer].extend(i for i in o.items if i.pick is not None)
    groups: list[list[Item]] = []
    for customer in CUSTOMERS:
        picked = sorted(per_customer[customer], key=lambda i: (i.pick, i.id))
        group: list[Item] = []
        for it in picked:
            assert it.pick is not None
            first = group[0].pick if group else None
            if group and (
                first is None
                or it.pick - first > timedelta(days=1)
                or len(group) == 5
                or rng.random() < 0.1
            ):
                groups.append(group)
                group = []
            group.append(it)
        if group:
            groups.append(group)
    made = []
    for group in groups:
        last_pick = max(i.pick for i in group if i.pick is not None)
        made.append((s.after(last_pick, 0.1, 1.0), group))
    made.sort(key=lambda x: (x[0], x[1][0].id))
    for n, (created, group) in enumerate(made):
        p = Package(
            f"p-{660_001 + n}",
            by_id[group[0].order].customer,
            group,
            created,
            packer=rng.choice(EMPLOYEES["Warehousing"]),
        )
        for it in group:
            it.package = p.id
        p.sent = s.after(created, 0.1, 1.5)
        p.shippers = [rng.choice(EMPLOYEES["Shipment"])]
        if rng.random() < 0.3:  # a second employee helps ("forwarder")
            p.shippers.append(rng.choice([e for e in EMPLOYEES["Shipment"] if e != p.shippers[0]]))
        if rng.random() < 0.2:  # nobody home: one or two failed attempts first
            t = s.after(p.sent, 0.5, 2.0)
            for _ in range(rng.choice([1, 2])):
                p.failed.append(t)
                t = s.after(t, 0.5, 1.5)
            p.delivered = t
        else:
            p.delivered = s.after(p.sent, 0.5, 3.0)
        packages.append(p)

    # -- package problems: every order with items in the package is stuck ---------------------
    window_ids = {o.id for o in in_window}

    def pick_package(ok: Any) -> Package:
        cands = [
            p
            for p in packages
            if p.problem is None
            and all(o in window_ids and o not in used for o in p.orders)
            and ok(p)
        ]
        p = rng.choice(cands)
        used.update(p.orders)
        return p

    def others_delivered(p: Package) -> bool:
        return any(
            q.id != p.id and q.delivered for o in p.orders for q in packages if o in q.orders
        )

    never_sent = [
        pick_package(lambda p: len(p.orders) >= 2),
        pick_package(lambda p: len(p.orders) == 1),
    ]
    for p in never_sent:
        p.problem, p.sent, p.failed, p.delivered = "never_sent", None, [], None
    lost = [pick_package(others_delivered), pick_package(others_delivered)]
    for p in lost:
        p.problem, p.failed, p.delivered = "never_delivered", [], None
    failed = pick_package(lambda p: True)
    assert failed.sent is not None
    failed.problem, failed.failed, failed.delivered = (
        "failed_not_retried",
        [s.after(failed.sent, 0.5, 2.0)],
        None,
    )
    for p in [*never_sent, *lost, failed]:
        for oid in p.orders:
            by_id[oid].problem = by_id[oid].problem or p.problem

    # -- sales: confirmation, reminders, payment ------------------------------------------------
    never_paid = pick_orders(2, lambda o: o.placed - START <= NEVER_PAID_BY)
    unconfirmed = pick_orders(1, lambda o: True)
    for o in never_paid:
        o.problem = "never_paid"
    for o in unconfirmed:
        o.problem = "never_confirmed"
    pkg_of = {p.id: p for p in packages}
    for k, o in enumerate(orders):
        o.confirm = s.after(o.placed, 0.1, 1.5)
        deliveries = [pkg_of[i.package].delivered for i in o.items if i.package]
        delivered = [d for d in deliveries if d is not None]
        late_payer = o.placed - START >= LATE_PAYERS_FROM and k % 5 == 0
        mode = (
            "two_reminders"
            if late_payer
            else rng.choices(["before_picking", "after_delivery", "one_reminder"], [25, 45, 25])[0]
        )
        if mode == "after_delivery" and not delivered:
            mode = "one_reminder"
        if mode == "before_picking":
            o.pay = s.after(o.confirm, 0.1, 2.0)
        elif mode == "after_delivery":
            o.pay = s.after(max(delivered), 1.0, 6.0)
        elif mode == "one_reminder":
            o.pay = s.after(o.confirm, 21.0, 30.0)
        else:
            o.pay = s.after(o.confirm, 41.0, 46.0)
        if o.problem == "never_paid":
            o.pay = None
        end = o.pay or AS_OF
        n = 1
        while o.confirm + timedelta(days=20 * n) < end:
            o.reminders.append(o.confirm + timedelta(days=20 * n))
            n += 1
        if o.problem == "never_confirmed":
            o.confirm = None

    # a package nobody created: sent and delivered, known to no order
    ghost = Package(
        f"p-{660_001 + len(packages) + 40}",
        rng.choice(CUSTOMERS),
        [],
        START + timedelta(days=3, hours=10),
        packer="",
    )
    ghost.sent = ghost.created
    ghost.delivered = ghost.sent + timedelta(days=1, hours=3)
    ghost.shippers = [rng.choice(EMPLOYEES["Shipment"])]

    # -- the log --------------------------------------------------------------------------------
    events: list[tuple[datetime, str, str, list[dict[str, str]]]] = []

    def add(kind: str, at: datetime, key: str, rels: list[dict[str, str]]) -> None:
        events.append((at, f"{EID_PREFIX[kind]}_{key}", kind, rels))

    for o in orders:
        rels = [_rel(o.id, "order"), _rel(o.customer, "customer")]
        rels += [_rel(i.id, "item") for i in o.items]
        rels += [_rel(name, "product") for name in sorted({i.product for i in o.items})]
        add("place order", o.placed, o.id, rels)
        if o.confirm:
            add(
                "confirm order", o.confirm, o.id, [_rel(o.id, "order"), _rel(o.rep, "sales person")]
            )
        for n, t in enumerate(o.reminders, 1):
            add(
                "payment reminder",
                t,
                f"{o.id}_{n}",
                [_rel(o.id, "order"), _rel(o.rep, "sales person")],
            )
        if o.pay:
            add("pay order", o.pay, o.id, [_rel(o.id, "order")])
        for i in o.items:
            worker = _rel(i.picker, "warehousing employee")
            if i.out_of_stock:
                add(
                    "item out of stock",
                    i.out_of_stock,
                    i.id,
                    [_rel(i.id, "item"), _rel(i.product, "product"), worker],
                )
            if i.reorder:
                add(
                    "reorder item",
                    i.reorder,
                    i.id,
                    [_rel(i.id, "item"), _rel(i.product, "product"), worker],
                )
            if i.pick:
                add(
                    "pick item",
                    i.pick,
                    i.id,
                    [
                        _rel(i.id, "item"),
                        _rel(i.product, "product"),
                        _rel(o.customer, "customer"),
                        _rel(i.picker, "picker"),
                    ],
                )
    for p in [*packages, ghost]:
        if p.items:
            add(
                "create package",
                p.created,
                p.id,
                [
                    _rel(p.id, "package"),
                    *(_rel(i.id, "item") for i in p.items),
                    _rel(p.packer, "packer"),
                ],
            )
        staff = [_rel(p.shippers[0], "shipper")] + [_rel(e, "forwarder") for e in p.shippers[1:]]
        if p.sent:
            add("send package", p.sent, p.id, [_rel(p.id, "package"), *staff])
        for n, t in enumerate(p.failed, 1):
            add("failed delivery", t, f"{p.id}_{n}", [_rel(p.id, "package"), staff[0]])
        if p.delivered:
            add("package delivered", p.delivered, p.id, [_rel(p.id, "package"), staff[0]])
    events.sort(key=lambda e: (e[0], e[1]))

    objects = _objects(orders, packages, ghost, products, reps)
    type_of = {ob["id"]: ob["type"] for ob in objects}
    ocel = {
        "objectTypes": [
            {"name": "customers", "attributes": []},
            {"name": "employees", "attributes": [{"name": "role", "type": "string"}]},
            {
                "name": "items",
                "attributes": [
                    {"name": "price", "type": "float"},
                    {"name": "weight", "type": "float"},
                ],
            },
            {"name": "orders", "attributes": [{"name": "price", "type": "float"}]},
            {"name": "packages", "attributes": [{"name": "weight", "type": "float"}]},
            {
                "name": "products",
                "attributes": [
                    {"name": "price", "type": "float"},
                    {"name": "weight", "type": "float"},
                ],
            },
        ],
        "eventTypes": [{"name": t, "attributes": []} for t in EVENT_TYPES],
        "objects": objects,
        "events": [
            {"id": eid, "type": kind, "time": iso_z(at), "attributes": [], "relationships": rels}
            for at, eid, kind, rels in events
        ],
    }
    files, mapped = flatten(ocel, type_of)

    # -- ground truth -----------------------------------------------------------------------------
    expected: list[Expected] = []
    for o in orders:
        last = o.items[-1].id
        if o.problem == "item_never_picked":
            expected.append(
                Expected(o.id, "vanished", "picked", "placed", (f"item:{last}",), problem=o.problem)
            )
        elif o.problem == "never_reordered":
            expected.append(
                Expected(
                    o.id,
                    "vanished",
                    "reordered",
                    "out_of_stock",
                    (f"item:{last}",),
                    problem=o.problem,
                )
            )
            expected.append(
                Expected(o.id, "vanished", "picked", "placed", (f"item:{last}",), problem=o.problem)
            )
        elif o.problem == "never_paid":
            expected.append(Expected(o.id, "vanished", "paid", "confirmed", problem=o.problem))
        elif o.problem == "never_confirmed":
            expected.append(Expected(o.id, "skipped", "confirmed", None, problem=o.problem))
    for p in packages:
        for oid in p.orders:
            obj = (f"package:{p.id}",)
            if p.problem == "never_sent":
                expected.append(Expected(oid, "vanished", "sent", "packed", obj, problem=p.problem))
            elif p.problem == "never_delivered":
                expected.append(
                    Expected(oid, "vanished", "delivered", "sent", obj, problem=p.problem)
                )
            elif p.problem == "failed_not_retried":
                expected.append(Expected(oid, "failed", "delivered", None, obj, problem=p.problem))
    expected.append(
        Expected(
            None, "orphan", "sent", None, (f"package:{ghost.id}",), problem="package_nobody_created"
        )
    )

    stuck = {e.order_id: e.problem for e in expected if e.order_id}
    clean = [o.id for o in orders if o.id not in stuck]
    mixed = next(
        p
        for p in packages
        if len(p.orders) >= 2 and p.problem is None and all(o in clean for o in p.orders)
    )
    return Log(seed, ocel, files, mapped, expected, stuck, clean, (mixed.id, mixed.orders))


def _objects(
    orders: list[Order],
    packages: list[Package],
    ghost: Package,
    products: dict[str, tuple[float, float]],
    reps: dict[str, list[str]],
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for role, names in EMPLOYEES.items():
        out += [
            {"id": n, "type": "employees", "attributes": [_attr("role", role)], "relationships": []}
            for n in names
        ]
    for c in CUSTOMERS:
        mine = [o.id for o in orders if o.customer == c]
        out.append(
            {
                "id": c,
                "type": "customers",
                "attributes": [],
                "relationships": [
                    _rel(reps[c][0], "primarySalesRep"),
                    _rel(reps[c][1], "secondarySalesRep"),
                    *(_rel(o, "places") for o in mine),
                ],
            }
        )
    for name, (price, weight) in products.items():
        out.append(
            {
                "id": name,
                "type": "products",
                "attributes": [_attr("price", price), _attr("weight", weight)],
                "relationships": [],
            }
        )
    for o in orders:
        out.append(
            {
                "id": o.id,
                "type": "orders",
                "attributes": [_attr("price", round(sum(i.price for i in o.items), 2))],
                "relationships": [_rel(i.id, "comprises") for i in o.items],
            }
        )
        for i in o.items:
            out.append(
                {
                    "id": i.id,
                    "type": "items",
                    "attributes": [_attr("price", i.price), _attr("weight", i.weight)],
                    "relationships": [_rel(i.product, "is a")],
                }
            )
    for p in [*packages, ghost]:
        out.append(
            {
                "id": p.id,
                "type": "packages",
                "attributes": [_attr("weight", round(sum(i.weight for i in p.items), 2))],
                "relationships": [_rel(i.id, "contains") for i in p.items],
            }
        )
    return out


def flatten(
    ocel: dict[str, Any], type_of: dict[str, str]
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """JSON-OCEL -> one JSONL file per event type (under its department), as pm4py's extended
    table has it; and the events ordertrail.toml must map them to (the oracle's input)."""
    files: dict[str, list[dict[str, Any]]] = defaultdict(list)
    mapped: list[dict[str, Any]] = []
    for e in ocel["events"]:
        m: dict[str, Any]
        related: dict[str, list[str]] = {t: [] for t in OBJECT_TYPES}
        for r in e["relationships"]:
            related[type_of[r["objectId"]]].append(r["objectId"])
        rec: dict[str, Any] = {
            "ocel:eid": e["id"],
            "ocel:activity": e["type"],
            "ocel:timestamp": e["time"],
        }
        rec.update({f"ocel:type:{t}": related[t] for t in OBJECT_TYPES})
        dept = DEPARTMENT[e["type"]]
        files[f"flat/{dept}/{e['type'].replace(' ', '_')}.jsonl"].append(rec)
        at = datetime.fromisoformat(e["time"].replace("Z", "+00:00"))
        if dept == "sales":
            m = {
                "source": "sales",
                "order_id": related["orders"][0],
                "objects": {"item": related["items"]} if related["items"] else {},
                "attributes": {"customer": related["customers"][0]} if related["customers"] else {},
            }
        elif dept == "warehouse":
            objs = {"item": related["items"], "package": related["packages"]}
            m = {
                "source": "warehouse",
                "order_id": "",
                "objects": {k: v for k, v in objs.items() if v},
                "attributes": {},
            }
        else:
            m = {
                "source": "shipment",
                "order_id": "",
                "objects": {"package": related["packages"]},
                "attributes": {},
            }
        m.update(
            event_id=e["id"],
            hop=HOPS[e["type"]],
            occurred_at=us(at),
            phase="failed" if e["type"] == "failed delivery" else "completed",
        )
        mapped.append(m)
    return dict(sorted(files.items())), mapped
