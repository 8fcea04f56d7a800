"""Hypothesis strategies: random valid pipelines and random event sets for them.

``cases()`` yields dicts shaped like ``oracle_cases.CASES`` entries without "expected":
``{"name", "config", "events", "as_of", "watermarks"}``. Configs follow DESIGN.md's syntax and
are valid per DESIGN.md and notes/semantics.md §11: next/next_any edges only go from an earlier
hop to a later one (acyclic), every next/next_any target has a `within`, `promise_within` comes
with `promises`, closing hops have no `each` (and no edges), all members of a `next_any` group
share one `each`, `via` names a declared object kind declared before it (no cycles), hop names
are unique, checks name >= 2 hops. Names use [a-z_0-9] only.

Cases stay small (<= 8 orders, <= 60 events) and times sit on a 5-minute grid so ties happen.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

MIN_US = 60_000_000
GRID = 5 * MIN_US  # times are multiples of 5 minutes
BASE = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
MAX_EVENTS = 60  # redeliveries included
MAX_REDELIVERIES = 4
MAX_ORDERS = 8

HOP_NAMES = [
    "checkout",
    "payment",
    "confirmation",
    "picked",
    "packed",
    "shipped",
    "ready_for_pickup",
    "delivered",
]
CLOSING_NAME = "cancelled"
WITHINS = ["10m", "15m", "30m", "45m", "1h", "1h30m", "2h"]
PROMISE_WITHINS = ["20m", "30m", "1h", "2h", "3h"]
SKEWS = ["0s", "1m", "2m", "5m", "10m"]
LOOKBACKS = ["30d", "30d", "30d", "30d", "2h", "4h"]

# Attribute values: numeric strings, case variants, JSON-typed look-alikes.
ATTR_VALUES: dict[str, list[Any]] = {
    "delivery": ["ship", "pickup", "express", "Ship"],
    "channel": ["web", "app", "WEB"],
    "priority": [1, 2, 1.0, "1"],
    "amount": [12.5, "12.5", "12.50", 12.51, 12.52, 13, "13", "abc"],
    "currency": ["EUR", "eur", "USD"],
    "payment_ref": ["pi_1", "pi_1", "pi_2", "pi_3", 7, 7.0, "7"],
}
CONDITIONS: dict[str, list[Any]] = {
    "delivery": ["ship", "pickup", ["ship", "express"], ["pickup"]],
    "channel": ["web", ["web", "app"], "app"],
    "priority": [1, [1, 2], 2],
}


# -------------------------------------------------------------------------------------------
# Configs
# -------------------------------------------------------------------------------------------


@st.composite
def object_kinds(draw: st.DrawFn) -> list[dict[str, Any]]:
    """0-3 object kinds; `via` only names a kind declared before it (no cycles)."""
    out: list[dict[str, Any]] = []
    if draw(st.booleans()) or draw(st.booleans()):
        out.append({"name": "item"})
    if draw(st.booleans()):
        parcel: dict[str, Any] = {"name": "parcel"}
        if any(o["name"] == "item" for o in out) and draw(st.booleans()):
            parcel["via"] = "item"
        out.append(parcel)
    if draw(st.booleans()):
        shipment: dict[str, Any] = {"name": "shipment"}
        vias = [o["name"] for o in out]
        if vias and draw(st.booleans()):
            shipment["via"] = draw(st.sampled_from(vias))
        out.append(shipment)
    return out


def _find(parent: dict[str, str], x: str) -> str:
    while parent[x] != x:
        x = parent[x]
    return x


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    kinds = draw(object_kinds())
    kind_names = [k["name"] for k in kinds]
    n = draw(st.integers(3, 8))
    names = HOP_NAMES[:n]
    with_closing = draw(st.booleans())

    hops: list[dict[str, Any]] = [{"name": h} for h in names]
    has_parent = [False] * n
    # Edges: only from an earlier hop to a later one, so the graph is acyclic.
    for i in range(n - 1):
        later = names[i + 1 :]
        nxt = draw(st.lists(st.sampled_from(later), unique=True, max_size=2))
        rest = [h for h in later if h not in nxt]
        nany: list[str] = []
        if len(rest) >= 2 and draw(st.integers(0, 3)) == 0:
            nany = draw(st.lists(st.sampled_from(rest), unique=True, min_size=2, max_size=3))
        if not nxt and not nany and draw(st.integers(0, 4)) > 0:
            nxt = [names[i + 1]]  # mostly keep the pipeline connected
        hop = hops[i]
        if nxt:
            hop["next"] = nxt
        if nany:
            hop["next_any"] = nany
        targets = nxt + nany
        if targets:
            if len(targets) == 1 or draw(st.booleans()):
                hop["within"] = draw(st.sampled_from(WITHINS))
            else:
                hop["within"] = {t: draw(st.sampled_from(WITHINS)) for t in targets}
        for t in targets:
            has_parent[names.index(t)] = True

    # each: group members share one each (union-find over groups), some hops get one.
    parent = {h: h for h in names}
    for hop in hops:
        members = hop.get("next_any", [])
        for other in members[1:]:
            parent[_find(parent, other)] = _find(parent, members[0])
    if kind_names:
        each_of_root: dict[str, str | None] = {}
        for h in names:
            root = _find(parent, h)
            if root not in each_of_root:
                pick = draw(st.integers(0, 2))
                each_of_root[root] = draw(st.sampled_from(kind_names)) if pick == 0 else None
        for hop in hops:
            k = each_of_root[_find(parent, hop["name"])]
            if k is not None:
                hop["each"] = k

    # when: conditions on some next / next_any / promised targets.
    for i, hop in enumerate(hops):
        if draw(st.integers(0, 3)) == 0 and i < n - 1:
            hop["promises"] = draw(
                st.lists(st.sampled_from(names[i + 1 :]), unique=True, min_size=1, max_size=2)
            )
            hop["promise_within"] = draw(st.sampled_from(PROMISE_WITHINS))
        targets = hop.get("next", []) + hop.get("next_any", []) + hop.get("promises", [])
        when: dict[str, dict[str, Any]] = {}
        for t in dict.fromkeys(targets):
            if draw(st.integers(0, 3)) == 0:
                attr = draw(st.sampled_from(sorted(CONDITIONS)))
                when[t] = {attr: draw(st.sampled_from(CONDITIONS[attr]))}
        if when:
            hop["when"] = when
        if draw(st.integers(0, 4)) == 0:
            hop["unique"] = True
            if draw(st.booleans()):
                hop["unique_by"] = "payment_ref"

    if with_closing:
        hops.append({"name": CLOSING_NAME, "closes": True})
    all_names = [h["name"] for h in hops]

    checks: list[dict[str, Any]] = []
    for fld in ("amount", "currency"):
        if draw(st.booleans()):
            chk: dict[str, Any] = {
                "field": fld,
                "hops": draw(st.lists(st.sampled_from(names), unique=True, min_size=2, max_size=3)),
            }
            if fld == "amount" and draw(st.booleans()):
                chk["tolerance"] = draw(st.sampled_from([0.01, 0.02, 0.5]))
            if fld == "currency" and draw(st.booleans()):
                chk["ignore_case"] = True
            checks.append(chk)

    sources: list[dict[str, Any]] = []
    for j in range(draw(st.integers(1, 3))):
        src: dict[str, Any] = {
            "name": f"src{j}",
            "kind": "file",
            "path": f"data/src{j}/*.jsonl",
            "order_id": "order",
            "timestamp": "ts",
        }
        if j == 0 or draw(st.booleans()):
            src["hop_field"] = "stage"
        else:
            src["hop"] = draw(st.sampled_from(all_names))
        if kind_names:
            src["objects"] = {k: f"{k}s[*]" for k in kind_names}
        sources.append(src)
    if draw(st.integers(0, 3)) == 0:
        # No hop_field source: src0 feeds the first hop, the others one hop each; hops fed by
        # nothing never get events (and are judged at as_of).
        sources[0].pop("hop_field")
        sources[0]["hop"] = names[0]
        for s in sources[1:]:
            if s.pop("hop_field", None) is not None:
                s["hop"] = draw(st.sampled_from(all_names))

    return {
        "pipeline": {
            "name": "generated",
            "clock_skew": draw(st.sampled_from(SKEWS)),
            "lookback": draw(st.sampled_from(LOOKBACKS)),
        },
        "objects": kinds,
        "hops": hops,
        "checks": checks,
        "sources": sources,
    }


# -------------------------------------------------------------------------------------------
# Events
# -------------------------------------------------------------------------------------------


class _Builder:
    """Collects event dicts for one case; hands out event ids."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.events: list[dict[str, Any]] = []
        self.n = 0
        self.hops = {h["name"]: h for h in config["hops"]}

    def feeders(self, hop: str) -> list[str]:
        return [
            s["name"] for s in self.config["sources"] if "hop_field" in s or s.get("hop") == hop
        ]

    def add(
        self,
        draw: st.DrawFn,
        hop: str,
        t: int,
        order: str,
        objects: dict[str, list[str]],
        phase: str = "completed",
        attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        feeders = self.feeders(hop)
        if not feeders or (not order and not any(objects.values())):
            return None  # nothing can emit this hop (or nothing to name)
        self.n += 1
        e = {
            "source": draw(st.sampled_from(feeders)),
            "event_id": f"e{self.n}",
            "order_id": order,
            "objects": {k: list(v) for k, v in objects.items() if v},
            "hop": hop,
            "phase": phase,
            "occurred_at": t,
            "attributes": dict(attributes or {}),
        }
        self.events.append(e)
        return e


@st.composite
def _attributes(draw: st.DrawFn, order_attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes of one event: mostly the order's own values, sometimes others or null."""
    out: dict[str, Any] = {}
    for name, value in order_attrs.items():
        roll = draw(st.integers(0, 9))
        if roll < 5:
            out[name] = value
        elif roll == 5:
            out[name] = draw(st.sampled_from(ATTR_VALUES[name]))
        elif roll == 6:
            out[name] = None
    return out


@st.composite
def events_for(draw: st.DrawFn, config: dict[str, Any]) -> list[dict[str, Any]]:
    b = _Builder(config)
    hops = b.hops
    names = [h["name"] for h in config["hops"] if not h.get("closes")]
    closing = [h["name"] for h in config["hops"] if h.get("closes")]
    kinds = {o["name"]: o.get("via") for o in config["objects"]}
    parents: dict[str, list[str]] = {h: [] for h in names}
    for h in names:
        for c in hops[h].get("next", []) + hops[h].get("next_any", []):
            parents[c].append(h)
    entries = [h for h in names if not parents[h]]
    counter = {"item": 0, "parcel": 0, "shipment": 0, "x": 0}

    def new_obj(kind: str) -> str:
        counter[kind] = counter.get(kind, 0) + 1
        return f"{kind[0]}{counter[kind]}"

    n_orders = draw(st.integers(1, MAX_ORDERS))
    all_items: list[str] = []
    for oi in range(n_orders):
        order = f"o{oi + 1}"
        objs: dict[str, list[str]] = {}
        for k in kinds:
            objs[k] = [new_obj(k) for _ in range(draw(st.integers(0, 3 if k == "item" else 2)))]
        all_items.extend(objs.get("item", []))
        attrs = {
            name: draw(st.sampled_from(vals))
            for name, vals in ATTR_VALUES.items()
            if draw(st.integers(0, 3)) > 0
        }
        t0 = BASE + draw(st.integers(0, 40)) * GRID
        start = (
            draw(st.sampled_from(entries))
            if draw(st.integers(0, 9))
            else draw(st.sampled_from(names))
        )

        declared = False
        visited: set[str] = set()
        todo: list[tuple[str, int]] = [(start, t0)]
        while todo and len(b.events) < MAX_EVENTS - MAX_REDELIVERIES:
            todo.sort(key=lambda x: (x[1], x[0]))
            h, t = todo.pop(0)
            if h in visited:
                continue
            visited.add(h)
            hop = hops[h]
            each = hop.get("each")
            # Objects named at this hop: the each objects one by one, or the order itself.
            if each and objs.get(each):
                chosen = [o for o in objs[each] if draw(st.integers(0, 6)) > 0]
                groups = [[o] for o in chosen]
                if len(chosen) >= 2 and draw(st.integers(0, 3)) == 0:
                    groups = [chosen[:2], *[[o] for o in chosen[2:]]]
                units = [({each: g}, t + draw(st.integers(-1, 3)) * GRID) for g in groups]
            else:
                units = [({}, t)]
            for named, tu in units:
                name_order = not named or draw(st.integers(0, 3)) > 0
                extra: dict[str, list[str]] = {k: list(v) for k, v in named.items()}
                if not declared and "item" in objs and draw(st.integers(0, 4)) > 0:
                    extra["item"] = sorted(set(extra.get("item", [])) | set(objs["item"]))
                    name_order = True
                    declared = True
                if not named and draw(st.integers(0, 5)) == 0:
                    # an order-level event naming one of the order's objects instead
                    ks = [k for k, v in objs.items() if v]
                    if ks:
                        k = draw(st.sampled_from(ks))
                        extra[k] = [draw(st.sampled_from(objs[k]))]
                        name_order = draw(st.booleans())
                phase = draw(st.sampled_from(["completed"] * 8 + ["failed", "started"]))
                attrs_e = draw(_attributes(attrs))
                if phase == "started":
                    b.add(
                        draw, h, tu - GRID, order if name_order else "", extra, "started", attrs_e
                    )
                    phase = "completed"
                b.add(draw, h, tu, order if name_order else "", extra, phase, attrs_e)
                if phase == "failed" and draw(st.booleans()):
                    b.add(draw, h, tu + GRID, order if name_order else "", extra, "completed")
                if hop.get("unique") and draw(st.integers(0, 3)) == 0:
                    b.add(draw, h, tu + draw(st.integers(0, 2)) * GRID, order, extra,
                          "completed", draw(_attributes(attrs)))  # fmt: skip
            # Links: parcels via items, shipments via parcels (sometimes with no order).
            if draw(st.integers(0, 4)) == 0:
                for k, via in kinds.items():
                    if not objs.get(k):
                        continue
                    x = draw(st.sampled_from(objs[k]))
                    link: dict[str, list[str]] = {k: [x]}
                    if via and objs.get(via):
                        link[via] = [draw(st.sampled_from(objs[via]))]
                        if via == "item" and all_items and draw(st.integers(0, 3)) == 0:
                            link["item"] = sorted({*link["item"], draw(st.sampled_from(all_items))})
                    link_order = order if (not via or draw(st.integers(0, 2)) == 0) else ""
                    lt = t + draw(st.integers(-6, 6)) * GRID
                    b.add(draw, h, lt, link_order, link, "completed")
            # Follow the edges.
            for c in hop.get("next", []):
                if draw(st.integers(0, 5)) > 0:
                    todo.append((c, t + draw(st.integers(-1, 14)) * GRID))
            if hop.get("next_any") and draw(st.integers(0, 5)) > 0:
                c = draw(st.sampled_from(hop["next_any"]))
                todo.append((c, t + draw(st.integers(-1, 14)) * GRID))
        if closing and draw(st.integers(0, 5)) == 0:
            b.add(draw, closing[0], t0 + draw(st.integers(0, 20)) * GRID, order, {})

    # Strays: objects never linked to anything, and events at random hops.
    for _ in range(draw(st.integers(0, 3))):
        h = draw(st.sampled_from(names + closing))
        t = BASE + draw(st.integers(0, 60)) * GRID
        if kinds and draw(st.booleans()):
            k = draw(st.sampled_from(sorted(kinds)))
            b.add(draw, h, t, "", {k: [new_obj(k)]})
        else:
            b.add(draw, h, t, f"o{draw(st.integers(1, MAX_ORDERS + 1))}", {})

    events = b.events[: MAX_EVENTS - MAX_REDELIVERIES]
    # Redeliveries: identical copies of some events.
    if events:
        picks = st.lists(st.integers(0, len(events) - 1), max_size=MAX_REDELIVERIES)
        for i in draw(picks):
            events.append(copy.deepcopy(events[i]))
    return draw(st.permutations(events))


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    config = draw(configs())
    events = draw(events_for(config))
    as_of = BASE + draw(st.integers(6, 100)) * GRID
    watermarks: dict[str, int | None] = {}
    for s in config["sources"]:
        roll = draw(st.integers(0, 9))
        if roll == 0:
            continue  # never reported: missing from the dict
        if roll == 1:
            watermarks[s["name"]] = None
        else:
            watermarks[s["name"]] = as_of + draw(st.integers(-12, 6)) * GRID
    return {
        "name": "generated",
        "config": config,
        "events": events,
        "as_of": as_of,
        "watermarks": watermarks,
    }
