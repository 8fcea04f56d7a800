"""The OrderEvent — one row of the ``events`` table — and the quarantine record."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    """What an event says about its hop."""

    COMPLETED = "completed"
    STARTED = "started"
    FAILED = "failed"


PHASES = frozenset(p.value for p in Phase)


def us_to_datetime(us: int) -> datetime:
    """Microseconds since the epoch -> timezone-aware UTC datetime (exact: float seconds would
    round 23:59:59.9999995 up into the next second, or past year 9999)."""
    try:
        return _EPOCH + timedelta(microseconds=int(us))
    except OverflowError as e:
        raise ValueError(f"time {us} µs is out of range") from e


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
    """Microseconds -> ISO-8601 UTC with a ``Z`` (None stays None); microseconds shown only
    when not zero. Exact integer arithmetic (no float seconds), with the dates cached: findings
    and evidence format hundreds of thousands of times per run."""
    if us is None:
        return None
    day, rem = divmod(int(us), 86_400_000_000)
    d = _DAYS.get(day)
    if d is None:
        try:
            d = (_EPOCH_DAY + timedelta(days=day)).isoformat()
        except OverflowError as e:
            raise ValueError(f"time {us} µs is out of range") from e
        if len(_DAYS) < 200_000:
            _DAYS[day] = d
    sec, frac = divmod(rem, 1_000_000)
    h, sec = divmod(sec, 3600)
    m, sec = divmod(sec, 60)
    if frac:
        return f"{d}T{h:02d}:{m:02d}:{sec:02d}.{frac:06d}Z"
    return f"{d}T{h:02d}:{m:02d}:{sec:02d}Z"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = date(1970, 1, 1)
_DAYS: dict[int, str] = {}
