"""Runs a source through mapping into the store, one transaction per batch."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ordertrail.collectors.base import RawBatch, Source
from ordertrail.collectors.file import FileSource, quarantine_digest
from ordertrail.collectors.mapping import Mapper
from ordertrail.collectors.reasons import TOP_REASONS, ReasonCount, ReasonTally
from ordertrail.errors import ConfigError
from ordertrail.schemas.config import Config, SourceConfig
from ordertrail.schemas.event import QuarantineRecord
from ordertrail.store import Store, Supersede, WriteResult
from ordertrail.store.writer import Checkpoint, now_us

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int], None]

# A run that took fewer records than this is judged against ``max_quarantine`` together with
# the source's records before it (see :class:`QuarantineWindow`).
QUARANTINE_MIN_RECORDS = 20
WINDOW_KEY = "quarantine_window"  # in the source checkpoint: [records taken, quarantined]


@dataclass
class IngestReport:
    """What one source's ingest did. records = stored + redelivered + quarantined + filtered.

    ``tally`` counts every record this run sent to quarantine (``rejected``: new rows and rows
    an earlier, interrupted read already stored) by reason, with the field path and the first
    record's ``source_ref``; records are never copied into the report.
    """

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
    tally: ReasonTally = field(default_factory=lambda: ReasonTally(keep_raw=False))
    rejected: int = 0  # records mapped to quarantine, whether or not an earlier run stored them
    not_order_spans: int | None = None  # otlp: spans naming no order and no object
    # file sources: blank lines counted, files skipped as unreadable (path, why), quarantine
    # rows superseded by records read again, events replaced / removed by --replace
    blank_lines: int | None = None
    unreadable: list[tuple[str, str]] | None = None
    withdrawn: int = 0
    replaced: int = 0
    removed: int = 0
    max_quarantine: float | None = None  # the source's, when known
    # what the share is judged over: (records taken, quarantined) — this run's, or with the
    # source's records before it for a small run (see QuarantineWindow); None: this run's
    window: tuple[float, float] | None = None

    @property
    def taken(self) -> int:
        """Records the source took: read and not filtered."""
        return self.records - self.filtered

    @property
    def reasons(self) -> dict[str, int]:
        """Reason (its field path kept, the record's values left out) -> records, most first."""
        return self.tally.counts()

    def top_reasons(self, n: int | None = TOP_REASONS) -> list[ReasonCount]:
        """The most frequent quarantine reasons, each with its field path and an example."""
        return self.tally.top(n)

    def quarantine_share(self) -> float:
        """The share of the records the source took (not filtered) that went to quarantine."""
        taken = self.taken
        return self.rejected / taken if taken > 0 else 0.0

    def judged_on(self) -> tuple[float, float]:
        """(records, quarantined) the ``max_quarantine`` share is judged over; nothing when
        this run took no record (it is not judged)."""
        if self.taken <= 0:
            return 0.0, 0.0
        return self.window or (float(self.taken), float(self.rejected))

    def judged_share(self) -> float:
        """The share held against ``max_quarantine``; 0 when this run took no record."""
        records, bad = self.judged_on()
        return bad / records if records > 0 else 0.0

    def widened(self) -> bool:
        """Whether the share was judged over more records than this run took."""
        return round(self.judged_on()[0]) > self.taken

    @property
    def over_max_quarantine(self) -> bool:
        mq = self.max_quarantine
        return mq is not None and self.judged_share() > mq

    def as_dict(self) -> dict[str, object]:
        top = self.top_reasons()
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
            "rejected": self.rejected,
            "quarantine_share": round(self.judged_share(), 4),
            "quarantine_judged_on": round(self.judged_on()[0]),
            "max_quarantine": self.max_quarantine,
            "over_max_quarantine": self.over_max_quarantine,
            "reasons": [r.as_dict() for r in top],
            "other_reasons": self.tally.total - sum(r.count for r in top),
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
        report.tally.add(q.reason, q.source_ref)
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


class QuarantineWindow:
    """What a run's ``max_quarantine`` share is judged over.

    A run that took at least :data:`QUARANTINE_MIN_RECORDS` records is judged on its own. A
    smaller one is judged over the source's last :data:`QUARANTINE_MIN_RECORDS` records: its
    own plus, pro rata, those of the window before it, which the source's checkpoint keeps (as
    ``[records, quarantined]``, written in the transaction of the run's last batch). So one torn
    last line quarantined after a clean run does not fail the next run, while a source whose
    every record is wrong fails however few records it has (there is nothing before them).
    """

    def __init__(self, before: tuple[float, float] | None = None):
        self.before = before

    @classmethod
    def from_checkpoint(cls, cp: Checkpoint | None) -> QuarantineWindow:
        w = cp.position.get(WINDOW_KEY) if cp is not None else None
        if isinstance(w, list) and len(w) == 2 and all(isinstance(x, int | float) for x in w):
            return cls((float(w[0]), float(w[1])))
        return cls()

    def over(self, taken: int, rejected: int) -> tuple[float, float]:
        """(records, quarantined) to judge a run that took ``taken`` records over."""
        b = self.before
        if taken >= QUARANTINE_MIN_RECORDS or b is None or b[0] <= 0:
            return float(taken), float(rejected)
        f = min(1.0, (QUARANTINE_MIN_RECORDS - taken) / b[0])
        return taken + b[0] * f, rejected + b[1] * f

    def stamp(self, batch: RawBatch, taken: int, rejected: int) -> None:
        """Keep the window in the source's own checkpoint, when the batch writes it."""
        for c in batch.checkpoints:
            if c.key == "":
                records, bad = self.over(taken, rejected)
                c.position[WINDOW_KEY] = [round(records, 3), round(bad, 3)]


def store_batch(
    store: Store,
    mapper: Mapper,
    batch: RawBatch,
    report: IngestReport,
    counts: FilteredCounts | None = None,
    window: QuarantineWindow | None = None,
) -> WriteResult:
    """Map one batch and store it with its checkpoints in one transaction."""
    rows, bad, filtered = map_batch(mapper, batch)
    (counts or FilteredCounts()).apply(batch, len(filtered))
    if window is not None:
        taken = report.taken + len(batch.records) - len(filtered)
        window.stamp(batch, taken, report.rejected + len(bad))
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
    checkpoints = store.checkpoints(source.name)
    window = QuarantineWindow.from_checkpoint(checkpoints.get(""))
    for batch in source.batches(checkpoints):
        store_batch(store, mapper, batch, report, counts, window)
        if on_progress and batch.progress:
            on_progress(batch.progress)
    report.window = window.over(report.taken, report.rejected)
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
    report.max_quarantine = source.max_quarantine
    report.files = fsrc.files_read
    report.pending_lines = fsrc.pending_lines
    report.blank_lines = fsrc.blank_lines
    report.unreadable = list(fsrc.unreadable)
    if not fsrc.paths():
        logger.warning("source %s: no file matches %s", source.name, source.path)
    return report


def prune_after_ingest(
    store: Store, config: Config, progress: Callable[[int, int, str], None] | None = None
) -> Any:
    """``[store] prune_after_ingest``: once ingest is done, prune what is older than the
    retention (a :class:`~ordertrail.store.retention.PruneResult`); None when not configured,
    or when another prune is running (it does the work)."""
    if not (config.prune_after_ingest and config.retention):
        return None
    from ordertrail.store.retention import PruneBusy, prune

    now = now_us()
    try:
        return prune(
            store.engine,
            now - config.retention,
            keep_after=now - config.pipeline.lookback,
            progress=progress,
        )
    except PruneBusy as e:
        logger.warning("not pruning after ingest: %s", e)
        return None
