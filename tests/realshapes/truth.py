"""Ground truth shared by the acceptance data sets: expected findings and how to compare them.

A finding is compared on (order_id, kind, hop, from_hop, objects, field) — the identity of
DESIGN.md plus the objects it names. ``since``, ``detail`` and ``evidence`` are not compared
here (the data sets' own tests look at them where it matters).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Key = tuple[str | None, str, str, str | None, tuple[str, ...], str | None]


@dataclass(frozen=True)
class Expected:
    """One finding a data set must produce, and the injected problem it comes from."""

    order_id: str | None  # None: an unlinked object's orphan
    kind: str
    hop: str
    from_hop: str | None = None
    objects: tuple[str, ...] = ()
    field: str | None = None  # mismatch only
    problem: str = ""  # the injected problem, for messages

    @property
    def key(self) -> Key:
        return (
            self.order_id,
            self.kind,
            self.hop,
            self.from_hop,
            tuple(sorted(self.objects)),
            self.field,
        )


def finding_key(f: Mapping[str, Any]) -> Key:
    """The comparable identity of a finding dict from ``reconcile`` (or the oracle)."""
    field = f.get("field") if f.get("kind") == "mismatch" else None
    return (
        f.get("order_id") or None,
        str(f["kind"]),
        str(f["hop"]),
        f.get("from_hop") or None,
        tuple(sorted(f.get("objects") or ())),
        field,
    )


def show(keys: Iterable[Key]) -> str:
    return "\n".join(f"  {k}" for k in sorted(keys, key=repr)) or "  (none)"


def us(t: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (UTC)."""
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def iso_z(t: datetime) -> str:
    """ISO-8601 in UTC with a Z, to the second."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def raw_id(record: Mapping[str, Any]) -> str:
    """A stand-in event id for records whose source has no ``event_id``: the same bytes, the
    same id (a redelivered webhook is one event), as ordertrail derives one from the raw line."""
    return "raw:" + hashlib.sha256(dumps(record)).hexdigest()[:24]


def dumps(record: Mapping[str, Any]) -> bytes:
    """One JSONL line, compact like a webhook body (integers stay integers)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(dumps(r) + b"\n" for r in records))
