"""The pipeline compiled for the rules: hops as indexes, the requirements each hop makes (every
``next`` hop; one of a ``next_any`` group), descendants, conditions, promises, failure windows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ordertrail.schemas.config import Condition, Config


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: ``true`` is not ``"true"`` nor ``1``; ``1 == 1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return False


def condition_holds(cond: Condition, attrs: Mapping[str, Any]) -> tuple[bool, tuple[str, ...]]:
    """(holds, attributes that were missing): a missing attribute never rules an edge out."""
    missing: list[str] = []
    for attr, values in cond.items():
        if attr not in attrs:
            missing.append(attr)
        elif not any(json_equal(attrs[attr], v) for v in values):
            return False, ()
    return True, tuple(missing)


@dataclass(frozen=True)
class Requirement:
    """What reaching hop ``src`` asks for: every ``next`` hop (one requirement each), or one
    member of the ``next_any`` group (one requirement for the group)."""

    src: int
    targets: tuple[int, ...]  # one hop, or the group's members
    within: tuple[int, ...]  # µs, per target
    conds: tuple[Condition | None, ...]  # per target
    each: str | None
    group: bool

    @property
    def key(self) -> str:
        return f"{self.src}>" + ",".join(map(str, self.targets))


@dataclass(frozen=True)
class Promise:
    src: int
    target: int
    within: int
    cond: Condition | None


@dataclass
class Plan:
    config: Config
    names: tuple[str, ...]
    hx: dict[str, int]
    each: tuple[str | None, ...]
    requirements: tuple[Requirement, ...]
    promises: tuple[Promise, ...]
    entry: tuple[int, ...]
    terminal: tuple[int, ...]
    closing: tuple[int, ...]
    fail_window: tuple[int, ...]
    longest_path: int
    kinds: tuple[str, ...]  # object kinds
    via: dict[str, str | None]
    condition_attrs: tuple[str, ...]
    unit_kinds: tuple[str | None, ...] = field(default=())
    topo: tuple[int, ...] = field(default=())  # hops so that every edge points forward
    children: tuple[tuple[int, ...], ...] = field(default=())  # next and next_any targets

    @property
    def n_hops(self) -> int:
        return len(self.names)


def compile_plan(config: Config) -> Plan:
    names = config.hop_names
    hx = {h: i for i, h in enumerate(names)}
    each = tuple(h.each for h in config.hops)
    reqs: list[Requirement] = []
    proms: list[Promise] = []
    attrs: list[str] = []
    for h in config.hops:
        a = hx[h.name]
        for b in h.next:
            c = h.when.get(b)
            reqs.append(Requirement(a, (hx[b],), (h.within[b],), (c,), each[hx[b]], False))
        if h.next_any:
            reqs.append(
                Requirement(
                    a,
                    tuple(hx[b] for b in h.next_any),
                    tuple(h.within[b] for b in h.next_any),
                    tuple(h.when.get(b) for b in h.next_any),
                    each[hx[h.next_any[0]]],
                    True,
                )
            )
        if h.promise_within is not None:
            for q in h.promises:
                proms.append(Promise(a, hx[q], h.promise_within, h.when.get(q)))
        for cond in h.when.values():
            attrs.extend(k for k in cond if k not in attrs)
    fail_window = []
    for h in config.hops:
        incoming = [w for a, b, w in config.edges if b == h.name]
        outgoing = [w for a, b, w in config.edges if a == h.name]
        fail_window.append(max(incoming) if incoming else (min(outgoing) if outgoing else 0))
    kinds = config.object_names
    unit_kinds: list[str | None] = [None, *sorted({e for e in each if e is not None})]
    return Plan(
        config=config,
        names=names,
        hx=hx,
        each=each,
        requirements=tuple(reqs),
        promises=tuple(proms),
        entry=tuple(hx[h] for h in config.entry_hops),
        terminal=tuple(hx[h] for h in config.terminal_hops),
        closing=tuple(hx[h] for h in config.closing_hops),
        fail_window=tuple(fail_window),
        longest_path=config.longest_path,
        kinds=kinds,
        via={o.name: o.via for o in config.objects},
        condition_attrs=tuple(attrs),
        unit_kinds=tuple(unit_kinds),
        topo=tuple(hx[h] for h in config.topological_order),
        children=tuple(tuple(hx[b] for b in h.targets) for h in config.hops),
    )
