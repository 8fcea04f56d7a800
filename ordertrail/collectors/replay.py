"""Replay: re-map quarantined records through the current config's mapping.

A record that maps now is stored exactly as ingest would store it — the same event id (from the
record, else derived from the source and the raw bytes), the same ``source_ref``, its links — and
leaves quarantine; one the source's ``where`` drops now leaves quarantine and joins its file's or
partition's filtered count; the rest stay, with their reason updated when it changed. One
transaction per batch; replaying again changes nothing.

What a quarantine row holds is the raw record as text, so:

- a CSV record needs its file's header: it is read again from the file named by the row's
  ``source_ref`` (``path:line``) with the source's current ``delimiter``; when the file is gone
  the row stays as it is and the replay says why;
- a Kafka record's headers are not kept: a ``traceparent`` header that filled ``trace_id`` and
  ``span_id`` is lost (a ``trace_id``/``span_id`` path in the record itself still works);
- a record that was not valid UTF-8 was kept with replacement characters: its derived event id
  (when it carries none) differs from the one the original bytes would give;
- a row with no content (a reader error such as an unreadable compressed file or a Kafka message
  with no value) and the header of a CSV file have nothing to re-map: they stay;
- an unfinished last line that the file source quarantined but will read again (its checkpoint
  remembers it as the file's ``tail``) stays: it may be half a record.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Literal, cast

import orjson

from ordertrail.collectors.base import RawRecord
from ordertrail.collectors.file import FileSource
from ordertrail.collectors.mapping import Mapper
from ordertrail.errors import ConfigError
from ordertrail.schemas.config import Config, SourceConfig
from ordertrail.schemas.event import OrderEvent, QuarantineRecord
from ordertrail.store import Store
from ordertrail.store.quarantine import (
    QuarantineRow,
    ReplayBatch,
    apply_replay,
    count_rows,
    list_rows,
    sources_in_quarantine,
)
from ordertrail.store.writer import make_row, now_us

logger = logging.getLogger(__name__)

DEFAULT_BATCH = 1000
HEADER_MAX_LINES = 1000  # lines a CSV header (after blank lines) may take

OutcomeKind = Literal["stored", "filtered", "quarantined", "not_replayable"]


@dataclass(slots=True)
class Outcome:
    """What the current config makes of one quarantine row."""

    kind: OutcomeKind
    detail: str  # the event in words, the ``where`` mismatch, the new reason, or why not replayable
    event: OrderEvent | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcome": self.kind, "detail": self.detail}
        if self.event is not None:
            e = self.event
            out["event"] = {
                "event_id": e.event_id,
                "order_id": e.order_id,
                "hop": e.hop,
                "phase": e.phase,
                "occurred_at": e.occurred.isoformat().replace("+00:00", "Z"),
                "objects": e.objects,
            }
        return out


@dataclass
class ReplayReport:
    """What a replay did to one source's quarantine rows: examined = removed + kept +
    not_replayable (removed = stored + redelivered + filtered; kept rows stay in quarantine)."""

    source: str
    examined: int = 0
    stored: int = 0  # new events
    redelivered: int = 0  # mapped to an event that was already stored: no new row
    filtered: int = 0  # dropped by ``where`` now: removed from quarantine
    filtered_counted: int = 0  # ... of which joined a file's or partition's filtered count
    kept: int = 0  # still quarantined
    reasons_changed: int = 0  # ... with a reason different from the stored one
    not_replayable: dict[str, int] = field(default_factory=dict)  # why -> rows left untouched
    kept_reasons: dict[str, int] = field(default_factory=dict)  # reason -> rows still kept
    batches: int = 0
    dry_run: bool = False

    @property
    def removed(self) -> int:
        return self.stored + self.redelivered + self.filtered

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "dry_run": self.dry_run,
            "examined": self.examined,
            "stored": self.stored,
            "redelivered": self.redelivered,
            "filtered": self.filtered,
            "filtered_counted": self.filtered_counted,
            "kept": self.kept,
            "reasons_changed": self.reasons_changed,
            "not_replayable": sum(self.not_replayable.values()),
            "not_replayable_reasons": dict(self.not_replayable),
            "kept_reasons": dict(self.kept_reasons),
            "batches": self.batches,
        }


class _NotReplayable(Exception):
    """The row cannot be re-mapped; args[0] says why."""


class Replayer:
    """Re-maps one source's quarantine rows with the source's current config."""

    def __init__(self, config: Config, source: SourceConfig, store: Store | None = None):
        self.source = source
        self.mapper = Mapper(source, config.hop_names)
        self.files = FileSource(source) if source.kind == "file" and source.path else None
        self.tails = _unfinished_tails(store, source) if store is not None else set()
        # path -> (header, its last line), or why there is none
        self._headers: dict[str, tuple[list[str], int] | str] = {}

    # -- one row -------------------------------------------------------------------------------
    def record(self, row: QuarantineRow) -> RawRecord:
        """The row as the source's reader would have given it; raises _NotReplayable."""
        raw = row.raw.encode("utf-8", "surrogatepass")
        if not raw.strip():
            raise _NotReplayable("no record to re-map (the reader could not read one)")
        if row.source_ref in self.tails:
            raise _NotReplayable(
                "the unfinished last line of a file: ingest reads it again once it is complete"
            )
        if "\ufffd" in row.raw:
            raise _NotReplayable(
                "the record's bytes are not kept exactly (they were not valid UTF-8): "
                "read the source again instead"
            )
        if self.files is None:
            return RawRecord(raw, row.source_ref)
        path, _, line = row.source_ref.rpartition(":")
        if not path or self.source.file_format(path) != "csv":
            return RawRecord(raw, row.source_ref)
        header, header_end = self._header(path)
        if line.isdigit() and int(line) <= header_end:
            raise _NotReplayable("the header of a CSV file, not a record")
        try:
            fields = next(
                csv.reader(io.StringIO(row.raw, newline=""), delimiter=self.source.delimiter)
            )
        except StopIteration:
            fields = []
        except csv.Error as e:
            return RawRecord(raw, row.source_ref, error=f"malformed CSV: {e}")
        if len(fields) != len(header):
            return RawRecord(
                raw,
                row.source_ref,
                error=f"CSV row has {len(fields)} fields, header has {len(header)}",
            )
        return RawRecord(raw, row.source_ref, data=dict(zip(header, fields, strict=True)))

    def _header(self, path: str) -> tuple[list[str], int]:
        """A CSV file's header and the number of its last line, read as the file source reads
        it: the first record after any blank lines, strict UTF-8, a byte-order mark dropped."""
        cached = self._headers.get(path)
        if cached is None:
            cached = self._read_header(path)
            self._headers[path] = cached
        if isinstance(cached, str):
            raise _NotReplayable(cached)
        return cached

    def _read_header(self, path: str) -> tuple[list[str], int] | str:
        assert self.files is not None
        full = self.files.full(path)
        taken = 0  # lines the header took, blank lines before it included

        def lines(fh: IO[bytes]) -> Iterator[str]:
            nonlocal taken
            started = False
            for raw in fh:
                taken += 1
                if taken > HEADER_MAX_LINES:
                    return
                text = raw.decode("utf-8")
                if taken == 1:
                    text = text.removeprefix("\ufeff")
                if not started and not text.strip():
                    continue
                started = True
                yield text

        try:
            with _open(full, path) as fh:
                header = next(csv.reader(lines(fh), delimiter=self.source.delimiter), [])
        except FileNotFoundError:
            return f"CSV file {path!r} is gone: its header is needed to map the record"
        except (OSError, EOFError) as e:
            return f"cannot read the header of CSV file {path!r}: {e}"
        except (UnicodeDecodeError, csv.Error) as e:
            return f"CSV file {path!r} has no readable header: {e}"
        if not header:
            return f"CSV file {path!r} has no readable header"
        return header, taken

    def outcome(self, row: QuarantineRow) -> Outcome:
        """What the current config makes of one row (nothing is written)."""
        try:
            rec = self.record(row)
        except _NotReplayable as e:
            return Outcome("not_replayable", e.args[0])
        out = self.mapper.map(rec)
        if out is None:
            data = rec.data
            if data is None:
                data = orjson.loads(rec.raw)
            why = self.mapper.where_mismatch(data) or "where"
            return Outcome("filtered", f"where does not take it: {why}")
        if isinstance(out, QuarantineRecord):
            return Outcome("quarantined", out.reason)
        order = f"order {out.order_id!r}" if out.order_id else "no order"
        objs = "; ".join(f"{k}: {', '.join(v)}" for k, v in out.objects.items())
        at = out.occurred.isoformat().replace("+00:00", "Z")
        detail = f"hop {out.hop!r} ({out.phase}), {order}{'; ' + objs if objs else ''}, at {at}"
        return Outcome("stored", detail, out)

    def plan(self, rows: Sequence[QuarantineRow], report: ReplayReport) -> ReplayBatch:
        """Map a batch of rows; count the rows that stay in ``report``."""
        events: list[tuple[int, tuple[Any, ...]]] = []
        filtered: list[tuple[int, str, str]] = []
        reasons: list[tuple[int, str]] = []
        ts = now_us()
        for row in rows:
            report.examined += 1
            try:
                rec = self.record(row)
            except _NotReplayable as e:
                why = e.args[0]
                report.not_replayable[why] = report.not_replayable.get(why, 0) + 1
                continue
            out = self.mapper.map(rec)
            if out is None:
                filtered.append((row.id, row.source, row.source_ref))
            elif isinstance(out, QuarantineRecord):
                report.kept += 1
                report.kept_reasons[out.reason] = report.kept_reasons.get(out.reason, 0) + 1
                if out.reason != row.reason:
                    reasons.append((row.id, out.reason))
            else:
                events.append((row.id, _row_of(out, ts)))
        return ReplayBatch(events, filtered, reasons)


def _unfinished_tails(store: Store, source: SourceConfig) -> set[str]:
    """Refs of the unterminated last lines the file source quarantined but did not consume (its
    file checkpoints remember them as ``tail``): the file is read there again, so a replay must
    not store what may be half a line."""
    if source.kind != "file":
        return set()
    out = set()
    for cp in store.checkpoints(source.name).values():
        tail = cp.position.get("tail")
        if isinstance(tail, dict) and isinstance(tail.get("ref"), str):
            out.add(tail["ref"])
    return out


def _open(full: str, path: str) -> IO[bytes]:
    if path.endswith(".gz"):
        return cast(IO[bytes], gzip.open(full, "rb"))
    return open(full, "rb")


def _row_of(e: OrderEvent, ingested_at: int) -> tuple[Any, ...]:
    return make_row(e.event_id, e.source, e.order_id, e.hop, e.phase, e.occurred_at, e.source_ref,
                    e.trace_id, e.span_id, e.attributes, ingested_at, e.objects)  # fmt: skip


def replay_source(
    store: Store,
    config: Config,
    source: SourceConfig,
    *,
    batch_size: int = DEFAULT_BATCH,
    dry_run: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Replay one source's quarantine rows, oldest first, one transaction per batch."""
    report = ReplayReport(source.name, dry_run=dry_run)
    replayer = Replayer(config, source, store)
    after = 0
    while True:
        rows = list_rows(store, source.name, limit=batch_size, after_id=after)
        if not rows:
            break
        after = rows[-1].id
        batch = replayer.plan(rows, report)
        if dry_run:
            report.stored += len(batch.events)
            report.filtered += len(batch.filtered)
            report.reasons_changed += len(batch.reasons)
        else:
            res = apply_replay(store, batch)
            report.stored += res.stored
            report.redelivered += res.redelivered
            report.filtered += res.filtered
            report.filtered_counted += res.filtered_counted
            report.reasons_changed += res.reasons
        report.batches += 1
        if on_progress:
            on_progress(len(rows))
    return report


def replay(
    store: Store,
    config: Config,
    source: str | None = None,
    *,
    batch_size: int = DEFAULT_BATCH,
    dry_run: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> list[ReplayReport]:
    """Replay the quarantine of one source, or of every source that has rows there. Rows of a
    source the config no longer has are reported as not replayable and left alone."""
    if source is not None:
        return [
            replay_source(
                store,
                config,
                config.source(source),
                batch_size=batch_size,
                dry_run=dry_run,
                on_progress=on_progress,
            )
        ]
    known = {s.name for s in config.sources}
    reports = []
    for name in sources_in_quarantine(store):
        if name in known:
            reports.append(
                replay_source(
                    store,
                    config,
                    config.source(name),
                    batch_size=batch_size,
                    dry_run=dry_run,
                    on_progress=on_progress,
                )
            )
            continue
        n = count_rows(store, name)
        rep = ReplayReport(name, examined=n, dry_run=dry_run)
        rep.not_replayable[f"source {name!r} is not in the config"] = n
        if on_progress:
            on_progress(n)
        reports.append(rep)
    return reports


def outcome_of(store: Store, config: Config | None, row: QuarantineRow) -> Outcome | None:
    """What the current config makes of one row; None when there is no config."""
    if config is None:
        return None
    try:
        source = config.source(row.source)
    except ConfigError:
        return Outcome("not_replayable", f"source {row.source!r} is not in the config")
    return Replayer(config, source, store).outcome(row)
