"""Backups of a SQLite store, a verified restore, and a check of any store (``status --verify``).

A backup FILE is one tar archive (gzip-compressed when its name ends in ``.gz`` or ``.tgz``)
holding two members, in this order:

    manifest.json   format, created_at, ordertrail version, schema revision, row counts per
                    table, max ingest_seq, last run, last checkpoint, SHA-256 of the database
    ordertrail.db   the copy: a plain SQLite file (rollback journal mode), exactly the store

**Consistency.** The copy is made with SQLite's online backup API in *one* step
(``sqlite3.Connection.backup`` with ``pages=-1``): the step runs inside one read transaction of
the source, which in WAL mode is a snapshot — writers (a running ingest) go on appending to the
WAL and are never blocked, and nothing they commit during the copy reaches it. Copying in several
steps would let other processes' commits restart the copy, which under a steady ingest never
finishes. The manifest is computed from the copy itself, which is checked with
``PRAGMA integrity_check`` before the archive is written.

**Restore** verifies everything before it touches the store: the archive and its manifest, the
SHA-256 of the database, ``PRAGMA integrity_check``, that the schema revision is one this
ordertrail knows (an older one is migrated — in the copy, before it replaces anything), and the
row counts and max ingest_seq against the manifest. Then it refuses a store that is newer than
the backup (unless forced) and a store another process has open, and replaces the store by a
rename of the verified copy, which was written and fsynced beside it.

**In use.** SQLite's connections hold POSIX advisory locks while they have a WAL-mode store open
(a shared lock on the database file's lock bytes and on the ``-shm`` file). Restore takes the
same locks exclusively and refuses when it cannot; while it holds them no SQLite connection can
read or write the store, and it removes the old store's ``-wal``, ``-shm`` and ``-journal`` (a
stale WAL would otherwise be replayed into the restored file) and renames the copy into place.
POSIX locks belong to a process: call ``restore_sqlite`` with no connection to the target open
in this process.

Errors:

    OrdertrailError
    ├── BackupError      the backup file cannot be used: unreadable, corrupt, or from a newer
    │                    ordertrail (exit 3)
    ├── BackupRefused    the command would destroy data or needs another tool: FILE exists, the
    │                    store is newer than the backup or unreadable, a PostgreSQL store (exit 2)
    └── StoreError
        └── StoreInUse   another process has the store open (exit 3)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import sqlite3
import struct
import sys
import tarfile
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from ordertrail.errors import ConfigError, OrdertrailError, StoreError
from ordertrail.schemas.event import datetime_to_us, us_to_iso
from ordertrail.store.engine import (
    MIGRATIONS_DIR,
    check_connection,
    make_engine,
    migrate,
    safe_url,
)
from ordertrail.store.writer import order_bucket

logger = logging.getLogger(__name__)

__all__ = [
    "BackupError",
    "BackupRefused",
    "BackupResult",
    "Manifest",
    "RestoreResult",
    "StoreFacts",
    "StoreInUse",
    "Verification",
    "backup_sqlite",
    "known_revisions",
    "pg_backup_hint",
    "pg_restore_hint",
    "read_manifest",
    "restore_sqlite",
    "sqlite_store_path",
    "verify_store",
]

FORMAT = "ordertrail-backup"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DB_NAME = "ordertrail.db"
_CHUNK = 1 << 20
_MANIFEST_MAX = 1 << 20  # a manifest is a few hundred bytes; anything this big is not one

# (stage, done, total): stages "copy", "check", "checksum", "archive" (backup); "read",
# "check", "migrate", "replace" (restore). total is None while the amount is unknown.
Progress = Callable[[str, int, int | None], None]


def _no_progress(stage: str, done: int, total: int | None) -> None:
    pass


class BackupError(OrdertrailError):
    """The backup file cannot be used: unreadable, corrupt, or made by a newer ordertrail."""

    exit_code = 3


class BackupRefused(OrdertrailError):
    """Refused because it would destroy data, or because the store needs another tool."""

    exit_code = 2


class StoreInUse(StoreError):
    """Another process has the store open."""


# -- store facts and the manifest -------------------------------------------------------------


@dataclass(frozen=True)
class StoreFacts:
    """What tells which of two stores is newer: its counts and its latest writes."""

    events: int = 0
    quarantine: int = 0
    max_ingest_seq: int = 0
    last_ingested_at: int | None = None  # µs, of the event with the highest ingest_seq
    last_run_id: int | None = None
    last_run_started_at: int | None = None
    last_checkpoint_at: int | None = None  # µs, the latest checkpoint update (any source)

    def newer_than(self, other: StoreFacts) -> list[str]:
        """Why this store has writes ``other`` lacks (empty: it has none)."""
        why = []
        if self.max_ingest_seq > other.max_ingest_seq:
            why.append(
                f"events up to ingest_seq {self.max_ingest_seq:,} "
                f"(the backup: {other.max_ingest_seq:,})"
            )
        if self.events > other.events:
            why.append(f"{self.events:,} events (the backup: {other.events:,})")
        if self.quarantine > other.quarantine:
            why.append(f"{self.quarantine:,} quarantined (the backup: {other.quarantine:,})")
        if (self.last_run_started_at or 0) > (other.last_run_started_at or 0):
            why.append(
                f"a reconcile run at {us_to_iso(self.last_run_started_at)} "
                f"(the backup's last: {us_to_iso(other.last_run_started_at) or 'none'})"
            )
        if (self.last_checkpoint_at or 0) > (other.last_checkpoint_at or 0):
            why.append(
                f"a source read at {us_to_iso(self.last_checkpoint_at)} "
                f"(the backup's last: {us_to_iso(other.last_checkpoint_at) or 'none'})"
            )
        return why

    def summary(self) -> str:
        return f"{self.events:,} events up to ingest_seq {self.max_ingest_seq:,}"


@dataclass
class Manifest:
    """What a backup holds, written beside the database in the archive and checked on restore."""

    created_at: int  # µs: when the snapshot was taken
    ordertrail_version: str
    sqlite_version: str
    store: str  # the path of the store it was taken from
    schema_revision: str
    tables: dict[str, int]
    facts: StoreFacts
    database_bytes: int
    sha256: str
    format_version: int = FORMAT_VERSION

    def as_dict(self) -> dict[str, Any]:
        f = self.facts
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "created_at": us_to_iso(self.created_at),
            "ordertrail_version": self.ordertrail_version,
            "sqlite_version": self.sqlite_version,
            "store": self.store,
            "schema_revision": self.schema_revision,
            "tables": dict(sorted(self.tables.items())),
            "max_ingest_seq": f.max_ingest_seq,
            "last_ingested_at": us_to_iso(f.last_ingested_at),
            "last_run": None
            if f.last_run_id is None
            else {"id": f.last_run_id, "started_at": us_to_iso(f.last_run_started_at)},
            "last_checkpoint_at": us_to_iso(f.last_checkpoint_at),
            "database": {"name": DB_NAME, "bytes": self.database_bytes, "sha256": self.sha256},
        }

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        """Parse a manifest; ValueError (with the field) for anything malformed."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"no 'format': {FORMAT!r}")
        version = _typed(d, "format_version", int)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"format version {version} is newer than this ordertrail's {FORMAT_VERSION}"
            )
        tables = _typed(d, "tables", dict)
        if not all(isinstance(k, str) and type(v) is int for k, v in tables.items()):
            raise ValueError("'tables' must map table names to counts")
        db = _typed(d, "database", dict)
        run = d.get("last_run")
        if run is not None and not isinstance(run, dict):
            raise ValueError("'last_run' must be an object or null")
        facts = StoreFacts(
            events=tables.get("events", 0),
            quarantine=tables.get("quarantine", 0),
            max_ingest_seq=_typed(d, "max_ingest_seq", int),
            last_ingested_at=_iso_us(d.get("last_ingested_at")),
            last_run_id=None if run is None else _typed(run, "id", int),
            last_run_started_at=None if run is None else _iso_us(run.get("started_at")),
            last_checkpoint_at=_iso_us(d.get("last_checkpoint_at")),
        )
        created = _iso_us(_typed(d, "created_at", str))
        assert created is not None
        return cls(
            created_at=created,
            ordertrail_version=_typed(d, "ordertrail_version", str),
            sqlite_version=str(d.get("sqlite_version", "")),
            store=str(d.get("store", "")),
            schema_revision=_typed(d, "schema_revision", str),
            tables=tables,
            facts=facts,
            database_bytes=_typed(db, "bytes", int),
            sha256=_typed(db, "sha256", str).lower(),
            format_version=version,
        )


def _typed(d: dict[str, Any], key: str, kind: type) -> Any:
    v = d.get(key)
    if type(v) is not kind:
        raise ValueError(f"{key!r} missing or not a {kind.__name__}")
    return v


def _iso_us(v: Any) -> int | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError(f"not a time: {v!r}")
    return datetime_to_us(datetime.fromisoformat(v))


@dataclass
class BackupResult:
    path: Path
    bytes: int  # of the archive
    manifest: Manifest
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "manifest": self.manifest.as_dict(),
        }


@dataclass
class RestoreResult:
    path: Path  # the store
    backup: Path
    manifest: Manifest
    replaced: StoreFacts | None  # the store that was there, None when there was none
    migrated_from: str | None  # the backup's revision when it was older than this ordertrail's
    revision: str
    forced: list[str] = field(default_factory=list)  # what --force overrode
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": str(self.path),
            "backup": str(self.backup),
            "revision": self.revision,
            "migrated_from": self.migrated_from,
            "replaced": None if self.replaced is None else asdict(self.replaced),
            "forced": self.forced,
            "seconds": round(self.seconds, 3),
            "manifest": self.manifest.as_dict(),
        }


# -- URLs -------------------------------------------------------------------------------------


def sqlite_store_path(url: str, command: str, file: str = "FILE") -> Path:
    """The file of a SQLite store URL; BackupRefused (naming the PostgreSQL tool and how to
    call it on ``file``) otherwise."""
    try:
        u = make_url(url)
    except Exception:
        raise ConfigError(f"not a database URL: {url!r}", key="store.url") from None
    backend = u.get_backend_name()
    if backend == "postgresql":
        hint = pg_backup_hint(url, file) if command == "backup" else pg_restore_hint(url, file)
        raise BackupRefused(f"{command}: {hint}")
    if backend != "sqlite":
        raise BackupRefused(f"{command}: works on SQLite stores only, not {backend}")
    db = u.database or ""
    if not db or db == ":memory:" or db.startswith("file:"):
        raise BackupRefused(f"{command}: needs a SQLite store in a file, not {url!r}")
    return Path(db).expanduser()


def _libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=True)


def pg_backup_hint(url: str, file: str) -> str:
    return (
        "the store is PostgreSQL, back it up with pg_dump: "
        f"pg_dump --format=custom --file '{file}' '{_libpq_url(url)}' (README: Backup and restore)"
    )


def pg_restore_hint(url: str, file: str) -> str:
    return (
        "the store is PostgreSQL, restore a pg_dump archive with pg_restore, then check it: "
        f"pg_restore --clean --if-exists --no-owner --dbname '{_libpq_url(url)}' '{file}' && "
        "ordertrail status --verify (README: Backup and restore)"
    )


# -- schema revisions -------------------------------------------------------------------------


@lru_cache(maxsize=1)
def known_revisions() -> tuple[str, ...]:
    """This ordertrail's migrations, oldest first (the last is head)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS_DIR))
    return tuple(reversed([r.revision for r in script.walk_revisions()]))


def _revision_problem(revision: str | None) -> str | None:
    known = known_revisions()
    if revision is None:
        return "no schema revision (no alembic_version row): not an ordertrail store"
    if revision not in known:
        return (
            f"schema revision {revision} is unknown to this ordertrail (its newest is "
            f"{known[-1]}): it was made by a newer ordertrail"
        )
    return None


# -- SQLite helpers ---------------------------------------------------------------------------


def _connect(path: Path, *, timeout: float = 30.0) -> sqlite3.Connection:
    """A connection that never writes: a query_only connection leaves a closed store's file
    and folder exactly as they were (a ``mode=ro`` one would leave empty -wal and -shm)."""
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
    conn.execute("PRAGMA query_only=ON")
    return conn


def _integrity(conn: sqlite3.Connection) -> list[str]:
    """SQLite's integrity_check: [] when "ok", else its messages (at most 100). A page so broken
    that the check cannot run ("database disk image is malformed") is its one message."""
    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as e:
        return [str(e)]
    if rows == ["ok"]:
        return []
    # a row may hold several lines ("*** in database main ***\nOn tree page …"): one message
    # per line, without the header, so an error about them stays one line
    lines = [x.strip() for r in rows for x in r.splitlines()]
    return [x for x in lines if x and not x.startswith("*** in database")] or ["not ok"]


def _table_names(conn: sqlite3.Connection) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]


def _counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {
        t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0])
        for t in _table_names(conn)
    }


def _revision(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])


def _facts(conn: sqlite3.Connection, counts: dict[str, int] | None = None) -> StoreFacts:
    """The store's newness (the tables read exist at every schema revision)."""

    def one(sql: str) -> Any:
        row = conn.execute(sql).fetchone()
        return None if row is None else row[0]

    if counts is None:
        counts = {t: int(one(f"SELECT count(*) FROM {t}")) for t in ("events", "quarantine")}
    seq = one("SELECT max(ingest_seq) FROM events")
    run = conn.execute("SELECT id, started_at FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    return StoreFacts(
        events=counts.get("events", 0),
        quarantine=counts.get("quarantine", 0),
        max_ingest_seq=int(seq or 0),
        last_ingested_at=None
        if seq is None
        else one(f"SELECT ingested_at FROM events WHERE ingest_seq = {int(seq)}"),
        last_run_id=None if run is None else int(run[0]),
        last_run_started_at=None if run is None else int(run[1]),
        last_checkpoint_at=one("SELECT max(updated_at) FROM checkpoints"),
    )


def _sha256(path: Path, progress: Progress, stage: str) -> str:
    h = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            done += len(chunk)
            progress(stage, done, total)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with suppress(OSError):  # not every filesystem lets a folder be fsynced
        _fsync(path)


def _remove(*paths: Path) -> None:
    for p in paths:
        with suppress(FileNotFoundError):
            p.unlink()


def _sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal")]


def _mode_for(target: Path) -> int:
    """Permissions for a file replacing ``target``: its own, else what the umask gives."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        mask = os.umask(0o022)
        os.umask(mask)
        return 0o666 & ~mask


# -- backup -----------------------------------------------------------------------------------


def backup_sqlite(
    store: Path, file: Path, *, force: bool = False, progress: Progress | None = None
) -> BackupResult:
    """Write a consistent copy of the SQLite store at ``store`` into the archive ``file``.

    Safe while other processes write to the store (see the module docstring). The store is only
    read — not migrated, so a backup taken before an upgrade keeps the old schema. ``file`` is
    never overwritten without ``force``; it appears complete or not at all.
    """
    t0 = time.monotonic()
    report = progress or _no_progress
    store, file = Path(store), Path(file)
    if not store.is_file():
        raise StoreError(f"no SQLite store at {store}")
    if file.is_dir():
        raise BackupRefused(f"{file} is a folder; name the backup file")
    if not file.parent.is_dir():
        raise BackupRefused(f"folder of {file} does not exist")
    if file.exists() and file.resolve() in {
        store.resolve(),
        *(p.resolve() for p in _sidecars(store)),
    }:
        raise BackupRefused(f"{file} is the store itself; write the backup elsewhere")
    if file.exists() and not force:
        raise BackupRefused(f"{file} exists; use --force to overwrite it")
    compress = file.name.endswith((".gz", ".tgz"))
    tmp_db = _temp_beside(file, ".db")
    tmp_archive = _temp_beside(file, ".part")
    try:
        created = time.time_ns() // 1000
        report("copy", 0, None)
        _copy(store, tmp_db)
        report("check", 0, None)
        revision, counts, facts = _inspect_copy(store, tmp_db)
        size = tmp_db.stat().st_size
        sha = _sha256(tmp_db, report, "checksum")
        manifest = Manifest(
            created_at=created,
            ordertrail_version=_version(),
            sqlite_version=sqlite3.sqlite_version,
            store=str(store.resolve()),
            schema_revision=revision,
            tables=counts,
            facts=facts,
            database_bytes=size,
            sha256=sha,
        )
        _write_archive(tmp_archive, manifest, tmp_db, compress, report)
        _place(tmp_archive, file, force)
        _fsync_dir(file.parent)
    except OSError as e:
        raise StoreError(f"backup to {file} failed: {e.strerror or e}") from e
    finally:
        _remove(tmp_db, tmp_archive, *_sidecars(tmp_db))
    logger.info("backup of %s to %s: %s", store, file, facts.summary())
    return BackupResult(file, file.stat().st_size, manifest, time.monotonic() - t0)


def _version() -> str:
    from ordertrail import __version__

    return __version__


def _temp_beside(path: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    return Path(name)


def _copy(store: Path, dest: Path) -> None:
    """The online backup, in one step: one read transaction, so one snapshot of the store."""
    try:
        with closing(_connect(store)) as src, closing(sqlite3.connect(str(dest))) as dst:
            src.backup(dst, pages=-1)
            # a self-contained file: no -wal beside it, whatever mode the store is in
            dst.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.DatabaseError as e:
        raise StoreError(f"cannot back up {store}: {e}") from None
    _fsync(dest)


def _inspect_copy(store: Path, copy: Path) -> tuple[str, dict[str, int], StoreFacts]:
    try:
        with closing(_connect(copy)) as conn:
            problems = _integrity(conn)
            if problems:
                raise StoreError(
                    f"the store {store} fails SQLite's integrity check ({problems[0]}"
                    f"{f'; {len(problems) - 1} more' if len(problems) > 1 else ''}); "
                    "no backup was written"
                )
            tables = _table_names(conn)
            if "alembic_version" not in tables or "events" not in tables:
                raise StoreError(f"{store} is not an ordertrail store (no schema revision)")
            revision = _revision(conn)
            if revision is None:
                raise StoreError(f"{store} is not an ordertrail store (no schema revision)")
            counts = _counts(conn)
            return revision, counts, _facts(conn, counts)
    except sqlite3.DatabaseError as e:
        raise StoreError(f"cannot read the copy of {store}: {e}") from None


class _Reading:
    """A file that reports how much of it was read (tarfile only calls read)."""

    def __init__(self, fh: BinaryIO, total: int, report: Progress, stage: str):
        self._fh, self._total, self._report, self._stage, self._done = fh, total, report, stage, 0

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._done += len(data)
        self._report(self._stage, self._done, self._total)
        return data


def _write_archive(
    path: Path, manifest: Manifest, db: Path, compress: bool, report: Progress
) -> None:
    doc = orjson.dumps(manifest.as_dict(), option=orjson.OPT_INDENT_2) + b"\n"
    mtime = manifest.created_at // 1_000_000
    with path.open("wb") as raw:
        with tarfile.open(
            fileobj=raw, mode="w:gz" if compress else "w", format=tarfile.PAX_FORMAT
        ) as tar:
            info = tarfile.TarInfo(MANIFEST_NAME)
            info.size, info.mtime, info.mode = len(doc), mtime, 0o600
            tar.addfile(info, io.BytesIO(doc))
            info = tarfile.TarInfo(DB_NAME)
            info.size, info.mtime, info.mode = manifest.database_bytes, mtime, 0o600
            with db.open("rb") as fh:
                tar.addfile(info, _Reading(fh, info.size, report, "archive"))  # type: ignore[arg-type,unused-ignore]
        raw.flush()
        os.fsync(raw.fileno())


def _place(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move a finished file into place; without ``overwrite`` never over an existing one."""
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)  # atomic, and fails when the target appeared meanwhile
    except FileExistsError:
        raise BackupRefused(f"{target} exists; use --force to overwrite it") from None
    except OSError:  # a filesystem without hard links
        if target.exists():
            raise BackupRefused(f"{target} exists; use --force to overwrite it") from None
        os.replace(tmp, target)
        return
    tmp.unlink()


# -- reading a backup -------------------------------------------------------------------------


def read_manifest(file: Path) -> Manifest:
    """The manifest of a backup file (nothing else is read); BackupError when unusable."""
    with _open_archive(Path(file)) as tar:
        return _manifest_of(Path(file), tar)


# what reading a damaged archive raises: a truncated tar, a gzip stream cut short or corrupt
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


@contextmanager
def _open_archive(file: Path) -> Iterator[tarfile.TarFile]:
    if not file.exists():
        raise BackupRefused(f"no such backup file: {file}")
    if not file.is_file():
        raise BackupRefused(f"{file} is not a file")
    try:
        tar = tarfile.open(file, "r:*")  # noqa: SIM115 (closed below, after the yield)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        with file.open("rb") as fh:
            head = fh.read(16)
        if head == b"SQLite format 3\x00":
            raise BackupError(
                f"{file} is a SQLite database, not a backup made by 'ordertrail backup' "
                "(it has no manifest or checksum to verify it by)"
            ) from None
        if not head:
            raise BackupError(f"{file} is empty, not a backup") from None
        if isinstance(e, tarfile.ReadError):
            raise BackupError(f"{file} is not an ordertrail backup (not a tar archive)") from None
        raise BackupError(f"cannot read backup {file}: {_reason(e)}") from None
    try:
        yield tar
    except _ARCHIVE_ERRORS as e:  # not OSError in general: writing the copy may fail too
        raise BackupError(f"cannot read backup {file}: {_reason(e)}") from None
    finally:
        tar.close()


def _reason(e: BaseException) -> str:
    text_ = str(e).strip() or type(e).__name__
    return text_.splitlines()[0]


def _manifest_of(file: Path, tar: tarfile.TarFile) -> Manifest:
    member = tar.next()
    if member is None or member.name != MANIFEST_NAME or not member.isfile():
        raise BackupError(f"{file} is not an ordertrail backup (no {MANIFEST_NAME} first)")
    if member.size > _MANIFEST_MAX:
        raise BackupError(f"{file}: its {MANIFEST_NAME} is not a manifest ({member.size:,} bytes)")
    fh = tar.extractfile(member)
    assert fh is not None
    try:
        return Manifest.from_dict(orjson.loads(fh.read()))
    except (orjson.JSONDecodeError, ValueError) as e:
        raise BackupError(f"{file}: its manifest is not readable: {_reason(e)}") from None


def _extract_verified(file: Path, dest: Path, report: Progress) -> Manifest:
    """Check ``file`` completely and leave its database in ``dest``; BackupError otherwise."""
    with _open_archive(file) as tar:
        manifest = _manifest_of(file, tar)
        problem = _revision_problem(manifest.schema_revision)
        if problem:
            raise BackupError(
                f"{file}: {problem}; restore it with ordertrail {manifest.ordertrail_version} "
                "or later"
            )
        member = tar.next()
        if member is None or member.name != DB_NAME or not member.isfile():
            raise BackupError(f"{file} is incomplete: no {DB_NAME} after the manifest")
        src = tar.extractfile(member)
        assert src is not None
        h, done = hashlib.sha256(), 0
        with dest.open("wb") as out:
            while chunk := src.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
                done += len(chunk)
                report("read", done, manifest.database_bytes)
            out.flush()
            os.fsync(out.fileno())
    if done != manifest.database_bytes or h.hexdigest() != manifest.sha256:
        raise BackupError(
            f"{file} is corrupt: its database has SHA-256 {h.hexdigest()[:16]}… "
            f"({done:,} bytes), the manifest says {manifest.sha256[:16]}… "
            f"({manifest.database_bytes:,} bytes)"
        )
    report("check", 0, None)
    try:
        with closing(_connect(dest)) as conn:
            problems = _integrity(conn)
            if problems:
                more = f"; {len(problems) - 1} more" if len(problems) > 1 else ""
                raise BackupError(
                    f"{file}: its database fails SQLite's integrity check ({problems[0]}{more})"
                )
            revision = _revision(conn) if "alembic_version" in _table_names(conn) else None
            counts = _counts(conn)
            facts = _facts(conn, counts)
    except sqlite3.DatabaseError as e:
        raise BackupError(f"{file}: its database is not readable: {e}") from None
    if revision != manifest.schema_revision:
        raise BackupError(
            f"{file}: its database is at schema revision {revision}, "
            f"the manifest says {manifest.schema_revision}"
        )
    diff = [
        f"{t} {counts.get(t, 0):,} (manifest {manifest.tables.get(t, 0):,})"
        for t in sorted(set(counts) | set(manifest.tables))
        if counts.get(t) != manifest.tables.get(t)
    ]
    if diff:
        raise BackupError(
            f"{file}: row counts differ from its manifest: {', '.join(diff[:3])}"
            f"{f' and {len(diff) - 3} more' if len(diff) > 3 else ''}"
        )
    if facts.max_ingest_seq != manifest.facts.max_ingest_seq:
        raise BackupError(
            f"{file}: max ingest_seq {facts.max_ingest_seq:,} differs from its manifest "
            f"({manifest.facts.max_ingest_seq:,})"
        )
    return manifest


# -- restore ----------------------------------------------------------------------------------


def restore_sqlite(
    file: Path, store: Path, *, force: bool = False, progress: Progress | None = None
) -> RestoreResult:
    """Replace the SQLite store at ``store`` with the backup ``file`` once it is verified.

    Nothing at ``store`` changes unless every check passes. Refused (BackupRefused) when the
    store is newer than the backup or cannot be read, unless ``force``; refused (StoreInUse)
    while another process has it open, whatever ``force`` says.
    """
    t0 = time.monotonic()
    report = progress or _no_progress
    file, store = Path(file), Path(store)
    if store.is_symlink():  # replace the store the link points to, not the link
        store = store.resolve()
    if store.is_dir():
        raise BackupRefused(f"the store {store} is a folder")
    if not store.parent.is_dir():
        raise BackupRefused(f"folder of the store {store} does not exist")
    tmp = _temp_beside(store, ".restore")
    try:
        manifest = _extract_verified(file, tmp, report)
        with _exclusive_use(store):
            pass  # refuse early, before reading the store, when someone has it open
        current, unreadable = _current_facts(store)
        forced = []
        if unreadable:
            if not force:
                raise BackupRefused(
                    f"the store {store} cannot be read ({unreadable}), so it cannot be told "
                    "whether it is newer than the backup; use --force to replace it"
                )
            forced.append(f"the store could not be read: {unreadable}")
        elif current is not None:
            newer = current.newer_than(manifest.facts)
            if newer and not force:
                raise BackupRefused(
                    f"the store {store} is newer than the backup: it has {'; '.join(newer)}; "
                    "use --force to replace it"
                )
            forced += [f"the store was newer: {w}" for w in newer]
        seen = _fingerprint(store)
        migrated_from = None
        head = known_revisions()[-1]
        if manifest.schema_revision != head:
            report("migrate", 0, None)
            migrated_from = manifest.schema_revision
            _migrate_copy(tmp)
        _finish_copy(tmp, _mode_for(store))
        report("replace", 0, None)
        with _exclusive_use(store):
            if _fingerprint(store) != seen:
                raise StoreInUse(f"the store {store} changed while it was being restored; "
                                 "stop the processes writing to it and try again")  # fmt: skip
            _remove(*_sidecars(store))  # a stale WAL would be replayed into the restored file
            os.replace(tmp, store)
            _fsync_dir(store.parent)
    except OSError as e:
        raise StoreError(f"restore into {store} failed: {e.strerror or e}") from e
    finally:
        _remove(tmp, *_sidecars(tmp))
    logger.info("restored %s into %s: %s", file, store, manifest.facts.summary())
    return RestoreResult(
        path=store,
        backup=file,
        manifest=manifest,
        replaced=current,
        migrated_from=migrated_from,
        revision=head,
        forced=forced,
        seconds=time.monotonic() - t0,
    )


def _current_facts(store: Path) -> tuple[StoreFacts | None, str | None]:
    """(facts, None) of the store there; (None, None) when there is none; (None, why) when it
    cannot be read as an ordertrail store."""
    try:
        if store.stat().st_size == 0:
            return None, None
    except FileNotFoundError:
        return None, None
    try:
        with closing(_connect(store, timeout=5.0)) as conn:
            tables = _table_names(conn)
            if "alembic_version" not in tables:
                return None, "not an ordertrail store" if tables else None
            return _facts(conn), None
    except sqlite3.DatabaseError as e:
        return None, str(e)


def _fingerprint(store: Path) -> tuple[tuple[int, int] | None, ...]:
    out: list[tuple[int, int] | None] = []
    for p in (store, *_sidecars(store)[:1]):
        try:
            st = p.stat()
            out.append((st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


def _migrate_copy(path: Path) -> None:
    engine = make_engine(f"sqlite:///{path}")
    try:
        migrate(engine)
    finally:
        engine.dispose()


def _finish_copy(path: Path, mode: int) -> None:
    """Leave the verified copy as one self-contained file, durable, with the store's mode."""
    try:
        with closing(sqlite3.connect(str(path))) as conn:
            conn.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.DatabaseError as e:
        raise StoreError(f"cannot prepare the restored store: {e}") from None
    os.chmod(path, mode)
    _fsync(path)


# SQLite's own lock bytes (os_unix.c): PENDING, RESERVED and the SHARED range of the database
# file; the WAL-index locks and the "DMS" byte of the -shm file, which every connection to a
# WAL-mode database holds a shared lock on while it is open.
_DB_LOCK = (0x40000000, 512)
_SHM_LOCK = (120, 9)


@contextmanager
def _exclusive_use(store: Path) -> Iterator[None]:
    """Hold SQLite's locks on the store exclusively; StoreInUse when another process has them.

    While held, no SQLite connection can open or use the store (they wait, then get "database
    is locked"). Only for a store that no connection of this process has open.
    """
    import fcntl

    fds: list[int] = []
    try:
        for path, (start, length) in ((store, _DB_LOCK), (_sidecars(store)[1], _SHM_LOCK)):
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            fds.append(fd)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
            except OSError:
                pid = _lock_holder(fd, start, length)
                by = f" (pid {pid})" if pid else ""
                raise StoreInUse(
                    f"the store {store} is in use by another process{by}; stop the ingest, "
                    "collect, serve or reconcile using it, then restore"
                ) from None
        yield
    finally:
        for fd in fds:
            os.close(fd)  # closing releases this process's locks on the file


def _lock_holder(fd: int, start: int, length: int) -> int | None:
    """The pid holding a lock that conflicts with a write lock on the range (Linux only)."""
    if sys.platform != "linux" or struct.calcsize("P") != 8:
        return None
    import fcntl

    try:
        req = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
        kind, _, _, _, pid = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, req))
    except OSError:
        return None
    return int(pid) if kind != fcntl.F_UNLCK and pid > 0 else None


# -- verify -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableShape:
    columns: frozenset[str]
    uniques: frozenset[frozenset[str]]  # unique constraints and the primary key
    indexes: frozenset[str]


@lru_cache(maxsize=8)
def expected_schema(revision: str) -> dict[str, TableShape]:
    """The tables a store at ``revision`` has: this ordertrail's migrations, run on a scratch
    in-memory SQLite database and read back."""
    engine = create_engine("sqlite://", poolclass=StaticPool)
    try:
        migrate(engine, revision)
        with engine.connect() as conn:
            return _shapes(conn, None)
    finally:
        engine.dispose()


def _shapes(conn: Connection, only: set[str] | None) -> dict[str, TableShape]:
    with warnings.catch_warnings():
        # the searchable attributes' indexes are on expressions, which SQLAlchemy does not
        # reflect: it would say so on stderr for each one, at each reflection
        warnings.filterwarnings("ignore", message=".*expression-based index")
        return _reflected_shapes(conn, only)


def _reflected_shapes(conn: Connection, only: set[str] | None) -> dict[str, TableShape]:
    from ordertrail.store.retention import partition_keys

    insp = inspect(conn)
    # PostgreSQL's partitioned events: keys must hold the partition key (retention.py)
    part = partition_keys(conn)
    out = {}
    for t in insp.get_table_names():
        if only is not None and t not in only:
            continue
        uniques = {frozenset(u["column_names"]) for u in insp.get_unique_constraints(t)}
        pk = insp.get_pk_constraint(t).get("constrained_columns") or []
        if pk:
            uniques.add(frozenset(pk))
        if t in part:
            uniques = {u - part[t] if u > part[t] else u for u in uniques}
        out[t] = TableShape(
            columns=frozenset(c["name"] for c in insp.get_columns(t)),
            uniques=frozenset(uniques),
            indexes=frozenset(str(i["name"]) for i in insp.get_indexes(t) if i.get("name")),
        )
    return out


@dataclass
class Verification:
    """The result of checking a store: problems (it fails) and what was checked."""

    url: str
    dialect: str
    head: str
    revision: str | None = None
    problems: list[str] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)  # check -> what it found
    notes: list[str] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)
    max_ingest_seq: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "store": self.url,
            "dialect": self.dialect,
            "revision": self.revision,
            "head": self.head,
            "problems": self.problems,
            "notes": self.notes,
            "checks": self.checks,
            "tables": self.tables,
            "max_ingest_seq": self.max_ingest_seq,
        }


def verify_store(url: str) -> Verification:
    """Check a store (SQLite or PostgreSQL) without changing it — not even migrating it.

    Checked: the schema revision is one this ordertrail knows; SQLite's integrity_check; the
    tables, columns, unique constraints (and primary keys) and indexes of that revision are all
    there; row counts; every event's and pending order's order_bucket is its order's; every link
    and event_objects row refers to a stored event. StoreError when the store cannot be reached.
    """
    head = known_revisions()[-1]
    engine = _verify_engine(url)
    v = Verification(url=safe_url(engine), dialect=engine.dialect.name, head=head)
    try:
        if v.dialect == "sqlite":
            path = Path(make_url(url).database or "")
            if not path.is_file():
                v.problems.append(f"no SQLite store at {path}")
                return v
            with suppress(_Stop):
                _run_check(v, engine, "integrity_check", _check_integrity)
            if any("not a database" in p for p in v.problems):
                return v
        else:
            check_connection(engine)
        with suppress(_Stop):
            _run_check(v, engine, "schema revision", _check_revision)
            _run_check(v, engine, "tables", _check_tables)
            _run_check(v, engine, "row counts", _check_counts)
            _run_check(v, engine, "order buckets", _check_buckets)
            _run_check(v, engine, "links", _check_references)
    finally:
        engine.dispose()
    return v


class _Stop(Exception):
    """A check found the store too broken for the checks after it."""


def _verify_engine(url: str) -> Engine:
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return make_engine(url)
    db = u.database or ""
    if not db or db == ":memory:" or db.startswith("file:"):
        raise ConfigError(f"status --verify needs a SQLite store in a file, not {url!r}")
    path = Path(db).expanduser()
    # not make_engine: its connect hook sets journal_mode, and nothing here may write
    return create_engine(url, creator=lambda: _connect(path))


def _run_check(
    v: Verification, engine: Engine, name: str, check: Callable[[Verification, Connection], str]
) -> None:
    try:
        with engine.connect() as conn:
            v.checks[name] = check(v, conn)
    except _Stop:
        v.checks.setdefault(name, "failed")
        raise
    except SQLAlchemyError as e:
        orig = getattr(e, "orig", None) or e
        v.problems.append(f"{name}: {_reason(orig)}")
        v.checks[name] = "failed"
        if "malformed" in str(orig) or "not a database" in str(orig):
            raise _Stop from None


def _check_integrity(v: Verification, conn: Connection) -> str:
    rows = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA integrity_check")]
    if rows == ["ok"]:
        return "ok"
    v.problems += [f"integrity_check: {r}" for r in rows[:10]]
    if len(rows) > 10:
        v.problems.append(f"integrity_check: … and {len(rows) - 10} more")
    return f"{len(rows)} problem(s)"


def _check_revision(v: Verification, conn: Connection) -> str:
    if not inspect(conn).has_table("alembic_version"):
        v.problems.append("no alembic_version table: not an ordertrail store, or never migrated")
        raise _Stop
    rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    v.revision = str(rows[0][0]) if len(rows) == 1 else None
    problem = _revision_problem(v.revision)
    if len(rows) > 1:
        problem = f"alembic_version holds {len(rows)} revisions"
    if problem:
        v.problems.append(problem)
        raise _Stop
    if v.revision != v.head:
        v.notes.append(
            f"schema revision {v.revision} is older than this ordertrail's {v.head}: "
            "the next command that opens the store upgrades it in place"
        )
        return f"{v.revision} (older than {v.head})"
    return f"{v.revision} (head)"


def _check_tables(v: Verification, conn: Connection) -> str:
    assert v.revision is not None
    expected = expected_schema(v.revision)
    actual = _shapes(conn, set(expected))
    before = len(v.problems)
    for name, want in sorted(expected.items()):
        have = actual.get(name)
        if have is None:
            v.problems.append(f"table {name} is missing")
            continue
        for c in sorted(want.columns - have.columns):
            v.problems.append(f"column {name}.{c} is missing")
        for u in sorted(want.uniques - have.uniques, key=sorted):
            v.problems.append(f"unique constraint on {name} ({', '.join(sorted(u))}) is missing")
        for i in sorted(want.indexes - have.indexes):
            v.problems.append(f"index {i} on {name} is missing")
    if len(v.problems) > before:
        return f"{len(v.problems) - before} problem(s)"
    return f"all {len(expected)} present with their columns, unique constraints and indexes"


def _check_counts(v: Verification, conn: Connection) -> str:
    assert v.revision is not None
    present = set(inspect(conn).get_table_names())
    for t in sorted(expected_schema(v.revision)):
        if t in present:
            v.tables[t] = int(conn.exec_driver_sql(f'SELECT count(*) FROM "{t}"').scalar_one())
    if "events" not in present:
        raise _Stop  # the checks after this one are all about events
    v.max_ingest_seq = int(conn.exec_driver_sql("SELECT max(ingest_seq) FROM events").scalar() or 0)
    return f"{v.tables.get('events', 0):,} events up to ingest_seq {v.max_ingest_seq:,}"


def _check_buckets(v: Verification, conn: Connection) -> str:
    """order_bucket is crc32(order_id) % 1024, which SQL cannot compute on both stores: the
    distinct (order, bucket) pairs are streamed and checked here."""
    present = set(inspect(conn).get_table_names())
    said = []
    for table in ("events", "pending_orders"):
        if table not in present:
            continue
        rows = conn.execution_options(stream_results=True, yield_per=50_000).exec_driver_sql(
            f"SELECT DISTINCT order_id, order_bucket FROM {table}"
        )
        seen, wrong, examples = 0, 0, list[str]()
        for order_id, bucket in rows:
            seen += 1
            if order_bucket(order_id) != bucket:
                wrong += 1
                if len(examples) < 3:
                    examples.append(f"{order_id!r} has {bucket}, not {order_bucket(order_id)}")
        if wrong:
            v.problems.append(
                f"{wrong:,} order(s) in {table} with a wrong order_bucket: {'; '.join(examples)}"
            )
        said.append(f"{table}: {seen:,} orders, {'ok' if not wrong else f'{wrong:,} wrong'}")
    return "; ".join(said)


def _check_references(v: Verification, conn: Connection) -> str:
    present = set(inspect(conn).get_table_names())
    said = []
    for table in ("links", "event_objects"):
        if table not in present:
            continue
        n = conn.execute(
            text(
                f"SELECT count(*) FROM {table} x WHERE NOT EXISTS (SELECT 1 FROM events e "
                "WHERE e.source = x.source AND e.event_id = x.event_id)"
            )
        ).scalar_one()
        if n:
            v.problems.append(f"{n:,} {table} row(s) refer to events that are not stored")
        said.append(f"{table}: {'ok' if not n else f'{n:,} dangling'}")
    return "; ".join(said) or "none at this revision"
