"""Runs a source through mapping into the store, one transaction per batch."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ordertrail.collectors.base import RawBatch, Source
from ordertrail.collectors.file import FileSource, quarantine_digest
from ordertrail.collectors.mapping import Mapper
from ordertrail.errors import ConfigError
from ordertrail.schemas.config import Config, SourceConfig
from ordertrail.schemas.event import QuarantineRecord
from ordertrail.store import Store, Supersede, WriteResult
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
    # file sources: blank lines counted, files skipped as unreadable (path, why), quarantine
    # rows superseded by records read again, events replaced / removed by --replace
    blank_lines: int | None = None
    unreadable: list[tuple[str, str]] | None = None
    withdrawn: int = 0
    replaced: int = 0
    removed: int = 0

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
        if self.blank_lines is not None:
            out["blank_lines"] = self.blank_lines
            out["superseded_quarantine"] = self.withdrawn
            out["replaced"] = self.replaced
            out["removed"] = self.removed
            out["unreadable"] = [{"path": p, "reason": r} for p, r in self.unreadable or ()]
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
    if batch.replace is not None:
        ts = max(ts, batch.replace.at)  # events a --replace stores never look older than it
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
    report.withdrawn += res.withdrawn
    report.replaced += res.replaced
    report.removed += res.removed
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
    res = store.write_batch(
        quarantined=bad,
        checkpoints=batch.checkpoints,
        rows=rows,
        supersede=supersede(mapper.name, batch, bad),
    )
    record_write(report, batch, bad, res, len(filtered))
    return res


def supersede(source: str, batch: RawBatch, bad: list[QuarantineRecord]) -> Supersede | None:
    """What a batch's records take the place of in the store (see :class:`Supersede`)."""
    if not (batch.withdraw or batch.reread or batch.replace or batch.sweep):
        return None
    keys = list(batch.withdraw)
    keep: dict[tuple[str, str], str] = {}
    if batch.reread:
        # a record read again leaves at most the quarantine row of what it maps to now
        keys.extend((r.source_ref, quarantine_digest(r.raw)) for r in batch.records)
        keep = {(q.source_ref, q.digest): q.reason for q in bad}
    return Supersede(source, keys, keep, batch.replace, batch.sweep)


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
    from_start: bool = False,
    replace: bool = False,
    fsrc: FileSource | None = None,
) -> IngestReport:
    """Ingest one file source from its checkpoints to the end of its files.

    ``from_start`` reads every file again from its start (nothing is stored twice; quarantine
    rows of records that now map give way). ``replace`` (implies ``from_start``) replaces the
    source's stored events by what its files give now — see :meth:`Store.begin_replace`.
    Unreadable files are skipped and listed in the report's ``unreadable``.
    """
    fsrc = fsrc or FileSource(source, batch_size=batch_size, from_start=from_start or replace)
    mapper = Mapper(source, config.hop_names)
    if replace:
        files = [p for p in fsrc.paths() if os.path.isfile(fsrc.full(p))]
        store.begin_replace(source.name, files)
    report = run_source(store, mapper, fsrc, on_progress)
    report.files = fsrc.files_read
    report.pending_lines = fsrc.pending_lines
    report.blank_lines = fsrc.blank_lines
    report.unreadable = list(fsrc.unreadable)
    if not fsrc.paths():
        logger.warning("source %s: no file matches %s", source.name, source.path)
    return report
