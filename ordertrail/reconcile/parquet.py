"""The window as Parquet, for engines that read files rather than the store (Spark).

``ordertrail export --parquet DIR`` writes the tables the engine stages for a window — ``ev``
(seq, order_id, hop code, phase code, t), ``me`` (seq, "kind:id"), ``li`` (links as of the
window's end) and one table per attribute the rules compare — streamed batch by batch, so
memory stays flat whatever the window's size. ``manifest.json`` says what the files hold: the
window (as_of, lo), the config's fingerprint and hop codes, the sources' watermarks and the
store's last ingest_seq at export time, so a run over the files judges what the store held then.

    DIR/manifest.json
    DIR/ev/part-0.parquet  DIR/me/…  DIR/li/…  DIR/av0/…  (one folder per table)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ordertrail import __version__
from ordertrail.errors import ConfigError
from ordertrail.reconcile.backend import _attr_queries
from ordertrail.reconcile.plan import Plan, compile_plan
from ordertrail.reconcile.runs import last_run
from ordertrail.schemas.config import Config
from ordertrail.schemas.event import us_to_iso
from ordertrail.store import Store
from ordertrail.store import window as w
from ordertrail.store.arrow import Reader

logger = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
ROWS_PER_GROUP = 1 << 20  # rows buffered per Parquet row group (a few tens of MB at most)

SCHEMAS: dict[str, pa.Schema] = {
    "ev": pa.schema([("seq", pa.int64()), ("order_id", pa.string()), ("hop", pa.int32()),
                     ("phase", pa.int32()), ("t", pa.int64())]),
    "me": pa.schema([("seq", pa.int64()), ("obj", pa.string())]),
    "li": pa.schema([("obj", pa.string()), ("other", pa.string()), ("order_id", pa.string())]),
    "attr": pa.schema([("seq", pa.int64()), ("t", pa.int64()), ("src", pa.string()),
                       ("eid", pa.string()), ("v", pa.string())]),
}  # fmt: skip


@dataclass
class Manifest:
    """What an export holds. ``attributes``: per compared attribute (role, key) its table."""

    as_of: int
    lo: int
    config: str  # the config's fingerprint
    hops: list[str]  # hop codes of ev.hop
    attributes: list[dict[str, str]]
    rows: dict[str, int]
    max_ingest_seq: int
    watermarks: dict[str, int | None]
    pipeline: str = ""
    # the (source, event_id) stored as max_ingest_seq: which store the export is of
    last_event: list[str] | None = None
    exported_at: str | None = None
    ordertrail: str = __version__
    format: int = FORMAT
    directory: str = field(default="", repr=False)

    def table_path(self, name: str) -> str:
        return str(Path(self.directory) / name)

    def attr_tables(self) -> dict[tuple[str, str], str]:
        return {(a["role"], a["key"]): a["table"] for a in self.attributes}


def attribute_keys(plan: Plan) -> list[tuple[str, str]]:
    """The (role, key) of every attribute table the engine stages, in staging order."""
    return [key for key, _ in _attr_queries(plan, "sqlite", 0, 0, None, False)]


def export_window(
    store: Store,
    config: Config,
    directory: str | Path,
    *,
    as_of: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Manifest:
    """Write the window ending at ``as_of`` (µs; default now) under ``directory``.

    The folder must be empty or hold an earlier export (which is replaced); the manifest is
    written last, so an interrupted export is never taken for a complete one."""
    out = Path(directory)
    _prepare(out)
    as_of = as_of if as_of is not None else time.time_ns() // 1000
    lo = as_of - config.pipeline.lookback
    plan = compile_plan(config)
    d = store.dialect
    watermarks = store.watermarks()
    max_seq = store.max_ingest_seq()
    with store.engine.connect() as conn:
        total = w.count_window(conn, lo, as_of)
    scan = total * 3 > max_seq  # as load_db: most events in the window -> scan, not the index
    queries = _attr_queries(plan, d, lo, as_of, None, scan)
    names = ["ev", "me", "li"] + [f"av{k}" for k in range(len(queries))]
    sqls: list[str | None] = [*w.staged_window_tables(d, plan.names, lo, as_of, scan, max_seq)]
    sqls += [q for _, q in queries]
    schemas = [SCHEMAS["ev"], SCHEMAS["me"], SCHEMAS["li"]] + [SCHEMAS["attr"]] * len(queries)
    rows: dict[str, int] = {}
    runnable = [i for i, q in enumerate(sqls) if q is not None]
    for i, q in enumerate(sqls):
        if q is None:  # nothing can match: an empty table all the same
            rows[names[i]] = _write(out / names[i], schemas[i], iter(()))
    done = [0]

    def consume(k: int, reader: Any) -> None:
        i = runnable[k]
        if progress:
            progress(f"writing {names[i]}", done[0], len(runnable))
        rows[names[i]] = _write(out / names[i], schemas[i], iter(reader))
        done[0] += 1

    with Reader(store.engine, total) as reader:
        reader.stream([q for q in sqls if q is not None], consume)
    if progress:
        progress("done", len(runnable), len(runnable))
    manifest = Manifest(
        as_of=as_of, lo=lo, config=config.fingerprint, hops=list(plan.names),
        attributes=[{"role": r, "key": k, "table": f"av{j}"}
                    for j, ((r, k), _) in enumerate(queries)],
        rows={n: rows[n] for n in names}, max_ingest_seq=max_seq, watermarks=watermarks,
        last_event=store.event_at_seq(max_seq) if max_seq else None,
        pipeline=config.pipeline.name, exported_at=us_to_iso(time.time_ns() // 1000),
        directory=str(out),
    )  # fmt: skip
    body = {k: v for k, v in asdict(manifest).items() if k != "directory"}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(out / MANIFEST)
    logger.info("exported %s rows of the window to %s", sum(rows.values()), out)
    return manifest


def _prepare(out: Path) -> None:
    """An empty folder, or one holding an earlier export, which is removed: its manifest first,
    then its tables. Only what an export writes is removed, and only when the folder holds
    nothing else: anything not an export's (another file, a file in a table's folder, a link,
    another tool's ``manifest.json``) is refused before anything is touched."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--parquet {out}: not a folder")
    out.mkdir(parents=True, exist_ok=True)
    entries = sorted(out.iterdir())
    if not entries:
        return
    tables = [e for e in entries if e.name in {"ev", "me", "li"} or _is_attr_dir(e.name)]
    foreign = [e.name for e in entries if e not in tables and e.name not in {MANIFEST, MANIFEST + ".tmp"}]  # fmt: skip
    for e in entries:
        if e.name in {MANIFEST, MANIFEST + ".tmp"} and (e.is_symlink() or not e.is_file()):
            foreign.append(e.name)
    for e in tables:
        if e.is_symlink() or not e.is_dir():
            foreign.append(e.name)
        else:
            foreign += [f"{e.name}/{f.name}" for f in sorted(e.iterdir())
                        if f.name != "part-0.parquet" or f.is_symlink() or not f.is_file()]  # fmt: skip
    if (out / MANIFEST).exists() and not foreign:
        try:
            read_manifest(out)
        except ConfigError:
            foreign.append(f"{MANIFEST}, not an ordertrail export's")
    if foreign:
        shown = ", ".join(sorted(foreign)[:3])
        raise ConfigError(
            f"--parquet {out}: the folder holds other files ({shown}); give an empty folder "
            "or one an earlier export wrote"
        )
    for name in (MANIFEST, MANIFEST + ".tmp"):
        (out / name).unlink(missing_ok=True)
    for e in tables:
        (e / "part-0.parquet").unlink(missing_ok=True)
        e.rmdir()


def _is_attr_dir(name: str) -> bool:
    return name.startswith("av") and name[2:].isdigit()


def _write(folder: Path, schema: pa.Schema, batches: Any) -> int:
    """Batches into one Parquet file, cast to ``schema``, in row groups of ~ROWS_PER_GROUP."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    buf: list[pa.RecordBatch] = []
    held = 0
    with pq.ParquetWriter(folder / "part-0.parquet", schema, compression="zstd") as out:
        for b in batches:
            if b.num_rows == 0:
                continue
            buf.append(_cast(b, schema))
            held += b.num_rows
            if held >= ROWS_PER_GROUP:
                out.write_table(pa.Table.from_batches(buf, schema))
                n += held
                buf, held = [], 0
        if buf:
            out.write_table(pa.Table.from_batches(buf, schema))
            n += held
    return n


def _cast(b: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A batch with the schema's names and types (readers name and type columns their way)."""
    cols = [b.column(i).cast(f.type) for i, f in enumerate(schema)]
    return pa.RecordBatch.from_arrays(cols, schema=schema)


def read_manifest(directory: str | Path) -> Manifest:
    """The manifest of an export, or a ConfigError that says what is wrong with the folder."""
    path = Path(directory) / MANIFEST
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"--parquet {directory}: no {MANIFEST} (write one with 'ordertrail export --parquet "
            f"{directory}')"
        ) from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"--parquet {directory}: unreadable {MANIFEST}: {e}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ConfigError(
            f"--parquet {directory}: {MANIFEST} is not an export of format {FORMAT}; export again"
        )
    try:
        body.pop("directory", None)
        return Manifest(**body, directory=str(directory))
    except TypeError as e:
        raise ConfigError(f"--parquet {directory}: {MANIFEST}: {e}") from None


def check_manifest(
    manifest: Manifest, config: Config, plan: Plan, as_of: int | None, directory: str | Path,
    store: Store | None = None,
) -> None:  # fmt: skip
    """The export must be of this config, of the window asked for and, when ``store`` is
    given (the store the run is recorded in), of that store and no older than its last run."""
    if manifest.config != config.fingerprint or manifest.hops != list(plan.names):
        raise ConfigError(
            f"--parquet {directory} was exported with another config (fingerprint "
            f"{manifest.config}, this one {config.fingerprint}); export again"
        )
    if [(a["role"], a["key"]) for a in manifest.attributes] != attribute_keys(plan):
        raise ConfigError(f"--parquet {directory}: its attribute tables do not match the config")
    if as_of is not None and as_of != manifest.as_of:
        raise ConfigError(
            f"--parquet {directory} holds the window as of {us_to_iso(manifest.as_of)}, not "
            f"{us_to_iso(as_of)}; export again with --as-of, or leave --as-of out"
        )
    if store is not None:
        _check_store(manifest, store, directory)


def _check_store(manifest: Manifest, store: Store, directory: str | Path) -> None:
    """A run from an export is recorded in ``store``: its findings replace the store's, so the
    export must be of this store, and hold every event the store's last run saw (a run from
    an older export reopens what later events settled)."""
    seq = manifest.max_ingest_seq
    other = f"--parquet {directory} was exported from another store"
    if seq > store.max_ingest_seq():
        raise ConfigError(f"{other}: it holds events up to ingest_seq {seq:,}, this store fewer")
    if manifest.last_event is not None:
        here = store.event_at_seq(seq)
        if here is not None and here != list(manifest.last_event):
            raise ConfigError(
                f"{other}: its last event ({' '.join(manifest.last_event)}) is not this "
                f"store's event {seq:,} ({' '.join(here)})"
            )
    with store.engine.connect() as conn:
        last = last_run(conn, None)
    if last is not None and int(last["max_ingest_seq"]) > seq:
        raise ConfigError(
            f"--parquet {directory} is older than this store's last run (run {last['id']} saw "
            f"events up to ingest_seq {int(last['max_ingest_seq']):,}, the export up to "
            f"{seq:,}): a run from it would reopen what later events settled; export again"
        )
