"""``ordertrail check``: map a sample of each source's real records with the real mapping, store
nothing, and say what would be stored, filtered or quarantined — and why, with hints for the
common config mistakes (a field path spelled differently, times without a zone, a CSV delimiter,
a date format, a glob that matches no file).

File sources are read from the start of their files without touching checkpoints; Kafka sources
through a consumer with no group (partitions assigned, read from the beginning, never committed);
OTLP sources receive their spans and cannot be sampled. Results are structured; the CLI renders.
"""

from __future__ import annotations

import csv
import difflib
import glob
import gzip
import logging
import os
import re
import time
import tomllib
from collections import Counter
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import orjson

from ordertrail.collectors.base import RawBatch, RawRecord
from ordertrail.collectors.file import FileSource
from ordertrail.collectors.mapping import Mapper, getter
from ordertrail.collectors.reasons import ReasonCount, ReasonTally
from ordertrail.collectors.reasons import reason_field as reason_field  # importable from here too
from ordertrail.collectors.reasons import reason_key as reason_key
from ordertrail.collectors.timestamps import TimestampError, parse_timestamp
from ordertrail.errors import OrdertrailError, SourceError
from ordertrail.schemas.config import Config, SourceConfig
from ordertrail.schemas.event import OrderEvent, us_to_iso
from ordertrail.schemas.paths import MISSING

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE = 1000
KAFKA_TIMEOUT = 30.0  # seconds to read a Kafka source's sample before giving up on the rest
FUTURE_SLACK_US = 86_400_000_000  # a time more than a day ahead is suspicious


@dataclass(slots=True)
class Hint:
    """A likely config mistake: ``kind`` for tools, ``message`` for people, and the field and the
    config change it points at when there is one."""

    kind: str
    message: str
    field: str | None = None
    suggestion: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "field": self.field,
            "suggestion": self.suggestion,
        }


@dataclass
class SourceCheck:
    """What a source's sample would do: records = stored + filtered + quarantined."""

    source: str
    kind: str
    max_quarantine: float
    sampled: int = 0
    stored: int = 0
    filtered: int = 0
    quarantined: int = 0
    reasons: list[ReasonCount] = field(default_factory=list)
    filter_reasons: list[ReasonCount] = field(default_factory=list)
    hops: dict[str, int] = field(default_factory=dict)
    first: int | None = None  # µs, UTC
    last: int | None = None
    hints: list[Hint] = field(default_factory=list)
    files: list[str] | None = None  # file sources: the files the path matches (JSON: how many)
    sampleable: bool = True
    note: str | None = None
    error: str | None = None

    @property
    def quarantine_share(self) -> float:
        """The share of the records the source took (not filtered) that would be quarantined."""
        taken = self.sampled - self.filtered
        return self.quarantined / taken if taken > 0 else 0.0

    @property
    def over_share(self) -> bool:
        return self.quarantine_share > self.max_quarantine

    @property
    def no_files(self) -> bool:
        return self.files is not None and not self.files

    @property
    def ok(self) -> bool:
        """Clean enough for ``check`` to exit 0 (hints alone do not fail it)."""
        return self.error is None and not self.over_share and not self.no_files

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "sampleable": self.sampleable,
            "sampled": self.sampled,
            "stored": self.stored,
            "filtered": self.filtered,
            "quarantined": self.quarantined,
            "quarantine_share": round(self.quarantine_share, 4),
            "max_quarantine": self.max_quarantine,
            "ok": self.ok,
            "hops": dict(self.hops),
            "time_range": {"first": us_to_iso(self.first), "last": us_to_iso(self.last)},
            "reasons": [r.as_dict() for r in self.reasons],
            "filter_reasons": [r.as_dict() for r in self.filter_reasons],
            "hints": [h.as_dict() for h in self.hints],
            "files": None if self.files is None else len(self.files),
            "note": self.note,
            "error": self.error,
        }


# -- the entry points ------------------------------------------------------------------------


def check_sources(
    config: Config,
    names: Sequence[str] = (),
    sample: int = DEFAULT_SAMPLE,
    *,
    kafka_timeout: float = KAFKA_TIMEOUT,
) -> list[SourceCheck]:
    """Check the named sources (all when none are named), in config order."""
    sources = [config.source(n) for n in names] if names else list(config.sources)
    return [check_source(config, s, sample, kafka_timeout=kafka_timeout) for s in sources]


def check_source(
    config: Config,
    source: SourceConfig,
    sample: int = DEFAULT_SAMPLE,
    *,
    kafka_timeout: float = KAFKA_TIMEOUT,
) -> SourceCheck:
    """Sample one source and map its records; a source that cannot be read says so in ``error``."""
    res = SourceCheck(source.name, source.kind, source.max_quarantine)
    records: list[RawRecord] = []
    try:
        if source.kind == "file":
            records = _sample_files(source, sample, res)
        elif source.kind == "kafka":
            records = _sample_kafka(source, sample, kafka_timeout, res)
        else:
            res.sampleable = False
            res.note = (
                f"{source.kind} sources cannot be sampled: ordertrail receives their spans while "
                f"'ordertrail collect {source.name}' runs; spans that do not map are in "
                f"'ordertrail quarantine list {source.name}'"
            )
            return res
    except OrdertrailError as e:
        res.error = str(e)
        return res
    _map_sample(config, source, records, res)
    return res


# -- sampling ----------------------------------------------------------------------------------


def _sample_files(source: SourceConfig, n: int, res: SourceCheck) -> list[RawRecord]:
    """The first ``n`` records of the source's files, in file order; checkpoints untouched."""
    fsrc = FileSource(source, batch_size=max(1, min(n, 1000)))
    paths = fsrc.paths()
    res.files = paths
    if not paths:
        res.hints.append(_no_file_hint(source))
        return []
    for p in paths[:20]:
        if source.file_format(p) == "csv":
            h = _delimiter_hint(fsrc, p)
            if h:
                res.hints.append(h)
                break
    records: list[RawRecord] = []
    batches = cast(Generator[RawBatch, None, None], fsrc.batches({}))
    try:
        for batch in batches:
            records.extend(batch.records)
            if len(records) >= n:
                break
    finally:
        batches.close()  # closes the file being read
    return records[:n]


def _no_file_hint(source: SourceConfig) -> Hint:
    pattern = os.path.expanduser(source.path or "")
    base = source.base_dir if not os.path.isabs(pattern) else None
    where = f" (relative to {base})" if base else ""
    msg = f"path {source.path!r} matches no file{where}"
    folder = os.path.dirname(pattern)
    if folder and not glob.has_magic(folder):
        full = os.path.join(base, folder) if base else folder
        if not os.path.isdir(full):
            msg += f"; the folder {folder!r} does not exist"
        else:
            try:
                there = sorted(e for e in os.listdir(full) if not e.startswith("."))
            except OSError:
                there = []
            if there:
                shown = ", ".join(repr(e) for e in there[:5])
                more = f" and {len(there) - 5} more" if len(there) > 5 else ""
                msg += f"; the folder {folder!r} has {shown}{more}"
            else:
                msg += f"; the folder {folder!r} is empty"
    return Hint("no_file", msg, field="path")


_DELIMITERS = (",", ";", "\t", "|")


def _delimiter_hint(fsrc: FileSource, path: str) -> Hint | None:
    """A CSV header read as one column that holds another delimiter: the wrong ``delimiter``."""
    full = fsrc.full(path)
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(full, "rb") as fh:
            line = b""
            for _ in range(20):  # the header is the first line that is not blank
                line = fh.readline(64 * 1024)
                if line.strip() or not line:
                    break
    except (OSError, EOFError):
        return None
    text = line.decode("utf-8-sig", "replace").rstrip("\r\n")
    delim = fsrc.config.delimiter
    try:
        header = next(csv.reader([text], delimiter=delim))
    except (StopIteration, csv.Error):
        return None
    if len(header) != 1:
        return None
    counts = {d: text.count(d) for d in _DELIMITERS if d != delim}
    best = max(counts, key=lambda d: counts[d])
    if not counts[best]:
        return None
    shown = "\\t" if best == "\t" else best
    name = "tab" if best == "\t" else f"{best!r}"
    return Hint(
        "delimiter",
        f"looks like {name}-separated CSV: the header of {path!r} is one column {text[:80]!r} "
        f'with the source\'s delimiter {delim!r}; set delimiter = "{shown}"',
        field="delimiter",
        suggestion=f'delimiter = "{shown}"',
    )


def _sample_kafka(
    source: SourceConfig, n: int, timeout: float, res: SourceCheck
) -> list[RawRecord]:
    """Up to ``n`` records from the beginning of the source's partitions, read by a consumer with
    no group: it can commit nothing, and joins no group (a running collector is not disturbed)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

    unreachable: tuple[type[Exception], ...] = (KafkaTimeoutError, KafkaConnectionError)
    try:  # kafka-python 2.x
        from kafka.errors import NoBrokersAvailable

        unreachable = (*unreachable, NoBrokersAvailable)
    except ImportError:
        pass

    cfg: dict[str, Any] = dict(source.options)  # SASL/SSL settings, passed through
    cfg.update(
        bootstrap_servers=list(source.bootstrap_servers),
        client_id=f"ordertrail-check-{source.name}",
        group_id=None,  # no group: nothing to commit, no rebalance of the real group
        enable_auto_commit=False,
        allow_auto_create_topics=False,  # looking must not create a topic
        bootstrap_timeout_ms=int(max(1.0, min(10.0, timeout)) * 1000),
    )
    servers = ", ".join(source.bootstrap_servers)
    try:
        consumer = KafkaConsumer(**cfg)
    except unreachable:
        raise SourceError(f"source {source.name}: cannot reach Kafka at {servers}") from None
    except KafkaError as e:
        raise SourceError(f"source {source.name}: {e}") from None
    except TypeError as e:
        raise SourceError(f"source {source.name}: bad consumer option: {e}") from None
    records: list[RawRecord] = []
    try:
        topics = list(source.topics)
        if source.topic_pattern:
            rx = re.compile(source.topic_pattern)
            topics = sorted(t for t in consumer.topics() if rx.match(t))
            if not topics:
                res.hints.append(
                    Hint(
                        "no_topic",
                        f"topic_pattern {source.topic_pattern!r} matches no topic on {servers}",
                        field="topic_pattern",
                    )
                )
        tps: list[Any] = []
        for t in topics:
            parts = consumer.partitions_for_topic(t)
            if not parts:
                res.hints.append(
                    Hint("no_topic", f"topic {t!r} does not exist on {servers}", field="topic")
                )
                continue
            tps.extend(TopicPartition(t, p) for p in sorted(parts))
        if not tps:
            return records
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        starts = consumer.beginning_offsets(tps)
        left = {tp for tp in tps if (ends.get(tp) or 0) > (starts.get(tp) or 0)}
        if not left:
            res.note = "no records in " + ", ".join(repr(t) for t in topics)
        deadline = time.monotonic() + timeout
        while left and len(records) < n:
            if time.monotonic() > deadline:
                res.note = f"read {len(records)} records in {timeout:.0f}s; sampled those"
                break
            polled = consumer.poll(timeout_ms=500, max_records=n - len(records))
            for tp, messages in polled.items():
                prefix = f"{tp.topic}:{tp.partition}:"
                for m in messages:
                    records.append(_kafka_record(m, prefix + str(m.offset)))
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
            if not polled:
                for tp in list(left):
                    if consumer.position(tp) >= ends[tp]:
                        left.discard(tp)
    except KafkaError as e:
        raise SourceError(f"source {source.name}: Kafka: {e}") from None
    finally:
        try:
            consumer.close(autocommit=False)
        except Exception as e:  # closing a consumer that read nothing is not worth failing
            logger.debug("source %s: closing the check consumer: %s", source.name, e)
    return records[:n]


def _kafka_record(m: Any, ref: str) -> RawRecord:
    """A message as the collector reads it (value, ref, string headers)."""
    headers = {}
    for k, v in m.headers or ():
        try:
            headers[k] = v.decode() if isinstance(v, bytes | bytearray) else str(v)
        except UnicodeDecodeError:
            continue
    if m.value is None:
        return RawRecord(b"", ref, headers=headers, error="empty message (no value)")
    return RawRecord(bytes(m.value), ref, headers=headers)


# -- mapping the sample -----------------------------------------------------------------------


def _decoded(rec: RawRecord) -> dict[str, Any] | None:
    if rec.error:
        return None
    if rec.data is not None:
        return dict(rec.data)
    try:
        d = orjson.loads(rec.raw)
    except orjson.JSONDecodeError:
        return None
    return d if isinstance(d, dict) else None


def _map_sample(
    config: Config, source: SourceConfig, records: list[RawRecord], res: SourceCheck
) -> None:
    mapper = Mapper(source, config.hop_names)
    res.sampled = len(records)
    reasons = ReasonTally()
    filters = ReasonTally()
    hops: Counter[str] = Counter()
    decoded: list[dict[str, Any]] = []  # records that decode (the ones hints can look into)
    taken: list[dict[str, Any]] = []  # ... of which ``where`` takes
    events: list[OrderEvent] = []
    for rec in records:
        data = _decoded(rec)
        if data is not None:
            decoded.append(data)
        out = mapper.map(rec)
        if out is None:
            res.filtered += 1
            why = (mapper.where_mismatch(data) if data is not None else None) or "where"
            filters.add(why, rec.source_ref, rec.raw, key=_where_key(why))
            continue
        if data is not None:
            taken.append(data)
        if isinstance(out, OrderEvent):
            res.stored += 1
            hops[out.hop] += 1
            events.append(out)
            t = out.occurred_at
            res.first = t if res.first is None else min(res.first, t)
            res.last = t if res.last is None else max(res.last, t)
        else:
            res.quarantined += 1
            reasons.add(out.reason, rec.source_ref, rec.raw)
    res.hops = dict(hops.most_common())
    res.reasons = reasons.top()
    res.filter_reasons = filters.top()
    for r in res.filter_reasons:
        r.field = r.reason.partition(" not in ")[0] if " not in " in r.reason else None
    res.hints.extend(_hints(config, source, decoded, taken, events, res))


def _where_key(why: str) -> str:
    path, sep, rest = why.partition(" = ")
    if not sep:
        return why
    _, paren, allowed = rest.partition(" (not ")
    return f"{path} not in ({allowed}" if paren else why


# -- hints -----------------------------------------------------------------------------------


def _hints(
    config: Config,
    source: SourceConfig,
    decoded: list[dict[str, Any]],
    taken: list[dict[str, Any]],
    events: list[OrderEvent],
    res: SourceCheck,
) -> list[Hint]:
    out: list[Hint] = []
    if not decoded:
        return out
    keys = _key_paths(decoded[:200])
    out.extend(_where_hints(source, decoded, keys, res))
    if any(h.kind == "delimiter" for h in res.hints):
        return out  # every record is one wrong column: nothing else can be judged yet
    if taken:
        out.extend(_field_hints(source, taken, keys))
        out.extend(_hop_hints(config, source, taken))
        out.extend(_time_hints(config, source, taken))
    out.extend(_future_hints(events))
    return out


def _key_paths(records: Iterable[Mapping[str, Any]], limit: int = 5000) -> list[str]:
    """Every key path of the records that leads to a value (not to an object of them), nested
    too: ``order.id``, ``lines[*].sku``."""
    seen: dict[str, None] = {}

    def walk(d: Mapping[str, Any], prefix: str, depth: int) -> None:
        for k, v in d.items():
            if len(seen) >= limit:
                return
            p = f"{prefix}.{k}" if prefix else str(k)
            if not isinstance(v, dict):  # a value a path can take, not an object of them
                seen.setdefault(p, None)
            if depth >= 8:
                continue
            if isinstance(v, dict):
                walk(v, p, depth + 1)
            elif isinstance(v, list):
                for x in v[:5]:
                    if isinstance(x, dict):
                        walk(x, p + "[*]", depth + 1)

    for r in records:
        walk(r, "", 0)
    return list(seen)


_NOT_NAME = re.compile(r"\[\*\]|\[\d+\]|[^0-9a-z]")


def _norm(name: str) -> str:
    """A name without case, separators or list marks: 'orderId', 'order.id', 'ORDER_ID' -> 'orderid'."""
    return _NOT_NAME.sub("", name.lower())


def close_fields(path: str, keys: Sequence[str], limit: int = 3) -> list[str]:
    """Key paths of the records close to ``path``: the same name up to case and separators
    ('orderId' ~ 'order.id' ~ 'order_id'), the same name nested deeper ('data.order_id'), or
    a near spelling ('ordr_id')."""
    target = _norm(path)
    if not target:
        return []
    by_norm: dict[str, str] = {}
    for k in sorted(keys, key=lambda k: (k.count(".") + k.count("["), k)):
        if k != path:
            by_norm.setdefault(_norm(k), k)
    found: list[str] = []

    def add(k: str) -> None:
        if k not in found and k != path:
            found.append(k)

    if target in by_norm:
        add(by_norm[target])
    leaf = _norm(re.split(r"[.\[]", path)[-1]) if "." in path else target
    for k in by_norm.values():
        k_leaf = _norm(re.split(r"\.", k)[-1])
        if k_leaf == target or (len(leaf) >= 4 and k_leaf == leaf and leaf != target):
            add(k)
    for m in difflib.get_close_matches(target, list(by_norm), n=limit, cutoff=0.75):
        add(by_norm[m])
    return found[:limit]


def _quote_list(names: Sequence[str]) -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _roles(source: SourceConfig) -> list[tuple[str, str, bool]]:
    """(config key, path, required) of every path the source reads from a record."""
    out: list[tuple[str, str, bool]] = []
    if source.order_id:
        out.append(("order_id", source.order_id, not source.objects))
    out.append(("timestamp", source.timestamp, True))
    if source.hop_field:
        out.append(("hop_field", source.hop_field, True))
    for k, p in source.objects.items():
        out.append((f"objects.{k}", p, False))
    optional = {"event_id": source.event_id, "phase": source.phase,
                "trace_id": source.trace_id, "span_id": source.span_id}  # fmt: skip
    out.extend((key, p, False) for key, p in optional.items() if p)
    for name, spec in source.attributes.items():
        out.append((f"attributes.{name}", spec.path, False))
    return out


def _absent(v: Any) -> bool:
    return v is MISSING or v is None or v == [] or v == ""


def _field_hints(
    source: SourceConfig, records: list[dict[str, Any]], keys: list[str]
) -> list[Hint]:
    out: list[Hint] = []
    total = len(records)
    for role, path, required in _roles(source):
        get = getter(path)
        values = [get(r) for r in records]
        missing = sum(1 for v in values if v is MISSING)
        if missing == total or (required and missing * 2 >= total and missing):
            close = close_fields(path, keys)
            msg = f"no field {path!r} ({role}) in {missing} of {total} records"
            suggestion = None
            if close:
                msg += f"; the records have {_quote_list(close)}"
                suggestion = _setting(role, close[0])
            elif role == "timestamp":
                timely = _time_like_fields(records, keys)
                if timely:
                    msg += f"; fields holding times: {_quote_list(timely)}"
                    suggestion = f'timestamp = "{timely[0]}"'
            out.append(Hint("missing_field", msg, field=path, suggestion=suggestion))
            continue
        if role in ("order_id", "timestamp", "hop_field", "event_id"):
            nested = [v for v in values if isinstance(v, dict)]
            if nested and len(nested) * 2 >= total:
                inner = sorted({k for v in nested for k in v})
                idish = [k for k in inner if "id" in _norm(k)] or inner
                picks = [f"{path}.{k}" for k in idish[:3]]
                out.append(
                    Hint(
                        "not_a_value",
                        f"field {path!r} ({role}) is an object in {len(nested)} of {total} "
                        f"records (keys {', '.join(repr(k) for k in inner[:6])}); did you mean "
                        f"{_quote_list(picks)}?",
                        field=path,
                        suggestion=_setting(role, picks[0]),
                    )
                )
    return out


def _setting(role: str, path: str) -> str:
    """The config line that points ``role`` at ``path``: 'order_id = "order.id"'."""
    table, dot, key = role.partition(".")
    if dot:  # objects.item, attributes.amount
        return f'{table} = {{ {key} = "{path}" }}'
    return f'{role} = "{path}"'


def _time_like_fields(records: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """Key paths whose values all read as times (ISO-8601 text, or epoch numbers of this era)."""
    found = []
    for k in keys:
        get = getter(k)
        vals = [v for v in (get(r) for r in records[:50]) if not _absent(v)]
        if vals and all(_looks_like_time(v) for v in vals):
            found.append(k)
        if len(found) >= 3:
            break
    return found


_Y2000, _Y2100 = 946_684_800_000_000, 4_102_444_800_000_000


def _looks_like_time(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        return False
    if isinstance(v, str) and not any(c in v for c in "-:/.") and not v.strip().isdigit():
        return False
    try:
        us = parse_timestamp(v)
    except TimestampError:
        return False
    return _Y2000 <= us <= _Y2100


def _where_hints(
    source: SourceConfig, records: list[dict[str, Any]], keys: list[str], res: SourceCheck
) -> list[Hint]:
    """A ``where`` that takes no record: its path is spelled differently, or its values are."""
    if not source.where or res.filtered < len(records):
        return []
    out = []
    for path, allowed in source.where.items():
        get = getter(path)
        values = [get(r) for r in records]
        present = [v for v in values if v is not MISSING]
        shown_allowed = ", ".join(orjson.dumps(a).decode() for a in allowed)
        if not present:
            close = close_fields(path, keys)
            msg = f"where path {path!r} is in none of the {len(records)} records"
            if close:
                msg += f"; the records have {_quote_list(close)}"
            out.append(
                Hint(
                    "missing_field",
                    msg,
                    field=path,
                    suggestion=f'where = {{ "{close[0]}" = … }}' if close else None,
                )
            )
            continue
        seen = Counter(orjson.dumps(v, default=str).decode() for v in present)
        top = ", ".join(f"{v} ({n})" for v, n in seen.most_common(5))
        out.append(
            Hint(
                "where_takes_nothing",
                f"where {path} = [{shown_allowed}] takes none of the {len(records)} records; "
                f"their {path!r} values: {top}",
                field=path,
            )
        )
    return out


def _hop_hints(config: Config, source: SourceConfig, records: list[dict[str, Any]]) -> list[Hint]:
    """Hop values that are not declared hops but close to one: a hop_map entry missing."""
    if not source.hop_field:
        return []
    get = getter(source.hop_field)
    hops = list(config.hop_names)
    lower = {h.lower(): h for h in hops}
    unknown: Counter[str] = Counter()
    for r in records:
        v = get(r)
        if _absent(v) or isinstance(v, dict | list):
            continue
        name = str(v)
        name = source.hop_map.get(name, name)
        if name not in hops:
            unknown[name] += 1
    out = []
    for name, n in unknown.most_common(5):
        guess = lower.get(name.lower()) or next(
            iter(difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.7)), None
        )
        if guess is not None:
            guess = lower.get(guess, guess)
        msg = f"{n} record(s) have hop {name!r} (field {source.hop_field!r}), not a declared hop"
        suggestion = None
        if guess:
            msg += f'; map it: hop_map = {{ {orjson.dumps(name).decode()} = "{guess}" }}'
            suggestion = f'hop_map = {{ {orjson.dumps(name).decode()} = "{guess}" }}'
        out.append(Hint("unknown_hop", msg, field=source.hop_field, suggestion=suggestion))
    return out


# -- times -----------------------------------------------------------------------------------

_DATE_ORDERS = (("%d", "%m", "%Y"), ("%m", "%d", "%Y"), ("%Y", "%m", "%d"), ("%d", "%m", "%y"),
                ("%m", "%d", "%y"))  # fmt: skip
_DATES = (
    *(f"{a}{s}{b}{s}{c}" for a, b, c in _DATE_ORDERS for s in (".", "/", "-")),
    *("%d %b %Y", "%d %B %Y", "%b %d %Y", "%b %d, %Y", "%B %d, %Y", "%d-%b-%Y", "%a, %d %b %Y"),
)
_TIMES = (
    "",
    " %H:%M",
    " %H:%M:%S",
    " %H:%M:%S.%f",
    "T%H:%M",
    "T%H:%M:%S",
    ", %H:%M",
    ", %H:%M:%S",
    " %I:%M %p",
    " %I:%M:%S %p",
)
_ZONES = ("", " %z", " %Z")
CANDIDATE_FORMATS = tuple(d + t + z for d in _DATES for t in _TIMES for z in _ZONES if t or not z)


def _parses(value: str, fmt: str) -> datetime | None:
    try:
        return datetime.strptime(value, fmt)
    except ValueError:
        return None


def _swap_day_month(fmt: str) -> str:
    return fmt.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m")


def fitting_formats(values: Sequence[str]) -> list[str]:
    """The candidate strptime formats that read every value."""
    return [f for f in CANDIDATE_FORMATS if all(_parses(v, f) is not None for v in values)]


def _explicit_timezone(config: Config, source: SourceConfig) -> bool:
    """Whether the config file sets a time zone for the source (its own, or the pipeline's);
    the loaded config cannot tell a default 'UTC' from a chosen one."""
    if source.timezone and source.timezone != "UTC":
        return True
    if not config.path:
        return False
    try:
        with open(config.path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return False
    if "timezone" in (data.get("pipeline") or {}):
        return True
    for t in data.get("sources") or []:
        if isinstance(t, dict) and t.get("name") == source.name:
            return "timezone" in t
    return False


def _zoned(v: Any, fmt: str | None) -> bool | None:
    """Whether a time value carries its zone (True), has none (False), or is not a time (None)."""
    if isinstance(v, bool):
        return None
    if fmt is not None and isinstance(v, str | int):
        dt = _parses(str(v).strip(), fmt)
        if dt is not None:
            return dt.tzinfo is not None
    if isinstance(v, int | float):
        return True  # epoch: UTC by definition
    if not isinstance(v, str):
        return None
    s = v.strip()
    if s and s[0].isdigit() and "-" not in s and ":" not in s:
        try:
            float(s)
        except ValueError:
            return None
        return True
    try:
        return datetime.fromisoformat(s).tzinfo is not None
    except ValueError:
        return None


def _time_hints(config: Config, source: SourceConfig, records: list[dict[str, Any]]) -> list[Hint]:
    out: list[Hint] = []
    get = getter(source.timestamp)
    fmt = source.timestamp_format
    values = [v for v in (get(r) for r in records) if not _absent(v)]
    if not values:
        return out
    zoned = [_zoned(v, fmt) for v in values]
    times = [z for z in zoned if z is not None]
    naive = sum(1 for z in times if z is False)
    if naive and not _explicit_timezone(config, source):
        out.append(
            Hint(
                "naive_times",
                f"{naive} of {len(times)} timestamps (field {source.timestamp!r}) have no zone; "
                "the source has no `timezone`, so they are read as UTC — set the zone they are "
                'written in, e.g. timezone = "Europe/Berlin"',
                field=source.timestamp,
                suggestion='timezone = "…"',
            )
        )
    bad = (
        v.strip() for v, z in zip(values, zoned, strict=True) if z is None and isinstance(v, str)
    )
    failing = [v for v in dict.fromkeys(bad) if v][:50]  # distinct, in the order seen
    if failing:
        fits = fitting_formats(failing)
        example = failing[0]
        if fits:
            dm = [f for f in fits if _swap_day_month(f) in fits and _swap_day_month(f) != f]
            if dm:
                a = next(f for f in dm if f.find("%d") < f.find("%m"))
                b = _swap_day_month(a)
                out.append(
                    Hint(
                        "ambiguous_date",
                        f"timestamps like {example!r} (field {source.timestamp!r}) are not "
                        f"ISO-8601 and read both day-first ({a!r}) and month-first ({b!r}): no "
                        "value in the sample has a day above 12; set timestamp_format to the one "
                        "the source writes",
                        field=source.timestamp,
                        suggestion=f'timestamp_format = "{a}"',
                    )
                )
            else:
                what = "read with" if fmt else "are not ISO-8601 or epoch"
                lead = (
                    f"timestamps like {example!r} (field {source.timestamp!r}) do not match "
                    f"timestamp_format {fmt!r}"
                    if fmt
                    else f"timestamps like {example!r} (field {source.timestamp!r}) {what}"
                )
                out.append(
                    Hint(
                        "timestamp_format",
                        f'{lead}; set timestamp_format = "{fits[0]}"',
                        field=source.timestamp,
                        suggestion=f'timestamp_format = "{fits[0]}"',
                    )
                )
        elif all(_looks_like_text(v) for v in failing):
            out.append(
                Hint(
                    "not_a_time",
                    f"field {source.timestamp!r} (timestamp) holds values like {example!r}, not "
                    "times: is the path right?",
                    field=source.timestamp,
                )
            )
    if fmt and "%d" in fmt and "%m" in fmt:
        swapped = _swap_day_month(fmt)
        texts = sorted(
            {str(v).strip() for v, z in zip(values, zoned, strict=True) if z is not None}
        )[:200]
        pairs = [(_parses(v, fmt), _parses(v, swapped)) for v in texts]
        read = [p for p in pairs if p[0] is not None]
        if read and all(b is not None for _, b in read) and any(a != b for a, b in read):
            first_d = fmt.find("%d") < fmt.find("%m")
            out.append(
                Hint(
                    "ambiguous_date",
                    f"all {len(read)} distinct timestamps read with timestamp_format {fmt!r} also "
                    f"read with {swapped!r} (no day above 12 in the sample): check that the source "
                    f"writes the {'day' if first_d else 'month'} first",
                    field=source.timestamp,
                )
            )
    return out


def _looks_like_text(v: str) -> bool:
    return not any(c.isdigit() for c in v)


def _future_hints(events: list[OrderEvent]) -> list[Hint]:
    if not events:
        return []
    now = time.time_ns() // 1000
    ahead = [e.occurred_at for e in events if e.occurred_at > now + FUTURE_SLACK_US]
    if not ahead:
        return []
    return [
        Hint(
            "future_times",
            f"{len(ahead)} of {len(events)} times are more than a day in the future (latest "
            f"{us_to_iso(max(ahead))}): a day/month mix-up, epoch units or a wrong time zone?",
        )
    ]
