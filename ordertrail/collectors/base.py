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

from ordertrail.store.writer import Checkpoint, ReplaceMark


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
    """Records plus the checkpoints that hold once they are stored, and what the same
    transaction supersedes (see :meth:`ordertrail.store.Store.write_batch`)."""

    records: list[RawRecord]
    checkpoints: list[Checkpoint]
    progress: int = 0  # units (bytes, messages) this batch advanced, for progress bars
    # quarantine rows (source_ref, digest) these records supersede: a torn last line that was
    # quarantined and has since been completed
    withdraw: list[tuple[str, str]] = field(default_factory=list)
    # the records are read again on purpose (--from-start): the quarantine rows an earlier read
    # left for the same records (same place, same bytes) give way to what they map to now
    reread: bool = False
    # --replace: events of this source stored before the mark give way to the records of this
    # batch (same event ids) ...
    replace: ReplaceMark | None = None
    # ... and, per file read again to its end, the ones it no longer gave (file -> mark)
    sweep: dict[str, ReplaceMark] = field(default_factory=dict)


class Source(Protocol):
    """A place events come from. ``batches`` resumes from the stored checkpoints."""

    name: str

    def batches(self, checkpoints: dict[str, Checkpoint]) -> Iterator[RawBatch]: ...
