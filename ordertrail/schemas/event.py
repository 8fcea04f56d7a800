"""The OrderEvent — one row of the ``events`` table — and the quarantine record."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    """What an event says about its hop."""

    COMPLETED = "completed"
    STARTED = "started"
    FAILED = "failed"


PHASES = frozenset(p.value for p in Phase)


def us_to_datetime(us: int) -> datetime:
    """Microseconds since the epoch -> timezone-aware UTC datetime."""
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC).replace(microsecond=us % 1_000_000)


def datetime_to_us(dt: datetime) -> int:
    """Timezone-aware datetime -> microseconds since the epoch (naive means UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def derive_event_id(source: str, payload: bytes) -> str:
    """Deterministic id for a record that carries none, from its source and raw bytes only.

    Not its place (a redelivered copy is the same event) and never its mapped values: fixing a
    mapping (a time zone, an order id path) and reading the record again stores nothing twice.
    """
    return hashlib.blake2b(source.encode() + b"\x1e" + payload, digest_size=16).hexdigest()


@dataclass(slots=True)
class OrderEvent:
    """One thing that happened to one order at one hop.

    ``occurred_at`` and ``ingested_at`` are microseconds since the epoch, UTC: integers compare
    identically in SQLite and PostgreSQL and vectorize well; use :attr:`occurred` for a datetime.
    """

    event_id: str
    order_id: str
    hop: str
    occurred_at: int
    source: str
    source_ref: str = ""
    phase: str = Phase.COMPLETED.value
    trace_id: str | None = None
    span_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    ingested_at: int | None = None
    ingest_seq: int | None = None
    objects: dict[str, list[str]] = field(default_factory=dict)  # kind -> ids (v2)

    @property
    def occurred(self) -> datetime:
        return us_to_datetime(self.occurred_at)


@dataclass(slots=True)
class QuarantineRecord:
    """A record that could not become an event, kept with the reason and where it came from."""

    source: str
    source_ref: str
    reason: str
    raw: str
    received_at: int = 0

    def __post_init__(self) -> None:
        # PostgreSQL's text cannot hold NUL: one in a quarantined record would fail every later
        # write of its source, so it is kept as U+FFFD (the digest is of the stored text)
        for f in ("source_ref", "reason", "raw"):
            v = getattr(self, f)
            if "\x00" in v:
                setattr(self, f, v.replace("\x00", "\ufffd"))

    @property
    def digest(self) -> str:
        return hashlib.blake2b(
            self.raw.encode("utf-8", "surrogatepass"), digest_size=12
        ).hexdigest()


def us_to_iso(us: int | None) -> str | None:
    """Microseconds -> ISO-8601 UTC with a ``Z`` (None stays None)."""
    if us is None:
        return None
    return us_to_datetime(us).isoformat().replace("+00:00", "Z")
