"""Columnar reads: query results as Arrow tables, through ADBC (the SQLite and PostgreSQL drivers
of Apache Arrow's database connectivity project) — no Python object per row.

Reading millions of rows through a DBAPI cursor costs more than the reconciliation itself;
ADBC hands the database's rows to Arrow in C.

SQLite needs care: ADBC's driver carries its own copy of SQLite, and two copies of SQLite in one
process do not see each other's POSIX locks or WAL-index state (sqlite.org/howtocorrupt.html,
2.2.1) — a reader can miss rows another connection of the same process committed. So SQLite is
read by a short-lived reader process (``python -m ordertrail.store.arrow``) that streams the
tables back as Arrow IPC and dies with its parent. Where no ADBC driver applies (an in-memory
store, a driver that is not installed) rows come through the DBAPI cursor instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pyarrow as pa
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)


# below this many rows a DBAPI cursor is quicker than starting the SQLite reader process
PROCESS_MIN_ROWS = int(os.environ.get("ORDERTRAIL_ARROW_PROCESS_MIN_ROWS", "200000"))


class Reader:
    """Runs read queries for one store and returns Arrow tables. ``rows`` is about how many
    rows the queries will return (it decides whether a reader process pays off)."""

    def __init__(self, engine: Engine, rows: int | None = None):
        self.engine = engine
        self.mode = "dbapi"
        self._pg: Any = None
        url = engine.url
        if url.get_backend_name() == "sqlite" and (rows is None or rows >= PROCESS_MIN_ROWS):
            db = url.database or ""
            if (
                db
                and db != ":memory:"
                and not db.startswith("file:")
                and _has("adbc_driver_sqlite")
            ):
                self.mode = "sqlite-process"
                self.db = db
        elif url.get_backend_name() == "postgresql" and _has("adbc_driver_postgresql"):
            import adbc_driver_postgresql.dbapi as pg_adbc

            plain = make_url(url.render_as_string(hide_password=False)).set(drivername="postgresql")
            self._pg_url = plain.render_as_string(hide_password=False)
            try:
                self._pg = pg_adbc.connect(self._pg_url, autocommit=True)
                self.mode = "adbc"
            except Exception as e:  # a driver that cannot connect: the DBAPI cursor still can
                logger.debug("no ADBC connection (%s); reading through the DBAPI cursor", e)

    def tables(self, sqls: Sequence[str]) -> list[pa.Table]:
        """The result of each query, in order."""
        out: list[pa.Table] = []
        self.stream(sqls, lambda i, reader: out.append(reader.read_all()))
        return out

    def stream(
        self, sqls: Sequence[str], consume: Callable[[int, Any], None], workers: int = 1
    ) -> None:
        """Hand each query's rows to ``consume(i, reader)`` as a RecordBatchReader, batch by
        batch — a window of any size never sits whole in this process. With ``workers`` > 1
        that many readers run at once, each taking the next query when it is done with one
        (``consume`` is then called from several threads): put the longest query first."""
        sqls = list(sqls)
        workers = max(1, min(workers, len(sqls)))
        pending = iter(range(len(sqls)))
        lock = threading.Lock()

        def take() -> int | None:
            with lock:
                return next(pending, None)

        if workers == 1 or self.mode == "dbapi":
            self._stream(sqls, take, consume, own=False)
            return
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            jobs = [pool.submit(self._stream, sqls, take, consume, True) for _ in range(workers)]
            for job in jobs:
                job.result()

    def _stream(
        self, sqls: list[str], take: Callable[[], int | None],
        consume: Callable[[int, Any], None], own: bool,
    ) -> None:  # fmt: skip
        if self.mode == "sqlite-process":
            _stream_in_process(self.db, sqls, take, consume)
        elif self.mode == "adbc":
            import adbc_driver_postgresql.dbapi as pg_adbc

            conn = pg_adbc.connect(self._pg_url, autocommit=True) if own else self._pg
            try:
                while (i := take()) is not None:
                    cur = conn.cursor()
                    try:
                        cur.execute(sqls[i])
                        consume(i, cur.fetch_record_batch())
                    finally:
                        cur.close()
            finally:
                if own:
                    conn.close()
        else:
            while (i := take()) is not None:
                consume(
                    i,
                    pa.RecordBatchReader.from_batches(
                        *_as_batches(_dbapi_query(self.engine, sqls[i]))
                    ),
                )

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _adbc_query(conn: Any, sql: str) -> pa.Table:
    cur = conn.cursor()
    try:
        cur.execute(sql)
        return cur.fetch_arrow_table()
    finally:
        cur.close()


def _dbapi_query(engine: Engine, sql: str) -> pa.Table:
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        cur = raw.cursor()
        try:
            cur.execute(sql)
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        finally:
            cur.close()
    cols: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)] if rows else []
    if not cols:
        cols = [[] for _ in names]
    return pa.table({n: pa.array(c) for n, c in zip(names, cols, strict=True)})


def _die_with_parent() -> None:
    """In the child: receive SIGKILL when the parent dies (Linux), so no reader is left over."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _as_batches(tb: pa.Table) -> tuple[Any, list[Any]]:
    return tb.schema, tb.to_batches()


def _stream_in_process(
    db: str, sqls: list[str], take: Callable[[], int | None], consume: Callable[[int, Any], None]
) -> None:
    """One reader process answering queries one at a time (a JSON line each on its stdin, an
    Arrow IPC stream each on its stdout) for as long as ``take`` gives one."""
    i = take()
    if i is None:
        return
    proc = subprocess.Popen(
        [sys.executable, "-m", "ordertrail.store.arrow"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    asked = done = 0
    failed = False
    try:
        proc.stdin.write(orjson.dumps({"db": db}) + b"\n")
        while i is not None:
            asked += 1
            proc.stdin.write(orjson.dumps({"sql": sqls[i]}) + b"\n")
            proc.stdin.flush()
            consume(i, pa.ipc.open_stream(proc.stdout))
            done += 1
            i = take()
    except (pa.ArrowInvalid, OSError):
        failed = True
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        proc.stdout.close()
    err = proc.stderr.read().decode("utf-8", "replace").strip()
    code = proc.wait()
    if failed or code != 0 or done != asked:
        from ordertrail.errors import StoreError

        last = err.splitlines()[-1] if err else f"exit status {code}"
        raise StoreError(f"cannot read the store {db}: {last}")


def _serve() -> None:
    """The reader process: the store on stdin's first line, then a query per line (JSON), an
    Arrow IPC stream per query on stdout; it ends when stdin does."""
    import adbc_driver_sqlite.dbapi as sqlite_adbc

    stdin = sys.stdin.buffer
    req = orjson.loads(stdin.readline())
    conn = sqlite_adbc.connect(req["db"], autocommit=True)
    try:
        out = sys.stdout.buffer
        for line in stdin:
            sql = orjson.loads(line)["sql"]
            cur = conn.cursor()
            try:
                # big batches: the default 1,024 rows makes IPC and DuckDB's inserts dominate
                with contextlib.suppress(Exception):
                    cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": "65536"})
                cur.execute(sql)
                reader = cur.fetch_record_batch()
                with pa.ipc.new_stream(out, reader.schema) as w:
                    for batch in reader:
                        w.write_batch(batch)
            finally:
                cur.close()
            out.flush()
    finally:
        conn.close()


if __name__ == "__main__":
    try:
        _serve()
    except Exception as e:  # one line for the parent's error message
        print(
            f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else e}",
            file=sys.stderr,
        )
        sys.exit(1)
