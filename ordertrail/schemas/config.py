"""The pipeline config (``ordertrail.toml``): loading, validation and the hop graph.

Every problem is reported as a :class:`ConfigError` naming the file, the key and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ordertrail.errors import ConfigError
from ordertrail.schemas.durations import US, format_duration, parse_duration

ENV_DB_URL = "ORDERTRAIL_DB_URL"
ENV_CONFIG = "ORDERTRAIL_CONFIG"
DEFAULT_CONFIG_FILE = "ordertrail.toml"
DEFAULT_DB_URL = "sqlite:///ordertrail.db"
SOURCE_KINDS = ("file", "kafka", "otlp")
FILE_FORMATS = ("jsonl", "csv")

_TOP_KEYS = {"store", "pipeline", "objects", "hops", "checks", "sources", "notify", "engine"}
_ENGINE_KEYS = {"memory", "part_orders", "spark"}
MIN_ENGINE_MEMORY = 64 * 1000**2  # below this DuckDB cannot even stage a small window
MAX_ENGINE_MEMORY = 1000000 * 1000**4  # what DuckDB's memory_limit takes
_STORE_KEYS = {"url", "retention", "prune_after_ingest"}
_PIPELINE_KEYS = {"name", "clock_skew", "lookback", "timezone", "personal", "searchable"}
_HOP_KEYS = {
    "name",
    "next",
    "next_any",
    "within",
    "unique",
    "unique_by",
    "promises",
    "promise_within",
    "closes",
    "each",
    "when",
}
_OBJECT_KEYS = {"name", "via"}
_CHECK_KEYS = {"field", "hops", "tolerance", "ignore_case"}
_ATTRIBUTE_KEYS = {"path", "scale", "case", "strip_prefix"}
_SOURCE_COMMON = {
    "name",
    "kind",
    "hop",
    "hop_field",
    "hop_map",
    "order_id",
    "timestamp",
    "event_id",
    "phase",
    "phase_map",
    "attributes",
    "trace_id",
    "span_id",
    "timezone",
    "objects",
    "where",
    "timestamp_format",
    "max_quarantine",
}
_SOURCE_KIND_KEYS = {
    "file": {"path", "format", "delimiter"},
    "kafka": {
        "topic",
        "topics",
        "topic_pattern",
        "bootstrap_servers",
        "group_id",
        "start",
        "options",
        "batch_size",
        "poll_timeout",
    },
    "otlp": {
        "listen",
        "batch_size",
        "max_body",
        "max_decompressed_body",
        "max_concurrency",
        "read_timeout",
        "token",
        "token_env",
        "tls_cert",
        "tls_key",
    },
}
DEFAULT_OTLP_LISTEN = "127.0.0.1:4318"
KIB, MIB, GIB = 1024, 1024**2, 1024**3


# A ``when`` condition: attribute -> the values it may have (compared as JSON values)
Condition = Mapping[str, tuple[Any, ...]]


@dataclass(frozen=True)
class ObjectKind:
    """Ids other systems use for an order or a part of it (items, parcels, tracking numbers)."""

    name: str
    via: str | None = None  # belongs to the orders of the ``via`` objects it is linked with


@dataclass(frozen=True)
class Hop:
    """A step of the pipeline that orders pass through."""

    name: str
    next: tuple[str, ...] = ()
    within: Mapping[str, int] = field(default_factory=dict)  # next / next_any hop -> µs
    unique: bool = False
    promises: tuple[str, ...] = ()
    promise_within: int | None = None  # µs
    closes: bool = False
    next_any: tuple[str, ...] = ()  # at least one of these must follow
    each: str | None = None  # an object kind: every such object of the order must reach it
    unique_by: str | None = None  # duplicates are distinct values of this attribute
    when: Mapping[str, Condition] = field(default_factory=dict)  # next/promised hop -> condition

    @property
    def targets(self) -> tuple[str, ...]:
        """Every hop an edge leads to from here: ``next`` then ``next_any``."""
        return self.next + self.next_any


@dataclass(frozen=True)
class Check:
    """An attribute that must agree across hops."""

    field: str
    hops: tuple[str, ...]
    tolerance: float = 0.0
    ignore_case: bool = False


@dataclass(frozen=True)
class AttributeSpec:
    """How one stored attribute is taken from a record, and transformed on the way."""

    path: str
    scale: float | None = None  # multiply numbers (and numeric strings) by this
    case: str | None = None  # "upper" | "lower"
    strip_prefix: str | None = None


@dataclass(frozen=True)
class SourceConfig:
    """Where events come from and how a raw record maps onto an OrderEvent."""

    name: str
    kind: str
    order_id: str | None
    timestamp: str
    hop: str | None = None
    hop_field: str | None = None
    hop_map: Mapping[str, str] = field(default_factory=dict)
    event_id: str | None = None
    phase: str | None = None
    phase_map: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, AttributeSpec] = field(default_factory=dict)  # stored name -> spec
    trace_id: str | None = None
    span_id: str | None = None
    timezone: str | None = None
    objects: Mapping[str, str] = field(default_factory=dict)  # object kind -> record path
    where: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # path -> allowed values
    timestamp_format: str | None = None  # strptime format, tried before ISO-8601 and epoch
    max_quarantine: float = 0.5  # ingest exits 4 when a run quarantines more than this share
    # file
    path: str | None = None
    base_dir: str | None = None  # relative paths are relative to the config file's folder
    format: str | None = None
    delimiter: str = ","
    # kafka
    topics: tuple[str, ...] = ()
    topic_pattern: str | None = None
    bootstrap_servers: tuple[str, ...] = ()
    group_id: str | None = None
    start: str = "earliest"
    options: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 5000
    poll_timeout: float = 1.0
    # otlp
    listen: str = DEFAULT_OTLP_LISTEN
    max_body: int = 4 * MIB  # bytes of a request body as sent (compressed or not)
    max_decompressed_body: int = 16 * MIB  # bytes of a request body after decompression
    max_concurrency: int = 8  # requests read, decoded and stored at the same time
    read_timeout: float = 30.0  # s to receive one request, headers and body
    token: str | None = field(default=None, repr=False)  # bearer token the exporters must send
    token_env: str | None = None  # ... or the environment variable that holds it
    tls_cert: str | None = None  # PEM certificate chain; with tls_key the receiver speaks HTTPS
    tls_key: str | None = None

    def file_format(self, path: str) -> str:
        """The record format of one file of this source (explicit, else by extension)."""
        if self.format:
            return self.format
        base = path[:-3] if path.endswith(".gz") else path
        return "csv" if base.endswith(".csv") else "jsonl"


@dataclass(frozen=True)
class PipelineSettings:
    name: str = "pipeline"
    clock_skew: int = 120_000_000
    lookback: int = 30 * 86400 * 1_000_000
    timezone: str = "UTC"
    personal: tuple[str, ...] = ()
    searchable: tuple[str, ...] = ()  # attributes given an expression index for search --attr


@dataclass(frozen=True)
class EngineSettings:
    """How reconcile runs: DuckDB's memory budget (``"4GB"``; default half the machine, at most
    8 GB) and the orders judged per hash part (bounds the rules' own arrays)."""

    memory: str | None = None
    part_orders: int | None = None
    # [engine.spark]: where ``reconcile --engine spark`` runs (``master``, default local[2]) and
    # Spark options passed as they are (``spark.executor.memory = "4g"``), as (key, value) text
    spark_master: str | None = None
    spark_conf: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Config:
    """A validated pipeline config, with the hop graph derived from it."""

    pipeline: PipelineSettings
    hops: tuple[Hop, ...]
    checks: tuple[Check, ...] = ()
    sources: tuple[SourceConfig, ...] = ()
    store_url: str | None = None
    path: str | None = None
    objects: tuple[ObjectKind, ...] = ()
    engine: EngineSettings = field(default_factory=EngineSettings)
    notify: tuple[NotifyTarget, ...] = ()  # [[notify]]: webhooks told after reconcile runs
    retention: int | None = None  # [store] retention (µs): what `ordertrail prune` keeps
    prune_after_ingest: bool = False  # [store] prune_after_ingest: prune when ingest ends

    # -- hop graph ---------------------------------------------------------------------------
    @property
    def hop_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hops)

    def hop(self, name: str) -> Hop:
        for h in self.hops:
            if h.name == name:
                return h
        raise KeyError(name)

    @property
    def edges(self) -> tuple[tuple[str, str, int], ...]:
        """Every edge a -> b (``next`` and ``next_any`` members) with its time limit in µs."""
        return tuple((h.name, b, h.within[b]) for h in self.hops for b in h.targets)

    @property
    def entry_hops(self) -> tuple[str, ...]:
        """Hops no edge leads into (closing hops excepted): where an order's trail starts."""
        targets = {b for h in self.hops for b in h.targets}
        return tuple(h.name for h in self.hops if h.name not in targets and not h.closes)

    @property
    def terminal_hops(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hops if not h.targets and not h.closes)

    @property
    def closing_hops(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hops if h.closes)

    @property
    def longest_path(self) -> int:
        """The longest sum of ``within`` along any path of the hop graph (µs)."""
        memo: dict[str, int] = {}
        for h in reversed(self.topological_order):
            hp = self.hop(h)
            memo[h] = max((hp.within[b] + memo[b] for b in hp.targets), default=0)
        return max(memo.values(), default=0)

    @property
    def topological_order(self) -> tuple[str, ...]:
        """Hop names so that every edge points forward (iterative: hop chains may be long)."""
        indeg = {h.name: 0 for h in self.hops}
        for h in self.hops:
            for b in h.targets:
                indeg[b] += 1
        ready = [h.name for h in self.hops if indeg[h.name] == 0]
        out: list[str] = []
        while ready:
            n = ready.pop(0)
            out.append(n)
            for b in self.hop(n).targets:
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
        return tuple(out)

    def ancestors(self, name: str) -> set[str]:
        """Hops on some path leading to ``name`` (not ``name`` itself)."""
        parents: dict[str, set[str]] = {h.name: set() for h in self.hops}
        for a, b, _ in self.edges:
            parents[b].add(a)
        seen: set[str] = set()
        stack = list(parents[name])
        while stack:
            p = stack.pop()
            if p not in seen:
                seen.add(p)
                stack.extend(parents[p])
        return seen

    def descendants(self, name: str) -> set[str]:
        """Hops on some path after ``name`` (not ``name`` itself)."""
        seen: set[str] = set()
        stack = list(self.hop(name).targets)
        while stack:
            c = stack.pop()
            if c not in seen:
                seen.add(c)
                stack.extend(self.hop(c).targets)
        return seen

    def object_kind(self, name: str) -> ObjectKind:
        for o in self.objects:
            if o.name == name:
                return o
        raise KeyError(name)

    @property
    def object_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.objects)

    def group_each(self, hop: Hop) -> str | None:
        """The ``each`` kind shared by the members of a hop's ``next_any`` group."""
        return self.hop(hop.next_any[0]).each if hop.next_any else None

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f"unknown source {name!r} (known: {known})", path=self.path)

    def sources_feeding(self, hop: str) -> tuple[str, ...]:
        """Sources that can produce events for ``hop`` (a hop_field source can feed any hop)."""
        return tuple(s.name for s in self.sources if s.hop == hop or s.hop is None)

    @property
    def fingerprint(self) -> str:
        """Hash of everything that affects classification (hops, objects, checks, settings)."""
        from dataclasses import asdict

        blob = json.dumps(
            {
                "hops": [asdict(h) for h in self.hops],
                "objects": [asdict(o) for o in self.objects],
                "checks": [asdict(c) for c in self.checks],
                "skew": self.pipeline.clock_skew,
                "lookback": self.pipeline.lookback,
                "sources": {s.name: s.hop for s in self.sources},
            },
            sort_keys=True,
            default=list,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# -- loading ---------------------------------------------------------------------------------


def find_config_path(explicit: str | None = None) -> Path | None:
    """The config file to use: --config, then $ORDERTRAIL_CONFIG, then ./ordertrail.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    p = Path(DEFAULT_CONFIG_FILE)
    return p if p.exists() else None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", path=str(p)) from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); save the "
            "file as UTF-8",
            path=str(p),
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file: {e.strerror}", path=str(p)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML: {e}", path=str(p)) from None
    cfg = parse_config(data, path=str(p))
    if (
        cfg.store_url
        and cfg.store_url.startswith("sqlite:///")
        and not cfg.store_url.startswith("sqlite:////")
    ):
        # a relative SQLite path in a config file is relative to that file
        rel = cfg.store_url[len("sqlite:///") :]
        if rel and rel != ":memory:":
            abs_path = (p.parent / rel).resolve()
            object.__setattr__(cfg, "store_url", f"sqlite:///{abs_path}")
    base = str(p.parent.resolve())
    for s in cfg.sources:
        object.__setattr__(s, "base_dir", base)
    return cfg


def _as_given(value: Any) -> str:
    """A duration as the config wrote it (format_duration rounds to two units)."""
    return value if isinstance(value, str) else format_duration(value * US)


class _Reader:
    """Typed access to one TOML table with errors that name the key."""

    def __init__(self, data: Mapping[str, Any], prefix: str, path: str | None):
        self.data = data
        self.prefix = prefix
        self.path = path

    def key(self, k: str) -> str:
        return f"{self.prefix}.{k}" if self.prefix else k

    def fail(self, k: str, msg: str) -> ConfigError:
        return ConfigError(msg, path=self.path, key=self.key(k))

    def check_keys(self, allowed: set[str]) -> None:
        for k in self.data:
            if k not in allowed:
                hint = _closest(k, allowed)
                raise self.fail(k, "unknown key" + (f" (did you mean {hint!r}?)" if hint else ""))

    def text(self, k: str, default: Any = None, required: bool = False) -> Any:
        v = self.data.get(k, None)
        if v is None:
            if required:
                raise self.fail(k, "required")
            return default
        if not isinstance(v, str) or not v.strip():
            raise self.fail(k, f"must be a non-empty string, not {v!r}")
        return v

    def flag(self, k: str, default: bool = False) -> bool:
        v = self.data.get(k, default)
        if not isinstance(v, bool):
            raise self.fail(k, f"must be true or false, not {v!r}")
        return v

    def str_list(self, k: str) -> tuple[str, ...]:
        v = self.data.get(k, [])
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise self.fail(k, f"must be a list of strings, not {v!r}")
        return tuple(v)

    def str_map(self, k: str) -> dict[str, str]:
        v = self.data.get(k, {})
        if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
            raise self.fail(k, f"must be a table of strings, not {v!r}")
        return dict(v)

    def duration(self, k: str, default: Any = None, required: bool = False) -> Any:
        v = self.data.get(k)
        if v is None:
            if required:
                raise self.fail(k, "required")
            return default
        try:
            return parse_duration(v)
        except ValueError as e:
            raise self.fail(k, str(e)) from None

    def number(self, k: str, default: float) -> float:
        v = self.data.get(k, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < float("inf"):
            raise self.fail(k, f"must be a non-negative finite number, not {v!r}")
        return float(v)


def _closest(word: str, options: set[str] | tuple[str, ...]) -> str | None:
    import difflib

    m = difflib.get_close_matches(word, list(options), n=1)
    return m[0] if m else None


def _tables(data: Mapping[str, Any], key: str, path: str | None) -> list[dict[str, Any]]:
    v = data.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise ConfigError(f"must be an array of tables ([[{key}]])", path=path, key=key)
    return v


def parse_config(data: Mapping[str, Any], path: str | None = None) -> Config:
    """Validate a parsed TOML document into a :class:`Config`."""
    top = _Reader(data, "", path)
    top.check_keys(_TOP_KEYS)

    store = data.get("store", {})
    if not isinstance(store, dict):
        raise top.fail("store", "must be a table")
    sr = _Reader(store, "store", path)
    sr.check_keys(_STORE_KEYS)
    store_url = sr.text("url")

    pl = data.get("pipeline", {})
    if not isinstance(pl, dict):
        raise top.fail("pipeline", "must be a table")
    pr = _Reader(pl, "pipeline", path)
    pr.check_keys(_PIPELINE_KEYS)
    tz = pr.text("timezone", "UTC")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise pr.fail("timezone", f"unknown time zone {tz!r}") from None
    settings = PipelineSettings(
        name=pr.text("name", "pipeline"),
        clock_skew=pr.duration("clock_skew", 120_000_000),
        lookback=pr.duration("lookback", 30 * 86400 * 1_000_000),
        timezone=tz,
        personal=pr.str_list("personal"),
        searchable=pr.str_list("searchable"),
    )
    if settings.lookback <= 0:
        raise pr.fail("lookback", "must be longer than zero")
    retention = sr.duration("retention")
    if retention is not None and retention < settings.lookback:
        raise sr.fail(
            "retention",
            f"must be at least the pipeline's lookback ({format_duration(settings.lookback)}), "
            f"not {_as_given(sr.data.get('retention'))}",
        )
    prune_after_ingest = sr.flag("prune_after_ingest")
    if prune_after_ingest and retention is None:
        raise sr.fail("prune_after_ingest", "needs [store] retention")

    objects = _parse_objects(_tables(data, "objects", path), path)
    hops = _parse_hops(_tables(data, "hops", path), path, [o.name for o in objects])
    names = [h.name for h in hops]
    checks = _parse_checks(_tables(data, "checks", path), names, path)
    sources = _parse_sources(
        _tables(data, "sources", path), names, path, settings.timezone, [o.name for o in objects]
    )
    notify = _parse_notify(_tables(data, "notify", path), path)
    return Config(
        settings, tuple(hops), tuple(checks), tuple(sources), store_url, path, tuple(objects),
        engine=_parse_engine(data, path), notify=tuple(notify), retention=retention,
        prune_after_ingest=prune_after_ingest,
    )  # fmt: skip


def _parse_engine(data: Mapping[str, Any], path: str | None) -> EngineSettings:
    raw = data.get("engine", {})
    if not isinstance(raw, dict):
        raise ConfigError("must be a table", path=path, key="engine")
    r = _Reader(raw, "engine", path)
    r.check_keys(_ENGINE_KEYS)
    mem = r.text("memory")
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", mem or "")
    if mem is not None and m is None:
        raise r.fail("memory", f"must be a size such as '4GB' or '512MB', not {mem!r}")
    if m is not None:
        unit = m.group(2)
        scale = (1024 if "i" in unit else 1000) ** ("KMGT".index(unit[0]) + 1)
        size = float(m.group(1)) * scale
        if size < MIN_ENGINE_MEMORY:
            raise r.fail("memory", f"must be at least 64MB (DuckDB's working room), not {mem!r}")
        if size > MAX_ENGINE_MEMORY:  # DuckDB counts its limit in 64-bit bytes
            raise r.fail("memory", f"must be at most 1000000TB (DuckDB's limit), not {mem!r}")
    po = raw.get("part_orders")
    if po is not None and (isinstance(po, bool) or not isinstance(po, int) or po < 1):
        raise r.fail("part_orders", f"must be a positive integer, not {po!r}")
    master, conf = _parse_spark(raw.get("spark", {}), path)
    return EngineSettings(mem.strip() if mem else None, po, master, conf)


_SPARK_MASTER = re.compile(
    r"local(\[(\*|[1-9]\d*)(,[1-9]\d*)?\])?|local-cluster\[[1-9]\d*,[1-9]\d*,[1-9]\d*\]"
    r"|yarn|spark://[^\s/]+(:\d+)?(,[^\s/]+(:\d+)?)*|k8s://\S+"
)


def spark_master_problem(master: str) -> str | None:
    """Why Spark would refuse this master URL (None: it has the form of one): said before a
    JVM starts, in one line, instead of the JVM's stack trace."""
    if _SPARK_MASTER.fullmatch(master.strip()):
        return None
    return (
        f"{master!r} is not a Spark master: local, local[N], local[*], local[N,retries], "
        "spark://HOST:PORT, yarn or k8s://URL"
    )


def _parse_spark(raw: Any, path: str | None) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """``[engine.spark]``: ``master`` and Spark options. Dotted keys may be written bare
    (``spark.executor.memory = "4g"`` is a nested table in TOML): they are joined again."""
    if not isinstance(raw, dict):
        raise ConfigError("must be a table", path=path, key="engine.spark")
    flat: dict[str, Any] = {}

    def walk(prefix: str, d: dict[str, Any]) -> None:
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict):
                walk(key, v)
            else:
                flat[key] = v

    walk("", raw)
    r = _Reader(flat, "engine.spark", path)
    master = r.text("master")
    if master is not None and (problem := spark_master_problem(master)):
        raise r.fail("master", problem)
    conf: list[tuple[str, str]] = []
    for k, v in flat.items():
        if k == "master":
            continue
        if not k.startswith("spark."):
            raise ConfigError(
                "unknown key (Spark options start with 'spark.', e.g. spark.executor.memory)",
                path=path, key=f"engine.spark.{k}",
            )  # fmt: skip
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, int | float) and math.isfinite(v):
            v = str(v)
        if not isinstance(v, str):
            raise ConfigError(
                f"must be a string, number or boolean, not {v!r}", path=path,
                key=f"engine.spark.{k}",
            )  # fmt: skip
        conf.append((k, v))
    return (master.strip() if master else None), tuple(sorted(conf))


def _parse_objects(tables: list[dict[str, Any]], path: str | None) -> list[ObjectKind]:
    out: list[ObjectKind] = []
    for i, t in enumerate(tables):
        r = _Reader(t, f"objects[{i}]", path)
        r.check_keys(_OBJECT_KEYS)
        name = r.text("name", required=True)
        r.prefix = f"objects[{i}] ({name})"
        if ":" in name:
            raise r.fail("name", f"{name!r}: an object kind cannot hold ':' (ids show as kind:id)")
        if any(o.name == name for o in out):
            raise r.fail("name", f"duplicate object kind {name!r}")
        out.append(ObjectKind(name, r.text("via")))
    names = [o.name for o in out]
    for i, o in enumerate(out):
        if o.via is None:
            continue
        key = f"objects[{i}] ({o.name}).via"
        if o.via == o.name:
            raise ConfigError(f"{o.name!r} cannot belong to orders via itself", path=path, key=key)
        if o.via not in names:
            hint = _closest(o.via, tuple(names))
            extra = f" (did you mean {hint!r}?)" if hint else ""
            raise ConfigError(f"unknown object kind {o.via!r}{extra}", path=path, key=key)
        seen = [o.name]
        via: str | None = o.via
        while via is not None:
            if via in seen:
                cyc = " -> ".join([*seen, via])
                raise ConfigError(f"cycle in via: {cyc}", path=path, key=key)
            seen.append(via)
            via = next(x.via for x in out if x.name == via)
    return out


def _parse_when(
    r: _Reader, raw: Any, targets: tuple[str, ...], promises: tuple[str, ...]
) -> dict[str, Condition]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise r.fail("when", "must be a table: next or promised hop -> { attribute = value(s) }")
    out: dict[str, Condition] = {}
    for hop, cond in raw.items():
        if hop not in targets and hop not in promises:
            raise r.fail(f"when.{hop}", f"{hop!r} is not in next, next_any or promises")
        if not isinstance(cond, dict) or not cond:
            raise r.fail(f"when.{hop}", "must be a table of attribute = value or [values]")
        c: dict[str, tuple[Any, ...]] = {}
        for attr, v in cond.items():
            vals = tuple(v) if isinstance(v, list) else (v,)
            if not vals or not all(isinstance(x, str | int | float | bool) for x in vals):
                raise r.fail(
                    f"when.{hop}.{attr}", f"must be a value or a list of values, not {v!r}"
                )
            c[attr] = vals
        out[hop] = c
    return out


def _parse_hops(
    tables: list[dict[str, Any]], path: str | None, object_kinds: list[str]
) -> list[Hop]:
    if not tables:
        raise ConfigError("at least one [[hops]] entry is required", path=path, key="hops")
    raw: list[tuple[_Reader, Hop]] = []
    seen: set[str] = set()
    for i, t in enumerate(tables):
        r = _Reader(t, f"hops[{i}]", path)
        r.check_keys(_HOP_KEYS)
        name = r.text("name", required=True)
        r.prefix = f"hops[{i}] ({name})"
        if name in seen:
            raise r.fail("name", f"duplicate hop name {name!r}")
        if "|" in name:
            raise r.fail("name", f"{name!r}: a hop name cannot hold '|' (it joins next_any groups)")
        seen.add(name)
        nxt = r.str_list("next")
        if len(set(nxt)) != len(nxt):
            raise r.fail("next", "names a hop twice")
        nxt_any = r.str_list("next_any")
        if len(set(nxt_any)) != len(nxt_any):
            raise r.fail("next_any", "names a hop twice")
        both = set(nxt) & set(nxt_any)
        if both:
            raise r.fail("next_any", f"{sorted(both)[0]!r} is in next as well")
        if len(nxt_any) == 1:
            raise r.fail("next_any", "needs two or more hops (one hop that must follow is next)")
        targets = nxt + nxt_any
        within_raw = t.get("within")
        within: dict[str, int] = {}
        if targets:
            if within_raw is None:
                which = " and ".join(k for k, v in (("next", nxt), ("next_any", nxt_any)) if v)
                raise r.fail("within", f"required when {which} is set (how long until each)")
            if isinstance(within_raw, dict):
                for b in targets:
                    if b not in within_raw:
                        raise r.fail("within", f"no time limit for next hop {b!r}")
                for b, v in within_raw.items():
                    if b not in targets:
                        raise r.fail(f"within.{b}", f"{b!r} is not in next or next_any")
                    try:
                        within[b] = parse_duration(v)
                    except ValueError as e:
                        raise r.fail(f"within.{b}", str(e)) from None
            else:
                d = r.duration("within")
                within = dict.fromkeys(targets, d)
        elif within_raw is not None:
            raise r.fail("within", "set, but the hop has no next hops")
        promises = r.str_list("promises")
        pw = r.duration("promise_within")
        if promises and pw is None:
            raise r.fail("promise_within", "required when promises is set")
        if pw is not None and not promises:
            raise r.fail("promise_within", "set, but the hop promises nothing")
        closes = r.flag("closes")
        if closes and (targets or promises):
            raise r.fail("closes", "a closing hop ends the order; it cannot have next or promises")
        each = r.text("each")
        if each is not None:
            if each not in object_kinds:
                hint = _closest(each, tuple(object_kinds))
                extra = f" (did you mean {hint!r}?)" if hint else ""
                declared = "" if object_kinds else " (declare it in [[objects]])"
                raise r.fail("each", f"unknown object kind {each!r}{extra}{declared}")
            if closes:
                raise r.fail("each", "a closing hop closes the whole order; it cannot have each")
        unique_by = r.text("unique_by")
        unique = r.flag("unique", default=unique_by is not None)
        if unique_by is not None and not unique:
            raise r.fail("unique_by", "set, but unique = false")
        when = _parse_when(r, t.get("when"), targets, promises)
        hop = Hop(name, nxt, within, unique, promises, pw, closes, nxt_any, each, unique_by, when)
        raw.append((r, hop))
    for r, h in raw:
        for k, targets in (("next", h.next), ("next_any", h.next_any), ("promises", h.promises)):
            for b in targets:
                if b not in seen:
                    hint = _closest(b, tuple(seen))
                    extra = f" (did you mean {hint!r}?)" if hint else ""
                    raise r.fail(k, f"unknown hop {b!r}{extra}")
                if b == h.name:
                    raise r.fail(k, f"hop {b!r} points at itself")
    by_name = {h.name: h for _, h in raw}
    for r, h in raw:
        if h.next_any:
            kinds = {by_name[b].each for b in h.next_any}
            if len(kinds) > 1:
                shown = ", ".join(f"{b} ({by_name[b].each or 'no each'})" for b in h.next_any)
                raise r.fail("next_any", f"members must have the same each: {shown}")
    # cycles in next / next_any (iterative: a chain of thousands of hops must not recurse)
    graph = {h.name: h.targets for _, h in raw}
    state: dict[str, int] = {}
    for root in graph:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        trail: list[str] = []
        while stack:
            n, pos = stack.pop()
            if pos == 0:
                state[n] = 1
                trail.append(n)
            if pos < len(graph[n]):
                stack.append((n, pos + 1))
                c = graph[n][pos]
                if state.get(c) == 1:
                    cyc = " -> ".join([*trail[trail.index(c) :], c])
                    raise ConfigError(f"cycle in next: {cyc}", path=path, key="hops")
                if c not in state:
                    stack.append((c, 0))
            else:
                state[n] = 2
                trail.pop()
    hops = [h for _, h in raw]
    for r, h in raw:
        if h.closes and any(h.name in x.targets for x in hops):
            raise r.fail("closes", "a closing hop cannot be the next hop of another hop")
    if not any(not h.closes and not any(h.name in x.targets for x in hops) for h in hops):
        raise ConfigError("no entry hop (every hop is some hop's next)", path=path, key="hops")
    return hops


def _parse_checks(tables: list[dict[str, Any]], names: list[str], path: str | None) -> list[Check]:
    out = []
    for i, t in enumerate(tables):
        r = _Reader(t, f"checks[{i}]", path)
        r.check_keys(_CHECK_KEYS)
        fld = r.text("field", required=True)
        hops = r.str_list("hops")
        if len(hops) < 2:
            raise r.fail("hops", "needs at least two hops to compare")
        for h in hops:
            if h not in names:
                raise r.fail("hops", f"unknown hop {h!r}")
        out.append(Check(fld, hops, r.number("tolerance", 0.0), r.flag("ignore_case")))
    return out


def _parse_attributes(r: _Reader, raw: Any) -> dict[str, AttributeSpec]:
    """``attributes``: a list of paths, or a table name = path | { path, scale, case, strip_prefix }."""
    if isinstance(raw, list) and all(isinstance(a, str) and a for a in raw):
        return {a: AttributeSpec(a) for a in raw}
    if not isinstance(raw, dict):
        raise r.fail("attributes", "must be a list of field paths or a table name = path")
    out: dict[str, AttributeSpec] = {}
    for name, v in raw.items():
        if isinstance(v, str) and v:
            out[name] = AttributeSpec(v)
            continue
        if not isinstance(v, dict):
            raise r.fail(
                f"attributes.{name}",
                "must be a path or a table { path, scale, case, strip_prefix }",
            )
        ar = _Reader(v, r.key(f"attributes.{name}"), r.path)
        ar.check_keys(_ATTRIBUTE_KEYS)
        scale = v.get("scale")
        if scale is not None and (
            isinstance(scale, bool)
            or not isinstance(scale, int | float)
            or not math.isfinite(scale)
        ):
            raise ar.fail("scale", f"must be a number, not {scale!r}")
        case = ar.text("case")
        if case is not None and case not in ("upper", "lower"):
            raise ar.fail("case", f"must be upper or lower, not {case!r}")
        strip = v.get("strip_prefix")
        if strip is not None and (not isinstance(strip, str) or not strip):
            raise ar.fail("strip_prefix", f"must be a non-empty string, not {strip!r}")
        out[name] = AttributeSpec(
            ar.text("path", name), None if scale is None else float(scale), case, strip
        )
    return out


def _parse_where(r: _Reader, raw: Any) -> dict[str, tuple[Any, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise r.fail("where", "must be a table of field path = value or [values]")
    out: dict[str, tuple[Any, ...]] = {}
    for k, v in raw.items():
        vals = tuple(v) if isinstance(v, list) else (v,)
        if not vals or not all(isinstance(x, str | int | float | bool) for x in vals):
            raise r.fail(f"where.{k}", f"must be a value or a list of values, not {v!r}")
        out[k] = vals
    return out


def _parse_sources(
    tables: list[dict[str, Any]],
    names: list[str],
    path: str | None,
    default_tz: str,
    object_kinds: list[str],
) -> list[SourceConfig]:
    out: list[SourceConfig] = []
    seen: set[str] = set()
    for i, t in enumerate(tables):
        r = _Reader(t, f"sources[{i}]", path)
        name = r.text("name", required=True)
        r.prefix = f"sources[{i}] ({name})"
        if name in seen:
            raise r.fail("name", f"duplicate source name {name!r}")
        seen.add(name)
        kind = r.text("kind", required=True)
        if kind not in SOURCE_KINDS:
            raise r.fail("kind", f"must be one of {', '.join(SOURCE_KINDS)}, not {kind!r}")
        r.check_keys(_SOURCE_COMMON | _SOURCE_KIND_KEYS[kind])
        otlp = kind == "otlp"
        hop = r.text("hop")
        hop_field = r.text("hop_field", "order.hop" if otlp and not hop else None)
        if hop and hop_field:
            raise r.fail("hop", "set either hop or hop_field, not both")
        if not hop and not hop_field:
            raise r.fail("hop", "required (a constant hop, or hop_field naming the record field)")
        if hop and hop not in names:
            hint = _closest(hop, tuple(names))
            raise r.fail(
                "hop", f"unknown hop {hop!r}" + (f" (did you mean {hint!r}?)" if hint else "")
            )
        hop_map = r.str_map("hop_map")
        for k, v in hop_map.items():
            if v not in names:
                raise r.fail(f"hop_map.{k}", f"unknown hop {v!r}")
        phase_map = r.str_map("phase_map")
        for k, v in phase_map.items():
            if v not in ("completed", "started", "failed"):
                raise r.fail(f"phase_map.{k}", f"must be completed, started or failed, not {v!r}")
        attrs = _parse_attributes(r, t.get("attributes", []))
        objects = r.str_map("objects")
        for k, v in objects.items():
            if k not in object_kinds:
                hint = _closest(k, tuple(object_kinds))
                extra = f" (did you mean {hint!r}?)" if hint else ""
                declared = "" if object_kinds else " (declare it in [[objects]])"
                raise r.fail(f"objects.{k}", f"unknown object kind {k!r}{extra}{declared}")
            if not v:
                raise r.fail(f"objects.{k}", "must be a field path")
        where = _parse_where(r, t.get("where"))
        tsf = r.text("timestamp_format")
        if tsf is not None and "%" not in tsf:
            raise r.fail(
                "timestamp_format",
                f"must be a strptime format such as '%d.%m.%Y %H:%M', not {tsf!r}",
            )
        _check_paths(r, t, objects, where, attrs)
        mq = t.get("max_quarantine", 0.5)
        if isinstance(mq, bool) or not isinstance(mq, int | float) or not 0 <= mq <= 1:
            raise r.fail("max_quarantine", f"must be a share between 0 and 1, not {mq!r}")
        tz = r.text("timezone", default_tz)
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise r.fail("timezone", f"unknown time zone {tz!r}") from None
        kw: dict[str, Any] = {}
        if kind == "file":
            kw["path"] = r.text("path", required=True)
            fmt = r.text("format")
            if fmt is not None and fmt not in FILE_FORMATS:
                raise r.fail("format", f"must be one of {', '.join(FILE_FORMATS)}, not {fmt!r}")
            kw["format"] = fmt
            # any one character ("\t" too: not r.text, which refuses blank strings); the
            # two-character spelling '\t' (a TOML literal string) means a tab as well
            delim = t.get("delimiter", ",")
            if delim == "\\t":
                delim = "\t"
            if not isinstance(delim, str) or len(delim) != 1 or delim in '"\r\n':
                raise r.fail(
                    "delimiter",
                    f"must be one character other than a quote or a line break, not {delim!r}"
                    ' (a tab is "\\t")',
                )
            kw["delimiter"] = delim
        elif kind == "kafka":
            topics = r.str_list("topics") + ((r.text("topic"),) if "topic" in t else ())
            pattern = r.text("topic_pattern")
            if not topics and not pattern:
                raise r.fail("topic", "required (or topics, or topic_pattern)")
            if topics and pattern:
                raise r.fail("topic_pattern", "set either topic(s) or topic_pattern, not both")
            kw["topics"] = topics
            kw["topic_pattern"] = pattern
            bs = t.get(
                "bootstrap_servers", os.environ.get("ORDERTRAIL_KAFKA_BOOTSTRAP", "localhost:9092")
            )
            if isinstance(bs, str):
                bs = [x.strip() for x in bs.split(",") if x.strip()]
            if not isinstance(bs, list) or not bs or not all(isinstance(x, str) for x in bs):
                raise r.fail("bootstrap_servers", "must be host:port or a list of them")
            kw["bootstrap_servers"] = tuple(bs)
            kw["group_id"] = r.text("group_id", f"ordertrail-{name}")
            start = r.text("start", "earliest")
            if start not in ("earliest", "latest"):
                raise r.fail("start", f"must be earliest or latest, not {start!r}")
            kw["start"] = start
            opts = t.get("options", {})
            if not isinstance(opts, dict):
                raise r.fail("options", "must be a table of kafka-python consumer settings")
            kw["options"] = opts
        if kind in ("kafka", "otlp") and "batch_size" in t:
            bsz = t["batch_size"]
            if isinstance(bsz, bool) or not isinstance(bsz, int) or bsz < 1:
                raise r.fail("batch_size", "must be a positive integer")
            kw["batch_size"] = bsz
        if kind == "kafka" and "poll_timeout" in t:
            kw["poll_timeout"] = r.number("poll_timeout", 1.0)
        if kind == "otlp":
            kw.update(_parse_otlp(r))
        out.append(
            SourceConfig(
                name=name,
                kind=kind,
                order_id=_order_id_path(r, otlp, bool(objects)),
                timestamp=r.text("timestamp", "time" if otlp else None, required=not otlp),
                hop=hop,
                hop_field=hop_field,
                hop_map=hop_map,
                event_id=r.text("event_id", "otlp.event_id" if otlp else None),
                phase=r.text("phase", "order.phase" if otlp else None),
                phase_map=phase_map,
                attributes=attrs,
                trace_id=r.text("trace_id", "trace_id" if otlp else None),
                span_id=r.text("span_id", "span_id" if otlp else None),
                timezone=tz,
                objects=objects,
                where=where,
                timestamp_format=tsf,
                max_quarantine=float(mq),
                **kw,
            )
        )
    return out


def _order_id_path(r: _Reader, otlp: bool, has_objects: bool) -> str | None:
    """A source names orders by ``order_id``, objects by ``objects``, or both; not neither."""
    v = r.text("order_id")
    if v is None and otlp:  # spans may carry order.id besides object ids
        return "order.id"
    if v is None and not has_objects:
        raise r.fail("order_id", "required (or objects, naming ids of items, parcels, shipments)")
    return v


def _check_paths(
    r: _Reader,
    t: Mapping[str, Any],
    objects: Mapping[str, str],
    where: Mapping[str, Any],
    attrs: Mapping[str, AttributeSpec],
) -> None:
    """Field paths are checked when the config loads, naming the key of a malformed one."""
    from ordertrail.schemas.paths import PathError, parse_path

    keys = ("order_id", "timestamp", "hop_field", "event_id", "phase", "trace_id", "span_id")
    paths = {k: t[k] for k in keys if isinstance(t.get(k), str)}
    paths |= {f"objects.{k}": v for k, v in objects.items()}
    paths |= {f"where.{k}": k for k in where}
    paths |= {f"attributes.{k}": a.path for k, a in attrs.items()}
    for key, p in paths.items():
        try:
            parse_path(p)
        except PathError as e:
            raise r.fail(key, str(e)) from None


# -- otlp sources ------------------------------------------------------------------------------

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": KIB, "mib": MIB, "gib": GIB}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what an Authorization header can carry


def parse_size(value: Any) -> int:
    """A size in bytes from ``4MiB``, ``512KiB``, ``4MB`` (decimal units), ``1GiB`` or a bare
    number of bytes. Raises ValueError naming the value when it is not a size."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        return value
    m = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(
            f"not a size: {value!r} (use e.g. 512KiB, 4MiB, 1GiB or a number of bytes)"
        )
    size = float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]
    if not math.isfinite(size):
        raise ValueError(f"too large: {value!r}")
    return int(size)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6-address]:PORT`` for IPv6) -> (host, port). A missing host means
    127.0.0.1; port 0 takes any free port. Raises ValueError naming the value."""
    host, _, port = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise ValueError(f"no address between the brackets in {value!r}")
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, e.g. [::1]:4318, not {value!r}")
    if not (port.isascii() and port.isdigit()) or any(c.isspace() for c in host):
        raise ValueError(
            f"must be HOST:PORT, e.g. 127.0.0.1:4318, 0.0.0.0:4318 or [::1]:4318, not {value!r}"
        )
    if int(port) > 65535:
        raise ValueError(f"port must be between 0 and 65535, not {port}")
    return host or "127.0.0.1", int(port)


def _parse_otlp(r: _Reader) -> dict[str, Any]:
    """The receiver keys of an otlp source: where it listens, its limits, token and TLS."""
    t = r.data
    kw: dict[str, Any] = {"listen": r.text("listen", DEFAULT_OTLP_LISTEN)}
    try:
        parse_listen(kw["listen"])
    except ValueError as e:
        raise r.fail("listen", str(e)) from None
    for key in ("max_body", "max_decompressed_body"):
        if key in t:
            try:
                size = parse_size(t[key])
            except ValueError as e:
                raise r.fail(key, str(e)) from None
            if not KIB <= size <= GIB:
                raise r.fail(key, f"must be between 1KiB and 1GiB, not {t[key]!r}")
            kw[key] = size
    if "max_concurrency" in t:
        n = t["max_concurrency"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1024:
            raise r.fail("max_concurrency", f"must be a whole number from 1 to 1024, not {n!r}")
        kw["max_concurrency"] = n
    if "read_timeout" in t:
        v = t["read_timeout"]
        try:
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"not a duration: {v!r}")
            us = parse_duration(v)
        except (ValueError, OverflowError):
            raise r.fail("read_timeout", f"not a duration: {v!r} (use e.g. 30s or 2m)") from None
        if not 100_000 <= us <= 3600 * 1_000_000:
            raise r.fail("read_timeout", f"must be between 100ms and 1h, not {v!r}")
        kw["read_timeout"] = us / 1_000_000
    token, token_env = r.text("token"), r.text("token_env")
    if token is not None and token_env is not None:
        raise r.fail("token_env", "set either token or token_env, not both")
    if token is not None and not _TOKEN.fullmatch(token):
        raise r.fail("token", "must be printable ASCII without spaces (it is sent in a header)")
    if token_env is not None and not _ENV_NAME.fullmatch(token_env):
        raise r.fail("token_env", f"must name an environment variable, not {token_env!r}")
    kw["token"], kw["token_env"] = token, token_env
    cert, key = r.text("tls_cert"), r.text("tls_key")
    if (cert is None) != (key is None):
        missing = "tls_key" if key is None else "tls_cert"
        raise r.fail(missing, "required with " + ("tls_cert" if key is None else "tls_key"))
    kw["tls_cert"], kw["tls_key"] = cert, key
    return kw


# -- notify ------------------------------------------------------------------------------------

# the finding kinds of DESIGN.md (ordertrail.reconcile.KINDS; a test keeps the two in step —
# the schema layer does not import the engine)
FINDING_KINDS = (
    "vanished", "stalled", "confirmed_unfulfilled", "duplicate", "skipped", "orphan",
    "failed", "mismatch", "out_of_order", "late",
)  # fmt: skip
INCIDENT_KINDS = ("hop_silent", "source_lagging")
NOTIFY_FORMATS = ("json", "slack")
NOTIFY_EVENTS = ("incident_started", "incident_ended")  # the default, and their names
_NOTIFY_KEYS = {
    "name", "url", "url_env", "format", "events", "min_interval", "timeout", "headers",
    "token_env", "base_url",
}  # fmt: skip
_NOTIFY_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token


@dataclass(frozen=True)
class NotifyTarget:
    """A ``[[notify]]`` webhook, told after each reconcile run (see ordertrail.serve.notify)."""

    name: str  # identifies the target in the notifications table
    url: str | None = field(default=None, repr=False)  # may hold a secret (Slack's do)
    url_env: str | None = None  # ... or the environment variable that holds the URL
    format: str = "json"  # json | slack
    events: tuple[str, ...] = NOTIFY_EVENTS  # incident_started[:kind], incident_ended[:kind],
    #                                          finding:<kind>
    min_interval: int = 0  # µs between two messages; what comes sooner waits and goes together
    timeout: float = 5.0  # s for one request
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    token_env: str | None = None  # sent as "Authorization: Bearer <value>"
    base_url: str | None = None  # where `ordertrail serve` is reachable, for links

    def wants(self, event: str, kind: str) -> bool:
        """Whether this target subscribed to ``event`` (incident_started, incident_ended,
        finding) for an incident or finding of ``kind``."""
        if event == "finding":
            return f"finding:{kind}" in self.events
        return event in self.events or f"{event}:{kind}" in self.events


def _http_url(r: _Reader, key: str, value: str) -> str:
    from urllib.parse import urlsplit

    try:
        u = urlsplit(value)
    except ValueError:
        u = None
    if u is None or u.scheme not in ("http", "https") or not u.hostname:
        raise r.fail(key, "must be an http:// or https:// URL")
    return value


def _parse_notify(tables: list[dict[str, Any]], path: str | None) -> list[NotifyTarget]:
    from urllib.parse import urlsplit

    out: list[NotifyTarget] = []
    seen: dict[str, int] = {}
    known_events = [
        *NOTIFY_EVENTS,
        *(f"{e}:{k}" for e in NOTIFY_EVENTS for k in INCIDENT_KINDS),
        *(f"finding:{k}" for k in FINDING_KINDS),
    ]
    for i, t in enumerate(tables):
        r = _Reader(t, f"notify[{i}]", path)
        r.check_keys(_NOTIFY_KEYS)
        url, url_env = r.text("url"), r.text("url_env")
        if (url is None) == (url_env is None):
            raise r.fail("url", "set either url or url_env (an environment variable holding it)")
        if url is not None:
            _http_url(r, "url", url)
        for key in ("url_env", "token_env"):
            v = r.text(key)
            if v is not None and not _NOTIFY_ENV.fullmatch(v):
                raise r.fail(key, f"must name an environment variable, not {v!r}")
        name = r.text("name") or (urlsplit(url).hostname if url else url_env.lower())
        if name in seen:
            raise r.fail(
                "name",
                f"{name!r} is the name of notify[{seen[name]}] too; give each [[notify]] its own "
                "name (it keeps track of what was sent to it)",
            )
        seen[name] = i
        fmt = r.text("format", "json")
        if fmt not in NOTIFY_FORMATS:
            hint = _closest(fmt, NOTIFY_FORMATS)
            raise r.fail(
                "format",
                f"must be one of {', '.join(NOTIFY_FORMATS)}, not {fmt!r}"
                + (f" (did you mean {hint!r}?)" if hint else ""),
            )
        events = r.str_list("events") if "events" in t else NOTIFY_EVENTS
        if not events:
            raise r.fail("events", 'is empty: list what to send, e.g. ["incident_started"]')
        for e in events:
            if e not in known_events:
                hint = _closest(e, tuple(known_events))
                raise r.fail(
                    "events",
                    f"unknown event {e!r}"
                    + (f" (did you mean {hint!r}?)" if hint else "")
                    + "; use incident_started, incident_ended (optionally :hop_silent or "
                    ":source_lagging) or finding:<kind>",
                )
        min_interval = r.duration("min_interval", 0)
        if min_interval < 0:
            raise r.fail("min_interval", "must not be negative")
        timeout = r.duration("timeout", 5_000_000)
        if not 100_000 <= timeout <= 60_000_000:
            raise r.fail("timeout", f"must be between 100ms and 60s, not {t['timeout']!r}")
        headers = r.str_map("headers")
        for k, v in headers.items():
            if not _HEADER_NAME.fullmatch(k):
                raise r.fail("headers", f"{k!r} is not an HTTP header name")
            if any(c in v for c in "\r\n\0"):
                raise r.fail("headers", f"the value of {k!r} must be one line")
        base_url = r.text("base_url")
        if base_url is not None:
            _http_url(r, "base_url", base_url)
        out.append(
            NotifyTarget(
                name=name, url=url, url_env=url_env, format=fmt, events=tuple(events),
                min_interval=min_interval, timeout=timeout / 1_000_000, headers=headers,
                token_env=r.text("token_env"), base_url=base_url.rstrip("/") if base_url else None,
            )
        )  # fmt: skip
    return out
