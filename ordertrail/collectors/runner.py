"""Runs a source through mapping into the store, one transaction per batch."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ordertrail.collectors.base import RawBatch, Source
from ordertrail.collectors.file import FileSource
from ordertrail.collectors.mapping import Mapper
from ordertrail.errors import ConfigError
from ordertrail.schemas.config import Config, SourceConfig
from ordertrail.schemas.event import QuarantineRecord
from ordertrail.store import Store, WriteResult
from ordertrail.store.writer import now_us

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int], None]


@dataclass
class IngestReport:
    """What one source's ingest did. records = stored + redelivered + quarantined + filtered."""

    source: str
    records: int = 0
    stored: int = 0
    redelivered: int = 0
    quarantined: int = 0
    filtered: int = 0  # not taken by the source's ``where``
    batches: int = 0
    files: int = 0
    pending_lines: int = 0
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    rejected: int = 0  # records mapped to quarantine, whether or not an earlier run stored them
    not_order_spans: int | None = None  # otlp: spans naming no order and no object

    def quarantine_share(self) -> float:
        """The share of the records the source took (not filtered) that went to quarantine."""
        taken = self.records - self.filtered
        return self.rejected / taken if taken > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "source": self.source,
            "records": self.records,
            "stored": self.stored,
            "redelivered": self.redelivered,
            "quarantined": self.quarantined,
            "filtered": self.filtered,
            "files": self.files,
            "pending_lines": self.pending_lines,
            "seconds": round(self.seconds, 3),
        }
        if self.not_order_spans is not None:
            out["not_order_spans"] = self.not_order_spans
        return out


_DETAIL = re.compile(r"""\s*('[^']*'|"[^"]*"|\(.*\)|:.*$)""")


def reason_category(reason: str) -> str:
    """A quarantine reason without its particulars, for counting: 'malformed JSON'."""
    return _DETAIL.sub("", reason).strip() or reason


def map_batch(
    mapper: Mapper, batch: RawBatch
) -> tuple[list[tuple[Any, ...]], list[QuarantineRecord], list[int]]:
    """Map a batch into ready ``events`` rows, quarantine records, and the positions (in
    ``batch.records``) of the records the source's ``where`` filtered out."""
    rows: list[tuple[Any, ...]] = []
    bad: list[QuarantineRecord] = []
    filtered: list[int] = []
    m = mapper.map_row
    ts = now_us()
    for i, rec in enumerate(batch.records):
        out = m(rec, ts)
        if type(out) is tuple:
            rows.append(out)
        elif out is None:
            filtered.append(i)
        else:
            bad.append(out)  # type: ignore[arg-type]
    return rows, bad, filtered


def record_write(
    report: IngestReport,
    batch: RawBatch,
    bad: list[QuarantineRecord],
    res: WriteResult,
    filtered: int = 0,
) -> None:
    report.records += len(batch.records)
    report.stored += res.stored
    report.redelivered += res.redelivered
    report.filtered += filtered
    # a quarantine row already stored by an earlier, interrupted attempt counts as a redelivery
    report.quarantined += res.quarantined
    report.redelivered += len(bad) - res.quarantined
    report.rejected += len(bad)
    for q in bad:
        key = reason_category(q.reason)
        report.reasons[key] = report.reasons.get(key, 0) + 1
    if batch.records:
        report.batches += 1


class FilteredCounts:
    """Cumulative filtered counts per part of a source (a file), kept in the part's checkpoint
    position as ``"filtered"`` and so stored in the same transaction as the batch: exact after a
    crash, never doubled by a re-read. A source that counts per part writes the part's count as
    of the start of the run there (0 when it reads the part from the start again); the batches of
    this run are added on top. Every record of a batch belongs to its one part checkpoint."""

    def __init__(self) -> None:
        self.added: dict[str, int] = {}

    def apply(self, batch: RawBatch, filtered: int) -> None:
        parts = [c for c in batch.checkpoints if c.key and "filtered" in c.position]
        if filtered and len(parts) != 1:
            raise ValueError("filtered records of a batch must belong to one part checkpoint")
        for c in parts:
            n = self.added.get(c.key, 0) + filtered
            self.added[c.key] = n
            c.position["filtered"] = int(c.position["filtered"]) + n


def store_batch(
    store: Store,
    mapper: Mapper,
    batch: RawBatch,
    report: IngestReport,
    counts: FilteredCounts | None = None,
) -> WriteResult:
    """Map one batch and store it with its checkpoints in one transaction."""
    rows, bad, filtered = map_batch(mapper, batch)
    (counts or FilteredCounts()).apply(batch, len(filtered))
    res = store.write_batch(quarantined=bad, checkpoints=batch.checkpoints, rows=rows)
    record_write(report, batch, bad, res, len(filtered))
    return res


def run_source(
    store: Store, mapper: Mapper, source: Source, on_progress: ProgressCallback | None = None
) -> IngestReport:
    """Read, map and store batches, in order, each with its checkpoint, until the end.

    (A writer thread overlapping reads with writes was measured slower: the GIL is held for
    most of a write.)
    """
    report = IngestReport(source.name)
    t0 = time.perf_counter()
    counts = FilteredCounts()
    for batch in source.batches(store.checkpoints(source.name)):
        store_batch(store, mapper, batch, report, counts)
        if on_progress and batch.progress:
            on_progress(batch.progress)
    report.seconds = time.perf_counter() - t0
    return report


def file_sources(config: Config, names: Iterable[str] = ()) -> list[SourceConfig]:
    """The file sources to ingest: the named ones (each must be a file source) or all."""
    names = list(names)
    if not names:
        return [s for s in config.sources if s.kind == "file"]
    out = []
    for n in names:
        s = config.source(n)
        if s.kind != "file":
            raise ConfigError(
                f"source {n!r} is of kind {s.kind}; run it with 'ordertrail collect {n}'",
                path=config.path,
            )
        out.append(s)
    return out


def ingest_file_source(
    store: Store,
    config: Config,
    source: SourceConfig,
    *,
    batch_size: int = 20_000,
    on_progress: ProgressCallback | None = None,
) -> IngestReport:
    """Ingest one file source from its checkpoints to the end of its files."""
    fsrc = FileSource(source, batch_size=batch_size)
    mapper = Mapper(source, config.hop_names)
    report = run_source(store, mapper, fsrc, on_progress)
    report.files = len(fsrc.paths())
    report.pending_lines = fsrc.pending_lines
    if not fsrc.paths():
        logger.warning("source %s: no file matches %s", source.name, source.path)
    return report
