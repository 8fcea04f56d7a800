"""Reconcile on Spark, for windows beyond one machine: the local engine's two passes, spread out.

Pass 1, in Spark SQL: objects -> orders (links, then ``via`` chains), events -> orders, and
each order's part, a hash of its id. Pass 2: ``groupBy(part).applyInArrow`` — each task
streams its part's rows into DuckDB (a :class:`WindowDB`, as the local engine stages one part)
and runs the same rule code (:func:`engine.judge_parts`): rule rows, overdue units, edge
populations and order states come back as rows. Objects of no order are judged in tasks of
their own. The driver then decides vanished vs stalled with :func:`classify.finish`, reading
one edge's population at a time from Spark, and records the run with the local engine's
:func:`engine._record` (what the local engine judged, as a :class:`engine.Judged`).

Input: a PostgreSQL store over JDBC (each table read in shares of ``order_bucket``, in
parallel) or the Parquet files ``ordertrail export --parquet DIR`` wrote.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from ordertrail.errors import OrdertrailError
from ordertrail.reconcile import runs
from ordertrail.reconcile.backend import SqlBackend, _attr_queries
from ordertrail.reconcile.classify import PartResult, finish
from ordertrail.reconcile.columnar import WindowDB, _via_order
from ordertrail.reconcile.engine import (
    Judged,
    Progress,
    RunResult,
    _record,
    finish_findings,
    judge_parts,
    judge_times,
)
from ordertrail.reconcile.evidence import EdgeProgress
from ordertrail.reconcile.parquet import Manifest, attribute_keys, check_manifest, read_manifest
from ordertrail.reconcile.plan import Plan, compile_plan
from ordertrail.schemas.config import Config, EngineSettings
from ordertrail.store import Store
from ordertrail.store import window as w

logger = logging.getLogger(__name__)

DEFAULT_MASTER = "local[2]"
JDBC_DRIVER = "org.postgresql.Driver"
JDBC_JAR_ENV = "ORDERTRAIL_JDBC_JAR"
TASK_MEMORY = "2GB"  # DuckDB's budget in a task when [engine] memory says nothing
MIN_PART_ORDERS = 10_000  # below this a part is not worth a task of its own
MIN_JAVA = 17
FEW = 10_000  # ids the facts job brings along rather than streaming them afterwards
POINTS_AT_ONCE = 4_000_000  # edge population points fetched in one job (else one edge a job)
PENDING_AT_ONCE = 2_000_000  # in-flight orders fetched in one job (else a partition at a time)
ROWS_PER_SHARE = 250_000  # window events per read share and per shuffle partition (at least)

# row tags of pass 2's input and output
EV, ME, LI, EARLY, KEYS, ATTR = 0, 1, 2, 3, 4, 10
IN_SCHEMA = (
    "g INT, tag INT, seq BIGINT, order_id STRING, hop INT, phase INT, t BIGINT, obj STRING, "
    "other STRING, src STRING, eid STRING, v STRING"
)
OUT_FIELDS: list[tuple[str, pa.DataType]] = [
    ("g", pa.int32()), ("tag", pa.string()), ("i", pa.int64()), ("o", pa.int64()),
    ("last_seq", pa.int64()), ("order_id", pa.string()), ("kind", pa.string()),
    ("hop", pa.string()), ("from_hop", pa.string()), ("field", pa.string()),
    ("since", pa.float64()), ("obj", pa.string()), ("evidence", pa.string()), ("req", pa.int32()),
    ("ta", pa.float64()), ("deadline", pa.float64()), ("a", pa.float64()), ("b", pa.float64()),
    ("state", pa.string()), ("due", pa.float64()), ("n", pa.int64()),
]  # fmt: skip
OUT_SCHEMA = pa.schema(OUT_FIELDS)
_SPARK_TYPES = {pa.int32(): "INT", pa.int64(): "BIGINT", pa.string(): "STRING",
                pa.float64(): "DOUBLE"}  # fmt: skip
OUT_DDL = ", ".join(f"{n} {_SPARK_TYPES[t]}" for n, t in OUT_FIELDS)


class SparkUnavailable(OrdertrailError):
    """Spark cannot run here: PySpark, Java or the JDBC driver is missing (one line, with the
    fix), or Spark failed."""

    def __init__(self, message: str, exit_code: int = 3):
        super().__init__(message)
        self.exit_code = exit_code


# -- the session --------------------------------------------------------------------------------


def check_java() -> str:
    """The java executable Spark will use (JAVA_HOME's, else the PATH's), if it is 17 or later."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise SparkUnavailable(
            f"--engine spark needs Java {MIN_JAVA} or later: install it (Debian: "
            "openjdk-17-jre-headless) or set JAVA_HOME",
            3,
        )
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SparkUnavailable(f"--engine spark: cannot run {java}: {e}", 3) from None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    major = int(m.group(1)) if m else 0
    if major == 1 and m and m.group(2):  # "1.8.0_x" is Java 8
        major = int(m.group(2))
    if major < MIN_JAVA:
        raise SparkUnavailable(
            f"--engine spark needs Java {MIN_JAVA} or later; {java} is Java {major or '?'} "
            "(set JAVA_HOME to a newer one)",
            3,
        )
    return java


def jdbc_jar() -> str | None:
    """The PostgreSQL JDBC driver: $ORDERTRAIL_JDBC_JAR, else the newest one scripts/jdbc.sh
    fetched into the cache ($ORDERTRAIL_CACHE, default the checkout's .cache/)."""
    env = os.environ.get(JDBC_JAR_ENV)
    if env:
        return env if Path(env).is_file() else None
    cache = Path(
        os.environ.get("ORDERTRAIL_CACHE") or Path(__file__).resolve().parents[2] / ".cache"
    )
    jars = sorted((cache / "jdbc").glob("postgresql-*.jar"), key=_version_key)
    return str(jars[-1]) if jars else None


def _version_key(p: Path) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", p.name))


def start_session(
    settings: EngineSettings, master: str | None = None, *, jdbc: bool = False
) -> Any:
    """A SparkSession for ordertrail: ``master`` (else [engine.spark] master, else local[2]),
    the config's Spark options, quiet progress, the PostgreSQL JDBC driver when ``jdbc``."""
    try:
        import pyspark
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkUnavailable(
            "--engine spark needs PySpark 4: pip install 'ordertrail[spark]'", 2
        ) from None
    if int(pyspark.__version__.split(".")[0]) < 4:
        raise SparkUnavailable(
            f"--engine spark needs PySpark 4, not {pyspark.__version__}: "
            "pip install 'ordertrail[spark]'",
            2,
        )
    check_java()
    # PySpark warns about pandas 3 wherever it checks pandas; ordertrail hands Spark Arrow only
    warnings.filterwarnings(
        "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
    )
    master = master or settings.spark_master or DEFAULT_MASTER
    conf = dict(settings.spark_conf)
    if master.startswith("local"):
        # the tasks' Python is this one (same packages, same ordertrail)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        conf.setdefault("spark.ui.enabled", "false")
    if jdbc:
        given = conf.get("spark.jars", "") + conf.get("spark.jars.packages", "")
        if "postgresql" not in given:
            jar = jdbc_jar()
            if jar is None:
                raise SparkUnavailable(
                    "--engine spark reads PostgreSQL through its JDBC driver, and none was found: "
                    f"run scripts/jdbc.sh (fetches it into .cache/), set {JDBC_JAR_ENV}, or give "
                    "spark.jars in [engine.spark]",
                    2,
                )
            conf["spark.jars"] = ",".join(x for x in (conf.get("spark.jars"), jar) if x)
    log = Path(__file__).with_name("spark-log4j2.properties")
    if log.exists():  # quiet: errors only (Spark's start-up notes are not for a command's stderr)
        conf.setdefault("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={log}")
    conf.setdefault("spark.ui.showConsoleProgress", "false")
    conf.setdefault("spark.sql.session.timeZone", "UTC")
    conf.setdefault("spark.sql.execution.arrow.pyspark.enabled", "true")
    # the plan is known (hash-spread parts, explicit partition counts): adaptive execution
    # would only re-plan every stage, a job each, which costs more than it saves here
    conf.setdefault("spark.sql.adaptive.enabled", "false")
    b = SparkSession.builder.master(master).appName("ordertrail")
    for k, v in conf.items():
        b = b.config(k, v)
    try:
        session = b.getOrCreate()
    except Exception as e:  # the JVM did not start: one line, not Py4J's page
        raise SparkUnavailable(f"Spark did not start: {_first_line(e)}", 3) from None
    session.sparkContext.setLogLevel("ERROR")
    ship_package(session)
    return session


_SHIPPED: set[int] = set()


def ship_package(session: Any) -> None:
    """Send this ordertrail (its .py files, zipped) to the executors, once per session: the
    tasks run exactly the driver's rule code, whatever is installed where they run."""
    sc = session.sparkContext
    if id(sc) in _SHIPPED:
        return
    import ordertrail

    root = Path(ordertrail.__file__).resolve().parent
    tmp = Path(tempfile.mkdtemp(prefix="ordertrail-spark-"))
    zpath = tmp / "ordertrail.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(root.rglob("*.py")):
            if "__pycache__" not in p.parts:
                z.write(p, str(Path("ordertrail") / p.relative_to(root)))
    sc.addPyFile(str(zpath))
    _SHIPPED.add(id(sc))


def _first_line(e: BaseException) -> str:
    """The first meaningful line of an error; for a Java exception, the JVM's own message
    (the root cause's, which names the real problem) rather than Py4J's call site."""
    java = getattr(e, "java_exception", None)
    if java is not None:
        with contextlib.suppress(Exception):
            cause = java
            while cause.getCause() is not None:
                cause = cause.getCause()
            return _first_line(Exception(str(cause.toString())))
    # PySpark's own exceptions carry the JVM's trace as text: its last cause names the problem
    # ("Error while instantiating '…':" does not; "The value '0' in the config …" does)
    trace = f"{e}\n{getattr(e, 'stackTrace', None) or ''}"
    causes = [
        x.strip().removeprefix("Caused by:").strip()
        for x in trace.splitlines()
        if x.strip().startswith("Caused by: ")
    ]
    if causes:
        return causes[-1][:500]
    text = str(getattr(e, "desc", None) or e).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Traceback", "File ")):
            return line[:500]
    return type(e).__name__


# -- reading the window -------------------------------------------------------------------------


@dataclass
class Window:
    """The window's tables as Spark DataFrames (the local engine's ev, me, li, av*)."""

    ev: Any
    me: Any
    li: Any
    attrs: list[Any]
    rows: int  # events in the window (sizes the shuffles)


def jdbc_url(store: Store) -> tuple[str, dict[str, str]]:
    """The store's SQLAlchemy URL as a JDBC URL and connection properties."""
    u = store.engine.url
    props: dict[str, str] = {}
    if u.username:
        props["user"] = u.username
    if u.password:
        props["password"] = str(u.password)
    query = dict(u.query)
    if "host" in query:
        raise SparkUnavailable(
            "--engine spark connects to PostgreSQL over TCP (JDBC): give the store URL a host "
            "name, not a socket folder",
            2,
        )
    for k, v in query.items():
        props[k] = v if isinstance(v, str) else str(v[-1])
    return f"jdbc:postgresql://{u.host or 'localhost'}:{u.port or 5432}/{u.database or ''}", props


def jdbc_window(
    session: Any, store: Store, plan: Plan, lo: int, hi: int, max_seq: int, spread: int
) -> Window:
    """The window read from a PostgreSQL store: each table in parallel reads (as many as the
    window's size calls for, at most ``spread``), the event tables split by ranges of
    order_bucket, links by a hash of the object id."""
    url, props = jdbc_url(store)
    d = "postgresql"
    with store.engine.connect() as conn:
        total = w.count_window(conn, lo, hi)
    scan = total * 3 > max_seq
    shares = shares_for(total, spread)
    ev_sql, me_sql, li_sql = w.staged_window_tables(d, plan.names, lo, hi, scan, max_seq)

    def read(sqls: list[str], ddl: str) -> Any:
        frames = []
        for q in sqls:
            r = session.read.format("jdbc").option("url", url).option("driver", JDBC_DRIVER)
            for k, v in props.items():
                r = r.option(k, v)
            frames.append(r.option("query", q).option("fetchsize", "20000").load())
        df = frames[0]
        for f in frames[1:]:
            df = df.unionByName(f)
        return _typed(df, ddl)

    ev = read([w.bucket_share(ev_sql, k, shares) for k in range(shares)], EV_DDL)
    me = read([w.bucket_share(me_sql, k, shares) for k in range(shares)], ME_DDL)
    li = read([w.links_share(li_sql, k, shares) for k in range(shares)], LI_DDL)
    attrs = []
    for _, q in _attr_queries(plan, d, lo, hi, None, scan):
        if q is None:
            attrs.append(session.createDataFrame([], ATTR_DDL))
        else:
            attrs.append(read([w.bucket_share(q, k, shares) for k in range(shares)], ATTR_DDL))
    return Window(ev, me, li, attrs, total)


EV_DDL = "seq BIGINT, order_id STRING, hop INT, phase INT, t BIGINT"
ME_DDL = "seq BIGINT, obj STRING"
LI_DDL = "obj STRING, other STRING, order_id STRING"
ATTR_DDL = "seq BIGINT, t BIGINT, src STRING, eid STRING, v STRING"


def shares_for(rows: int, spread: int) -> int:
    """Partitions for a window of ``rows`` events: one per ~ROWS_PER_SHARE, at most
    ``spread`` (small windows are not worth many tasks)."""
    return max(1, min(spread, math.ceil(rows / ROWS_PER_SHARE)))


def _typed(df: Any, ddl: str) -> Any:
    """Columns in the DDL's names and types (JDBC and Parquet readers type their own way)."""
    from pyspark.sql import functions as F

    cols = [c.strip().split(" ") for c in ddl.split(",")]
    return df.select(*[F.col(n).cast(t).alias(n) for n, t in cols])


def parquet_window(session: Any, manifest: Manifest) -> Window:
    """The window from an export's Parquet files."""

    def read(name: str, ddl: str) -> Any:
        return _typed(session.read.schema(ddl).parquet(manifest.table_path(name)), ddl)

    tables = manifest.attr_tables()
    return Window(
        read("ev", EV_DDL), read("me", ME_DDL), read("li", LI_DDL),
        [read(tables[k], ATTR_DDL) for k in tables], manifest.rows.get("ev", 0),
    )  # fmt: skip


# -- pass 2: one part in a task ------------------------------------------------------------------


@dataclass
class TaskSpec:
    """What every task needs beside its rows (pickled once per task)."""

    config: Config
    as_of: int
    lo: int
    judge: dict[str, float]
    last: dict[str, float | None]
    attrs: list[tuple[str, str]]
    order_groups: int  # groups below this hold orders; the others, objects of no order
    memory: str
    part_orders: int | None
    plan: Plan | None = field(default=None, repr=False)


def judge_task(spec: TaskSpec) -> Callable[..., Iterator[pa.RecordBatch]]:
    """The function ``applyInArrow`` runs per group (its type hints select the streaming form:
    a group's rows go to DuckDB batch by batch, never whole in Python)."""

    def run(
        key: tuple[pa.Scalar, ...], batches: Iterator[pa.RecordBatch]
    ) -> Iterator[pa.RecordBatch]:
        first = next(batches, None)
        if first is None:
            return
        g = int(first.column("g")[0].as_py())  # the group's part (its key only places it)
        yield from _judge_group(spec, g, _chain(first, batches))

    return run


def _judge_group(
    spec: TaskSpec, g: int, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    plan = compile_plan(spec.config)
    with WindowDB(plan, memory=spec.memory, threads=1) as db:
        db.create(spec.attrs)
        first = next(batches, None)
        if first is None:
            return
        c = db.con
        src = pa.RecordBatchReader.from_batches(first.schema, _chain(first, batches))
        c.register("_rows", src)
        c.execute("CREATE TEMP TABLE raw AS SELECT * FROM _rows")
        c.unregister("_rows")
        c.execute(
            "INSERT INTO ev (seq, order_id, hop, phase, t) "
            f"SELECT seq, order_id, hop, phase, t FROM raw WHERE tag = {EV}"
        )
        c.execute(f"INSERT INTO me SELECT seq, obj FROM raw WHERE tag = {ME}")
        c.execute(f"INSERT INTO li SELECT obj, other, order_id FROM raw WHERE tag = {LI}")
        for k, key in enumerate(spec.attrs):
            c.execute(
                f"INSERT INTO {db.attr_tables[key]} SELECT seq, t, src, eid, v FROM raw "
                f"WHERE tag = {ATTR + k}"
            )
        early = {
            r[0] for r in c.execute(f"SELECT order_id FROM raw WHERE tag = {EARLY}").fetchall()
        }
        keys = {
            int(r[0]): (r[1], r[2])
            for r in c.execute(f"SELECT seq, src, eid FROM raw WHERE tag = {KEYS}").fetchall()
        }
        c.execute("DROP TABLE raw")
        db.loaded()
        db.resolve(spec.part_orders)
        orders = g < spec.order_groups

        def started_before(ids: list[str]) -> set[str]:
            return {i for i in ids if i in early}

        def event_keys(seqs: Any) -> tuple[list[str], list[str]]:
            got = [keys.get(int(s), ("", "")) for s in seqs]
            return [x[0] for x in got], [x[1] for x in got]

        out = _Out(g)
        for part, _ctx in judge_parts(
            plan, db, spec.as_of, spec.judge, window_start=spec.lo,
            started_before=started_before if orders else None,
            event_keys=None if orders else event_keys, last=spec.last, unlinked=not orders,
        ):  # fmt: skip
            yield from out.part(part)


def murmur3_int(x: int, seed: int = 42) -> int:
    """Spark's Murmur3_x86_32.hashInt (the hash of ``hash()`` and of hash partitioning)."""
    m = 0xFFFFFFFF

    def rotl(v: int, r: int) -> int:
        return ((v << r) | (v >> (32 - r))) & m

    k1 = (x & m) * 0xCC9E2D51 & m
    k1 = rotl(k1, 15) * 0x1B873593 & m
    h1 = rotl((seed & m) ^ k1, 13)
    h1 = (h1 * 5 + 0xE6546B64) & m
    h1 ^= 4
    h1 ^= h1 >> 16
    h1 = h1 * 0x85EBCA6B & m
    h1 ^= h1 >> 13
    h1 = h1 * 0xC2B2AE35 & m
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 & 0x80000000 else h1


def partition_keys(n: int) -> list[int]:
    """For each partition p of n, the smallest int key Spark's hash partitioning puts there."""
    keys: dict[int, int] = {}
    x = 0
    while len(keys) < n:
        keys.setdefault(murmur3_int(x) % n, x)
        x += 1
    return [keys[p] for p in range(n)]


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


class _Out:
    """A task's results as rows of OUT_SCHEMA: rule rows (r), overdue units (v), population
    points (p), orders with their state (o), units waiting on watermarks (w)."""

    def __init__(self, g: int):
        self.g = g
        self.i = 0

    def part(self, part: PartResult) -> Iterator[pa.RecordBatch]:
        for tag, df in (("r", part.rows), ("v", part.overdue)):
            if len(df):
                yield self._rows(tag, df)
        for req, (a, b) in part.points.items():
            if len(a):
                yield self._batch("p", len(a), req=np.full(len(a), req, dtype=np.int32), a=a, b=b)
        if len(part.order_ids):
            yield self._batch(
                "o", len(part.order_ids), order_id=part.order_ids, state=part.state,
                due=np.asarray(part.next_due, dtype=np.float64),
            )  # fmt: skip
        if part.waiting:
            hops = list(part.waiting)
            yield self._batch(
                "w", len(hops), hop=np.array(hops, dtype=object),
                n=np.array([part.waiting[h] for h in hops], dtype=np.int64),
            )  # fmt: skip

    def _rows(self, tag: str, df: pd.DataFrame) -> pa.RecordBatch:
        cols: dict[str, Any] = {c: df[c].to_numpy() for c in ("o", "last_seq", "since") if c in df}
        for c in ("order_id", "kind", "hop", "from_hop", "field", "obj"):
            cols[c] = [x if isinstance(x, str) else None for x in df[c]]
        cols["evidence"] = [
            orjson.dumps(e, option=orjson.OPT_SERIALIZE_NUMPY).decode() for e in df["evidence"]
        ]
        if tag == "v":
            cols["req"] = df["req"].to_numpy(dtype=np.int32)
            cols["ta"] = df["ta"].to_numpy(dtype=np.float64)
            cols["deadline"] = df["deadline"].to_numpy(dtype=np.float64)
        return self._batch(tag, len(df), **cols)

    def _batch(self, tag: str, rows: int, **cols: Any) -> pa.RecordBatch:
        arrays = []
        for name, typ in OUT_FIELDS:
            if name == "g":
                arrays.append(pa.array(np.full(rows, self.g, dtype=np.int32)))
            elif name == "tag":
                arrays.append(pa.array([tag] * rows, type=pa.string()))
            elif name == "i":
                arrays.append(pa.array(np.arange(self.i, self.i + rows, dtype=np.int64)))
            elif name in cols:
                arrays.append(pa.array(cols[name], type=typ, from_pandas=True))
            else:
                arrays.append(pa.nulls(rows, type=typ))
        self.i += rows
        return pa.RecordBatch.from_arrays(arrays, schema=OUT_SCHEMA)


# -- the run ---------------------------------------------------------------------------------


def reconcile_spark(
    store: Store,
    config: Config,
    *,
    as_of: int | None = None,
    parquet: str | Path | None = None,
    master: str | None = None,
    progress: Progress | None = None,
    session: Any = None,
) -> RunResult:
    """Reconcile the window on Spark and record the run in ``store`` as the local engine does.

    The window comes from ``parquet`` (an export; its as_of unless ``as_of`` names the same
    time) or, without it, from the store over JDBC (PostgreSQL only). ``session``: a running
    SparkSession to use (else one is started from [engine.spark] and stopped at the end).
    Spark judges every order of the window: the run is recorded as a full one."""
    t_start = time.perf_counter()
    started_at = time.time_ns() // 1000
    plan = compile_plan(config)
    manifest: Manifest | None = None
    if parquet is not None:
        manifest = read_manifest(parquet)
        check_manifest(manifest, config, plan, as_of, parquet, store)
        as_of = manifest.as_of
        watermarks = dict(manifest.watermarks)
        max_seq = manifest.max_ingest_seq
    else:
        if store.dialect != "postgresql":
            raise SparkUnavailable(
                "--engine spark reads a PostgreSQL store over JDBC; for this "
                f"{store.dialect} store, write the window with 'ordertrail export --parquet DIR' "
                "and pass --parquet DIR",
                2,
            )
        as_of = as_of if as_of is not None else time.time_ns() // 1000
        watermarks = store.watermarks()
        max_seq = store.max_ingest_seq()
    lo = as_of - config.pipeline.lookback
    judge = judge_times(config, as_of, watermarks)

    def stage(name: str, pct: float) -> None:
        if progress:
            progress(name, int(pct), 100)

    own = session is None
    if own:
        stage("starting Spark", 0)
        session = start_session(config.engine, master, jdbc=manifest is None)
    run = _SparkRun(session, store, config, plan, as_of, lo, judge, stage)
    try:
        stage("reading the window", 5)
        if manifest is not None:
            window = parquet_window(session, manifest)
        else:
            window = jdbc_window(session, store, plan, lo, as_of, max_seq, 2 * run.parallelism())
        judged = run.evaluate(window)
        result, _ = _record(
            store, config, judged, None, "", "full", as_of, lo, max_seq, watermarks, t_start,
            stage, started_at,
        )  # fmt: skip
        stage("done", 100)
        return result
    except OrdertrailError:
        raise
    except Exception as e:
        if type(e).__module__.split(".")[0] in ("pyspark", "py4j"):
            raise SparkUnavailable(f"Spark failed: {_first_line(e)}", 3) from e
        raise
    finally:
        run.release()
        if own:
            session.stop()


class _SparkRun:
    """One run's Spark work: pass 1, pass 2, and the driver's questions to their results."""

    def __init__(
        self, session: Any, store: Store, config: Config, plan: Plan, as_of: int, lo: int,
        judge: dict[str, float], stage: Callable[[str, float], None],
    ):  # fmt: skip
        self.session = session
        self.store = store
        self.config = config
        self.plan = plan
        self.as_of = as_of
        self.lo = lo
        self.judge = judge
        self.stage = stage
        self.backend = SqlBackend(store)
        self._cached: list[Any] = []

    def parallelism(self) -> int:
        return max(1, int(self.session.sparkContext.defaultParallelism))

    def _keep(self, df: Any) -> Any:
        from pyspark import StorageLevel

        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        self._cached.append(df)
        return df

    def release(self) -> None:
        for df in self._cached:
            with contextlib.suppress(Exception):  # the session may be gone already
                df.unpersist()
        self._cached = []

    # -- pass 1 -----------------------------------------------------------------------------
    def evaluate(self, win: Window) -> Judged:
        from pyspark.sql import functions as F

        plan, cfg = self.plan, self.config
        par = self.parallelism()
        if "spark.sql.shuffle.partitions" not in dict(cfg.engine.spark_conf):
            self.session.conf.set(
                "spark.sql.shuffle.partitions", str(shares_for(win.rows, 2 * par))
            )
        ev = self._keep(win.ev.where(F.col("hop") >= 0))  # events at no hop of the pipeline go
        me = self._keep(win.me)
        li = win.li
        self.stage("resolving orders and objects", 20)
        direct = self._keep(li.where(F.col("order_id") != "").select("obj", "order_id").distinct())
        kind_of = F.substring_index  # "kind:id" -> kind (object kinds never hold a colon)
        # an object of a kind with via belongs to the orders of the via objects it is linked
        # with: kinds in order of their via chain's depth, one join per depth (the local
        # engine's kind-by-kind inserts, a level at a time)
        depth: dict[str, int] = {}

        def depth_of(k: str) -> int:
            if k not in depth:
                v = plan.via.get(k)
                depth[k] = 0 if v is None else 1 + (depth_of(v) if v in plan.via else 0)
            return depth[k]

        vias = [(k, v, depth_of(k)) for k in _via_order(plan) if (v := plan.via.get(k))]
        oo = direct
        if vias:
            kinds = F.broadcast(
                self.session.createDataFrame(vias, "kind STRING, via STRING, depth INT")
            )
            links = li.where(F.col("other") != "").select(
                "obj", F.col("other").alias("via_obj"),
                kind_of(F.col("obj"), ":", 1).alias("kind"),
                kind_of(F.col("other"), ":", 1).alias("via"),
            ).join(kinds, ["kind", "via"])  # fmt: skip
            for d in range(1, max(x[2] for x in vias) + 1):
                got = oo.select(F.col("obj").alias("via_obj"), "order_id")
                step = links.where(F.col("depth") == d).join(got, "via_obj")
                oo = oo.unionByName(step.select("obj", "order_id"))
        oo = self._keep(oo.distinct())
        mem = (
            ev.where(F.col("order_id") != "").select("seq", "order_id")
            .unionByName(me.join(oo, "obj").join(ev.select("seq"), "seq").select("seq", "order_id"))
            .distinct()
        )  # fmt: skip
        mem = self._keep(mem)
        unl = me.select("obj").distinct().join(oo.select("obj").distinct(), "obj", "left_anti")
        # orphan candidates: orders with no event at an entry hop whose first event is late
        # enough in the window; the store says which of them started before it
        entry = list(plan.entry)
        per_order = (
            mem.join(ev.select("seq", "hop", "t"), "seq")
            .groupBy("order_id")
            .agg(
                F.min("t").alias("first_t"),
                F.max(F.col("hop").isin(entry).cast("int") if entry else F.lit(0)).alias("entered"),
            )
        )
        cand = per_order.where(
            (F.col("entered") == 0) & (F.col("first_t") > F.lit(self.lo + plan.longest_path))
        ).select("order_id")
        # each unlinked object's first window events (at its earliest time)
        ux = me.join(unl, "obj").join(ev.select("seq", "hop", "phase", "t"), "seq")
        umin = ux.groupBy("obj").agg(F.min("t").alias("t"))
        ucand = self._keep(ux.join(umin, ["obj", "t"]))
        ties = ucand.groupBy("obj").count().where(F.col("count") > 1).select("obj")

        facts = self._facts(ev, mem, unl, cand, ucand, ties)
        n_orders = facts["orders"]
        part_orders = cfg.engine.part_orders or 500_000
        n_parts = max(1, math.ceil(n_orders / part_orders))
        n_parts = max(n_parts, min(2 * par, math.ceil(n_orders / MIN_PART_ORDERS)))
        n_unl = max(1, math.ceil(facts["unlinked"] / part_orders)) if facts["unlinked"] else 0
        logger.info(
            "%s orders in %s parts, %s unlinked objects", n_orders, n_parts, facts["unlinked"]
        )

        early = self._early(cand, facts["cand_ids"]) if entry and facts["candidates"] else None
        tie_seqs = ucand.join(ties, "obj").select("seq").distinct()
        keys = self._tie_keys(tie_seqs, facts["tie_seqs"]) if facts["ties"] else None

        # -- pass 2 input: every part's rows, tagged by table ---------------------------------
        def part_of(col: Any) -> Any:
            return F.pmod(F.xxhash64(col), F.lit(n_parts)).cast("int")

        empty = {"seq": None, "order_id": None, "hop": None, "phase": None, "t": None,
                 "obj": None, "other": None, "src": None, "eid": None, "v": None}  # fmt: skip

        def tagged(df: Any, tag: int, g: Any, **cols: Any) -> Any:
            sel = [g.cast("int").alias("g"), F.lit(tag).alias("tag")]
            for name, typ in (("seq", "bigint"), ("order_id", "string"), ("hop", "int"),
                              ("phase", "int"), ("t", "bigint"), ("obj", "string"),
                              ("other", "string"), ("src", "string"), ("eid", "string"),
                              ("v", "string")):  # fmt: skip
                val = cols.get(name, empty[name])
                sel.append((val if val is not None else F.lit(None)).cast(typ).alias(name))
            return df.select(*sel)

        sp = mem.select(part_of(F.col("order_id")).alias("g"), "seq").distinct()
        own = F.col("order_id")
        parts = [
            tagged(
                sp.join(ev, "seq"), EV, F.col("g"), seq=F.col("seq"),
                order_id=F.when((own != "") & (part_of(own) == F.col("g")), own).otherwise(""),
                hop=F.col("hop"), phase=F.col("phase"), t=F.col("t"),
            ),
            tagged(sp.join(me, "seq"), ME, F.col("g"), seq=F.col("seq"), obj=F.col("obj")),
            tagged(oo, LI, part_of(F.col("order_id")), obj=F.col("obj"), other=F.lit(""),
                   order_id=F.col("order_id")),
        ]  # fmt: skip
        if win.attrs:  # every attribute table, tagged, in one join with the parts' events
            avs = [av.select(F.lit(ATTR + k).alias("tag"), "seq", "t", "src", "eid", "v")
                   for k, av in enumerate(win.attrs)]  # fmt: skip
            av_all = avs[0]
            for av in avs[1:]:
                av_all = av_all.unionByName(av)
            av_p = sp.join(av_all, "seq")
            sel = [F.col("g").cast("int").alias("g"), F.col("tag").cast("int").alias("tag")]
            for name, typ in (("seq", "bigint"), ("order_id", "string"), ("hop", "int"),
                              ("phase", "int"), ("t", "bigint"), ("obj", "string"),
                              ("other", "string"), ("src", "string"), ("eid", "string"),
                              ("v", "string")):  # fmt: skip
                col = F.col(name) if name in ("seq", "t", "src", "eid", "v") else F.lit(None)
                sel.append(col.cast(typ).alias(name))
            parts.append(av_p.select(*sel))
        if early is not None:
            parts.append(
                tagged(early, EARLY, part_of(F.col("order_id")), order_id=F.col("order_id"))
            )
        if n_unl:
            ug = F.lit(n_parts) + F.pmod(F.xxhash64(F.col("obj")), F.lit(n_unl))
            useq = ucand.select(ug.cast("int").alias("g"), "seq", "hop", "phase", "t").distinct()
            parts.append(tagged(useq, EV, F.col("g"), seq=F.col("seq"), order_id=F.lit(""),
                                hop=F.col("hop"), phase=F.col("phase"), t=F.col("t")))  # fmt: skip
            parts.append(tagged(ucand, ME, ug, seq=F.col("seq"), obj=F.col("obj")))
            if keys is not None:
                kg = ucand.select(ug.cast("int").alias("g"), "seq").distinct().join(keys, "seq")
                parts.append(tagged(kg, KEYS, F.col("g"), seq=F.col("seq"), src=F.col("src"),
                                    eid=F.col("eid")))  # fmt: skip
        inp = parts[0]
        for p in parts[1:]:
            inp = inp.unionByName(p)
        groups = n_parts + n_unl
        spec = TaskSpec(
            config=cfg, as_of=self.as_of, lo=self.lo, judge=self.judge, last=facts["last"],
            attrs=attribute_keys(plan), order_groups=n_parts,
            memory=cfg.engine.memory or TASK_MEMORY, part_orders=cfg.engine.part_orders,
        )  # fmt: skip
        self.stage(f"judging {n_orders:,} orders in {n_parts} parts", 40)
        # each group in a partition of its own: keys that Spark's hash partitioning sends to
        # partition g (no sampling pass, no two parts queued on one task)
        keyed = inp.withColumn(
            "k", F.element_at(F.array(*[F.lit(x) for x in partition_keys(groups)]), F.col("g") + 1)
        )
        out = self._keep(
            keyed.repartition(groups, "k").groupBy("k").applyInArrow(judge_task(spec), OUT_DDL)
        )
        return self._outcome(out, ev, me, facts)

    def _facts(
        self, ev: Any, mem: Any, unl: Any, cand: Any, ucand: Any, ties: Any
    ) -> dict[str, Any]:
        """The window-wide facts in one Spark job: orders, events and last activity per hop,
        unlinked objects, and — when there are few — the orphan candidates and the tied first
        events of unlinked objects themselves (else they are streamed later)."""
        from pyspark.sql import functions as F

        def one(what: str, df: Any) -> Any:
            return df.select(F.lit(what).alias("what"), F.lit(-1).cast("bigint").alias("k"),
                             F.lit(None).cast("double").alias("x"), F.count("*").alias("n"),
                             F.lit(None).cast("string").alias("id"))  # fmt: skip

        def ids(what: str, df: Any, col: str) -> Any:
            k = F.col(col).cast("bigint") if col == "seq" else F.lit(-1).cast("bigint")
            i = F.col(col).cast("string") if col != "seq" else F.lit(None).cast("string")
            return df.limit(FEW + 1).select(F.lit(what).alias("what"), k.alias("k"),
                                            F.lit(None).cast("double").alias("x"),
                                            F.lit(1).cast("bigint").alias("n"), i.alias("id"))  # fmt: skip

        per_hop = ev.groupBy("hop").agg(
            F.max(F.when(F.col("phase") != 1, F.col("t"))).cast("double").alias("x"),
            F.count("*").alias("n"),
        ).select(F.lit("hop").alias("what"), F.col("hop").cast("bigint").alias("k"), "x", "n",
                 F.lit(None).cast("string").alias("id"))  # fmt: skip
        tie_seqs = ucand.join(ties, "obj").select("seq").distinct()
        parts = [per_hop, one("orders", mem.select("order_id").distinct()), one("unlinked", unl),
                 one("candidates", cand), one("ties", tie_seqs), ids("cand", cand, "order_id"),
                 ids("tie", tie_seqs, "seq")]  # fmt: skip
        df = parts[0]
        for p in parts[1:]:
            df = df.unionByName(p)
        got: dict[str, Any] = {"orders": 0, "unlinked": 0, "candidates": 0, "ties": 0, "events": 0}
        act: dict[int, float] = {}
        few: dict[str, list[Any]] = {"cand": [], "tie": []}
        for r in df.collect():
            if r["what"] == "hop":
                got["events"] += int(r["n"])
                if r["x"] is not None:
                    act[int(r["k"])] = float(r["x"])
            elif r["what"] in few:
                few[r["what"]].append(r["id"] if r["what"] == "cand" else int(r["k"]))
            else:
                got[r["what"]] = int(r["n"])
        got["last"] = {name: act.get(h) for h, name in enumerate(self.plan.names)}
        got["cand_ids"] = few["cand"] if got["candidates"] <= FEW else None
        got["tie_seqs"] = few["tie"] if got["ties"] <= FEW else None
        return got

    def _early(self, cand: Any, few: list[str] | None) -> Any:
        """Orphan candidates with events of their own before the window (asked of the store,
        in batches, as the local engine asks for its candidates)."""
        found: list[str] = []
        batch: list[str] = []
        stream = few if few is not None else (r["order_id"] for r in cand.toLocalIterator())
        for oid in stream:
            batch.append(oid)
            if len(batch) >= 500:
                found.extend(self.backend.started_before(batch, self.lo))
                batch = []
        if batch:
            found.extend(self.backend.started_before(batch, self.lo))
        return self.session.createDataFrame([(o,) for o in sorted(found)], "order_id STRING")

    def _tie_keys(self, tie_seqs: Any, few: list[int] | None) -> Any:
        """(source, event_id) of the tied first events of unlinked objects (the tie-break)."""
        seqs = few if few is not None else [int(r["seq"]) for r in tie_seqs.toLocalIterator()]
        src, eid = self.backend.event_keys(seqs) if seqs else ([], [])
        return self.session.createDataFrame(
            list(zip(seqs, src, eid, strict=True)), "seq BIGINT, src STRING, eid STRING"
        )

    # -- the driver's side ------------------------------------------------------------------
    def _outcome(self, out: Any, ev: Any, me: Any, facts: dict[str, Any]) -> Judged:
        from pyspark.sql import functions as F

        counts = out.where(F.col("tag") == "o").groupBy("state").agg(F.count("*").alias("n"))
        counts = counts.select(
            *[F.col(c) if c in ("state", "n") else F.lit("s" if c == "tag" else None)
              .cast(_SPARK_TYPES[t]).alias(c) for c, t in OUT_FIELDS]
        )  # fmt: skip
        npts = out.where(F.col("tag") == "p").groupBy("req").agg(F.count("*").alias("n"))
        npts = npts.select(
            *[F.col(c) if c in ("req", "n") else F.lit("c" if c == "tag" else None)
              .cast(_SPARK_TYPES[t]).alias(c) for c, t in OUT_FIELDS]
        )  # fmt: skip
        # rule rows, overdue units, waiting counts, order states and population sizes: what
        # the driver holds
        small = (
            out.where(F.col("tag").isin("r", "v", "w")).unionByName(counts).unionByName(npts)
            .toArrow()
        )  # fmt: skip
        self.stage("vanished or stalled", 80)
        tag = small.column("tag").to_pylist()
        states = {
            str(s): int(n)
            for t_, s, n in zip(
                tag, small.column("state").to_pylist(), small.column("n").to_pylist(), strict=True
            )
            if t_ == "s"
        }
        waiting: dict[str, int] = {}
        for t_, h, n in zip(
            tag, small.column("hop").to_pylist(), small.column("n").to_pylist(), strict=True
        ):
            if t_ == "w":
                waiting[h] = waiting.get(h, 0) + int(n)
        point_counts = {
            int(r): int(n)
            for t_, r, n in zip(
                tag, small.column("req").to_pylist(), small.column("n").to_pylist(), strict=True
            )
            if t_ == "c"
        }
        rows = _frame(small, "r")
        over = _frame(small, "v")
        del small
        pts = out.where(F.col("tag") == "p")
        req_col = over["req"].to_numpy(dtype=np.int64)
        ta_col = over["ta"].to_numpy(dtype=float)
        dl_col = over["deadline"].to_numpy(dtype=float)

        def useful(req: int) -> Any:
            """The points of an edge that can count for one of its overdue units: reached the
            source after the earliest of them, and the target after the earliest deadline."""
            cond = F.col("req") == req
            ta, dl = ta_col[req_col == req], dl_col[req_col == req]
            if len(ta) and not np.isnan(ta).all():
                cond &= F.col("a") > F.lit(float(np.nanmin(ta)))
            if len(dl) and not np.isnan(dl).all():
                cond &= F.col("b") > F.lit(float(np.nanmin(dl)))
            return cond

        def fetch(cond: Any) -> dict[int, EdgeProgress]:
            tb = pts.where(cond).select("req", "a", "b").toArrow()
            r = tb.column("req").to_numpy().astype(np.int64)
            a = tb.column("a").to_numpy().astype(np.float64)
            b = tb.column("b").to_numpy().astype(np.float64)
            return {int(k): EdgeProgress(a[r == k], b[r == k]) for k in np.unique(r)}

        need = sorted({int(x) for x in req_col})
        batched = sum(point_counts.get(r, 0) for r in need) <= POINTS_AT_ONCE
        ready: dict[int, EdgeProgress] = {}
        if need and batched:  # every edge's useful points in one job
            cond = useful(need[0])
            for r in need[1:]:
                cond |= useful(r)
            ready = fetch(cond)

        def population(req: int) -> EdgeProgress:
            got = ready if batched else fetch(useful(req))  # large: one edge at a time
            return got.pop(req, EdgeProgress(np.empty(0), np.empty(0)))

        part = PartResult(rows, over, {}, np.empty(0, dtype=object), np.empty(0, dtype=bool),
                          np.empty(0, dtype=object), np.empty(0))  # fmt: skip
        findings = finish([part], population, facts["last"])
        self.stage("evidence", 90)
        findings = finish_findings(findings, self.backend)
        orders = out.where(F.col("tag") == "o")
        q = orders.where(F.col("state") == "in_flight").select("order_id", "due")
        if states.get("in_flight", 0) <= PENDING_AT_ONCE:  # one job
            tb = q.toArrow()
            ids = tb.column("order_id").to_pylist()
            dues = tb.column("due").to_pylist()
        else:  # a partition at a time (a job each)
            got = [(r["order_id"], r["due"]) for r in q.toLocalIterator()]
            ids, dues = [x[0] for x in got], [x[1] for x in got]
        pending = [
            (str(o), None if d is None or math.isnan(d) else int(d))
            for o, d in zip(ids, dues, strict=True)
        ]
        return Judged(
            findings, sum(states.values()), states, pending, None,
            lambda ids: self._present_orders(ids, orders), self._present_objects(me),
            facts["unlinked"], facts["events"], facts["last"], waiting,
        )  # fmt: skip

    def _present_orders(self, ids: Sequence[str], orders: Any) -> set[str]:
        """Which of these orders are in the window."""
        if not ids:
            return set()
        q = self.session.createDataFrame([(o,) for o in sorted(set(ids))], "order_id STRING")
        return {r[0] for r in orders.select("order_id").join(q, "order_id", "left_semi").collect()}

    def _present_objects(self, me: Any) -> set[str]:
        """Of the objects of no order with an active finding in the store (the only objects a
        run asks about: is an unlinked object's finding resolved or expired), those the window
        still names."""
        with self.store.engine.connect() as conn:
            objs = runs.active_object_findings(conn)
        if not objs:
            return set()
        q = self.session.createDataFrame([(b,) for b in objs], "obj STRING")
        return {r[0] for r in me.select("obj").distinct().join(q, "obj", "left_semi").collect()}


def _frame(tb: pa.Table, tag: str) -> pd.DataFrame:
    """Rows of one tag back as the frame the rules made: object columns, None for no object,
    evidence as dicts; in the tasks' order (group, then row)."""
    import pyarrow.compute as pc

    sub = tb.filter(pc.equal(tb.column("tag"), tag))
    sub = sub.sort_by([("g", "ascending"), ("i", "ascending")])
    cols: dict[str, Any] = {
        "o": sub.column("o").to_numpy().astype(np.int64),
        "last_seq": sub.column("last_seq").to_numpy().astype(np.int64),
    }
    for c in ("order_id", "kind", "hop", "from_hop", "field", "obj"):
        cols[c] = np.array(sub.column(c).to_pylist(), dtype=object)
    cols["since"] = sub.column("since").to_numpy().astype(np.float64)
    cols["evidence"] = [orjson.loads(e) for e in sub.column("evidence").to_pylist()]
    if tag == "v":
        cols["req"] = sub.column("req").to_numpy().astype(np.int64)
        cols["ta"] = np.asarray(sub.column("ta").to_numpy(zero_copy_only=False), dtype=np.float64)
        cols["deadline"] = np.asarray(
            sub.column("deadline").to_numpy(zero_copy_only=False), dtype=np.float64
        )
    if not sub.num_rows:
        cols = {k: np.asarray(v)[:0] if not isinstance(v, list) else [] for k, v in cols.items()}
    return pd.DataFrame(cols)
