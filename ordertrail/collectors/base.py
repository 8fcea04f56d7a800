"""The collector pipeline's parts: a source yields raw records, a mapper turns each into an
OrderEvent or a quarantine record, the store writer keeps a batch in one transaction.

Sources decide *where from* and *how far* (checkpoints); mapping decides *what*; the runner
decides *when* a batch is written. Each is small and replaceable, as in OpenTelemetry's split of
span processors and exporters.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ordertrail.store.writer import Checkpoint


@dataclass(slots=True)
class RawRecord:
    """One record as read: its bytes, where it came from, and (when the source decoded it) data."""

    raw: bytes
    source_ref: str
    data: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None  # set by a source that could not even decode the record


@dataclass(slots=True)
class RawBatch:
    """Records plus the checkpoints that hold once they are stored."""

    records: list[RawRecord]
    checkpoints: list[Checkpoint]
    progress: int = 0  # units (bytes, messages) this batch advanced, for progress bars


class Source(Protocol):
    """A place events come from. ``batches`` resumes from the stored checkpoints."""

    name: str

    def batches(self, checkpoints: dict[str, Checkpoint]) -> Iterator[RawBatch]: ...
