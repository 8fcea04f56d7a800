"""Engine setup: URL resolution, SQLite pragmas, connection checks and in-place migrations."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

from ordertrail.errors import ConfigError, StoreError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA cache_size=-262144")
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


def sqlite_file(url: str | URL) -> Path | None:
    """The file of a SQLite store URL; None for another database, an in-memory one, a
    ``file:`` URI or a URL that does not parse (whoever opens it says what is wrong)."""
    try:
        u = make_url(url)
    except ArgumentError:
        return None
    db = (u.database or "") if u.get_backend_name() == "sqlite" else ""
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).expanduser()


def make_engine(url: str) -> Engine:
    """Create an engine for ``url``; raise ConfigError for a malformed URL or missing driver."""
    try:
        u = make_url(url)
    except ArgumentError:
        raise ConfigError(f"not a database URL: {url!r}", key="store.url") from None
    if u.get_backend_name() == "postgresql" and u.get_driver_name() in ("psycopg2", ""):
        # psycopg 3 is the driver we ship an extra for
        u = u.set(drivername="postgresql+psycopg")
    kwargs: dict[str, Any] = {}
    if u.get_backend_name() == "sqlite":
        path = sqlite_file(u)
        if path is not None and not path.parent.exists():
            raise ConfigError(
                f"folder of the SQLite store does not exist: {path.parent}", key="store.url"
            )
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(u, **kwargs)
    except NoSuchModuleError:
        raise ConfigError(f"no SQLAlchemy dialect for {u.drivername!r}", key="store.url") from None
    except ImportError as e:
        hint = (
            " (pip install 'ordertrail[postgres]')" if u.get_backend_name() == "postgresql" else ""
        )
        raise ConfigError(f"database driver missing: {e.name}{hint}", key="store.url") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def check_connection(engine: Engine) -> None:
    """Raise StoreError with the reason in one line when the store cannot be reached."""
    try:
        with engine.connect():
            pass
    except OperationalError as e:
        reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
        raise StoreError(f"cannot reach store {safe_url(engine)}: {reason}") from None
    except SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise StoreError(f"cannot use store {safe_url(engine)}: {reason}") from None


def safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def alembic_config(engine: Engine) -> Any:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


HEAD_REVISION = "0006"  # the newest file in migrations/versions (a test keeps them in step)


def _at_head(engine: Engine) -> bool:
    """Cheap check before handing over to Alembic (which costs a few hundred ms to load)."""
    try:
        with engine.connect() as conn:
            return (
                conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
                == HEAD_REVISION
            )
    except SQLAlchemyError:
        return False


def migrate(engine: Engine, revision: str = "head") -> None:
    """Create the schema, or upgrade a store made by an older ordertrail in place.

    Two commands opening a brand-new store at once take turns: the migration runs under a lock
    (``flock`` on the SQLite store's folder, an advisory lock on PostgreSQL), and the second finds
    the schema in place."""
    if revision == "head" and _at_head(engine):
        return
    from alembic import command

    logging.getLogger("alembic").setLevel(logging.WARNING)
    with _migration_lock(engine):
        if revision == "head" and _at_head(engine):
            return
        try:
            command.upgrade(alembic_config(engine), revision)
        except SQLAlchemyError as e:
            reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
            raise StoreError(f"cannot migrate store {safe_url(engine)}: {reason}") from None


_PG_MIGRATION_LOCK = 0x6F72_6472  # "ordr": the advisory lock key migrations take


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "sqlite":
        db = engine.url.database or ""
        if not db or db == ":memory:" or db.startswith("file:"):
            yield
            return
        import fcntl

        # never the store file itself: closing any descriptor of a file drops every POSIX lock
        # this process holds on it — SQLite's own among them
        folder = os.path.dirname(os.path.abspath(db)) or "."
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({_PG_MIGRATION_LOCK})")
            try:
                yield
            finally:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_PG_MIGRATION_LOCK})")
                conn.commit()
        return
    yield


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("events")


def resolve_url(explicit: str | None, config_url: str | None) -> str:
    """--db, then $ORDERTRAIL_DB_URL, then the config's [store] url, then ./ordertrail.db."""
    from ordertrail.schemas.config import DEFAULT_DB_URL, ENV_DB_URL

    return explicit or os.environ.get(ENV_DB_URL) or config_url or DEFAULT_DB_URL
