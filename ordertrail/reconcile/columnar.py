"""The columnar backend: the window staged in DuckDB, resolved and reduced there in SQL, one hash
part of the orders at a time, so memory is set by the part, not by the window.

Tables: ``ev`` (seq, order_id, hop, phase, t), ``me`` (seq, obj "kind:id"), ``li`` (obj, other
object or "", order_id or ""), and one per attribute the rules compare (seq, t, src, eid, v as
JSON text; ``vk``, a comparable key, for ``unique_by``). From them: ``oo`` (object -> order,
through links and ``via``), ``ord`` (order -> part), ``emp`` (event -> order, with the event's
hop, phase and time; ``mem`` without them). A part's :class:`State` is built by a few GROUP BY
queries; the rules (``rules.py``) read only that.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from ordertrail.reconcile.plan import Plan
from ordertrail.reconcile.state import COMPLETED, FAILED, MISSING, State, Units
from ordertrail.store.window import PHASE_CODES

logger = logging.getLogger(__name__)

# orders per part: ~2 KB of arrays per order and hop group; the default keeps a part near 1 GB
DEFAULT_PART_ORDERS = 500_000
# above this many parts the window's per-part copies are sorted by part (see resolve)
SORT_PARTS = 4
SPILL_PREFIX = "ordertrail-duck-"


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _host() -> str:
    """This host's name as it can stand in a directory name between dashes; a name that had
    to change takes a hash of itself, so that two hosts ("web-1", "web_1") never share one."""
    import hashlib
    import re
    import socket

    raw = socket.gethostname()
    name = re.sub(r"[^A-Za-z0-9_.]", "_", raw)
    if name != raw or not name:
        name += "_" + hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return name


LOCK_NAME = ".ordertrail-owner"  # flocked by the run while its spill directory is in use
_SPILL_LOCKS: dict[str, int] = {}  # spill directory -> the descriptor holding its lock


def sweep_spill_dirs(root: str | None = None) -> list[str]:
    """Remove the spill directories that runs on this host left behind when they were killed
    (DuckDB's spill files can be gigabytes). A run holds an exclusive ``flock`` on a file in its
    directory for as long as it uses it, and the kernel releases it when the process dies,
    whatever PID namespace or container it ran in; so a directory whose lock can be taken is a
    dead run's. Directories of another host, without the lock file (an older version's), and
    links are left alone."""
    import shutil
    from pathlib import Path

    if os.name != "posix":
        return []
    import fcntl

    mine = f"{SPILL_PREFIX}{_host()}-"
    removed = []
    for p in Path(root or tempfile.gettempdir()).glob(f"{mine}*"):
        if p.is_symlink() or not p.is_dir() or str(p) in _SPILL_LOCKS:
            continue
        try:
            fd = os.open(p / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # no lock file (not ours, or not yet), or not readable
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: a live run's
            os.close(fd)
            continue
        try:
            shutil.rmtree(p, ignore_errors=True)
        finally:
            os.close(fd)
        if not p.exists():
            removed.append(str(p))
            logger.info("removed %s, left by a run that ended without cleaning up", p)
    return removed


def spill_dir() -> str:
    """A new directory for DuckDB's spill files, locked by this process (see
    :func:`sweep_spill_dirs`) and named after the host and process for whoever looks."""
    sweep_spill_dirs()
    path = tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{_host()}-{os.getpid()}-")
    if os.name == "posix":
        import fcntl

        # locked before it has its name: a sweep never sees the lock file unlocked
        tmp = os.path.join(path, LOCK_NAME + ".new")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp, os.path.join(path, LOCK_NAME))
        _SPILL_LOCKS[path] = fd
    return path


def remove_spill_dir(path: str) -> None:
    """Remove a spill directory this process made, then let go of its lock."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    fd = _SPILL_LOCKS.pop(path, None)
    if fd is not None:
        os.close(fd)


@dataclass
class Facts:
    """What the rules need beside a part's state, reduced in SQL."""

    dup: dict[int, pd.DataFrame]  # unique hop -> rows (u, n, first_t, second_t)
    check_values: list[pd.DataFrame]  # per check: rows (o, hop, t, v)
    unlinked: pd.DataFrame  # obj, hop, t, seq — objects of no order, their first window event


_IDLE: list[tuple[Any, str]] = []  # in-memory databases left by small windows, emptied
_IDLE_LOCK = threading.Lock()
_IDLE_MAX = 4


def close_idle() -> None:
    """Close the kept databases and remove their spill directories (at exit)."""
    with _IDLE_LOCK:
        kept = list(_IDLE)
        _IDLE.clear()
    for con, tmp in kept:
        with contextlib.suppress(Exception):
            con.close()
        remove_spill_dir(tmp)


atexit.register(close_idle)


def _idle_pop() -> tuple[Any, str] | None:
    with _IDLE_LOCK:
        return _IDLE.pop() if _IDLE else None


def _empty(con: Any, keep: Sequence[str] = ()) -> None:
    """Drop every view and table of a DuckDB database but those named in ``keep``."""
    for what, listing in (
        ("VIEW", "SELECT schema_name, view_name, temporary FROM duckdb_views() WHERE NOT internal"),
        ("TABLE", "SELECT schema_name, table_name, temporary FROM duckdb_tables()"),
    ):
        for schema, name, temp in con.execute(listing).fetchall():
            if name not in keep:
                where = "temp.main" if temp else f'"{schema}"'
                con.execute(f'DROP {what} IF EXISTS {where}."{name}"')


def _idle_push(con: Any, tmp: str) -> bool:
    """Keep an in-memory database for the next small window, emptied of every table; False
    when enough are kept already (or it cannot be emptied)."""
    with _IDLE_LOCK:
        if len(_IDLE) >= _IDLE_MAX:
            return False
    try:
        _empty(con)
    except Exception:
        return False
    with _IDLE_LOCK:
        _IDLE.append((con, tmp))
    return True


class WindowDB:
    """The window of one reconciliation (or of a few chosen orders) in DuckDB."""

    def __init__(
        self, plan: Plan, *, memory: str | None = None, threads: int | None = None,
        path: str | None = None, small: bool = False,
    ):  # fmt: skip
        """``path``: a database file (an incremental run's cache) instead of memory.
        ``small``: a few chosen orders (trace, an order page), in a reused in-memory database."""
        self.plan = plan
        self.path = path
        self.n_parts = 1
        self.attr_tables: dict[tuple[str, str], str] = {}
        self._memory = memory
        # a small in-memory window (trace, an order page) takes an idle database: opening one
        # costs 15-30 ms, a good part of an order page
        self._pooled = small and not path and not memory and not threads
        got = _idle_pop() if self._pooled else None
        if got is not None:
            self.con, self._tmp = got
            return
        import duckdb

        self._tmp = spill_dir()
        self.con = duckdb.connect(path) if path else duckdb.connect()
        self.con.execute(f"SET temp_directory = {_q(self._tmp)}")
        self.con.execute("SET preserve_insertion_order = false")
        if memory:
            self.con.execute(f"SET memory_limit = {_q(memory)}")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")

    def close(self) -> None:
        if self._pooled and _idle_push(self.con, self._tmp):
            return
        self.con.close()
        remove_spill_dir(self._tmp)

    def __enter__(self) -> WindowDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- loading -------------------------------------------------------------------------------
    _SCHEMAS: ClassVar[dict[str, str]] = {
        "ev": "seq BIGINT, order_id VARCHAR, hop INTEGER, phase INTEGER, t BIGINT, objects VARCHAR",
        "me": "seq BIGINT, obj VARCHAR",
        "li": "obj VARCHAR, other VARCHAR, order_id VARCHAR",
    }
    _ATTR = "seq BIGINT, t BIGINT, src VARCHAR, eid VARCHAR, v VARCHAR"

    def create(self, attrs: Sequence[tuple[str, str]]) -> None:
        """Empty tables for the window and for each (role, key) attribute the rules compare."""
        for name, cols in self._SCHEMAS.items():
            self.con.execute(f"CREATE OR REPLACE TABLE {name} ({cols})")
        for k, key in enumerate(attrs):
            self.con.execute(f"CREATE OR REPLACE TABLE av{k} ({self._ATTR})")
            self.attr_tables[key] = f"av{k}"

    def insert(self, table: str, src: Any, con: Any = None) -> None:
        """Rows from an Arrow table or RecordBatchReader, batch by batch (DuckDB spills to disk
        past its memory budget). ``con``: a cursor of this database, for a reader thread."""
        con = con or self.con
        cols = "(seq, order_id, hop, phase, t)" if table == "ev" else ""
        name = f"_src{threading.get_ident()}"
        con.register(name, src)
        try:
            con.execute(f"INSERT INTO {table} {cols} SELECT * FROM {name}")
        finally:
            con.unregister(name)

    def insert_stored(self, src: Any, con: Any = None, table: str = "ev") -> None:
        """Events as the store holds them (hop and phase as text, objects as JSON text): hops
        and phases become the plan's codes here, in bulk."""
        con = con or self.con
        hop = " ".join(f"WHEN {_q(h)} THEN {i}" for i, h in enumerate(self.plan.names))
        phase = " ".join(f"WHEN {_q(p)} THEN {c}" for p, c in PHASE_CODES.items())
        name = f"_src{threading.get_ident()}"
        con.register(name, src)
        try:
            con.execute(
                f"INSERT INTO {table} SELECT seq, order_id, CASE hop {hop} ELSE -1 END, "
                f"CASE phase {phase} ELSE 0 END, t, objects FROM {name}"
            )
        finally:
            con.unregister(name)

    def _mentions(self, src: str, dst: str, where: str = "TRUE") -> None:
        """The objects the events of ``src`` name (their stored JSON, as the writer keeps it:
        kind -> list of ids) as rows of ``dst``. The JSON becomes a MAP in one pass: fifteen
        times faster than walking it with json_each."""
        self.con.execute(
            f"INSERT INTO {dst} SELECT seq, kv.key || ':' || unnest(kv.value) FROM ("
            "SELECT e.seq, unnest(map_entries("
            "json_transform_strict(e.objects, '\"MAP(VARCHAR, VARCHAR[])\"'))) AS kv "
            f"FROM {src} e WHERE e.objects IS NOT NULL AND e.objects <> '' AND ({where}))"
        )

    def cursor(self) -> Any:
        return self.con.cursor()

    def loaded(self) -> None:
        """After the inserts: the objects each event names (from its stored JSON) become rows
        of ``me``; events at no hop of the pipeline go; ``unique_by`` values get a comparable
        key (7 and 7.0 agree; "7" and true do not)."""
        c = self.con
        self._mentions("ev", "me")
        # events at no hop of the pipeline go; those naming objects leave their time behind, so
        # that their mentions can leave the window with them (an incremental run)
        c.execute(
            "CREATE OR REPLACE TABLE evx AS SELECT seq, t FROM ev "
            "WHERE hop < 0 AND objects IS NOT NULL AND objects <> ''"
        )
        c.execute("DELETE FROM ev WHERE hop < 0")
        c.execute("ALTER TABLE ev DROP COLUMN objects")
        for (role, _), tbl in self.attr_tables.items():
            if role == "unique":
                c.execute(f"CREATE OR REPLACE TABLE {tbl} AS {_keyed(tbl)}")

    # -- an incremental run: the cache brought up to date ---------------------------------------
    def begin_delta(self) -> dict[tuple[str, str], str]:
        """Staging tables for what an incremental run reads: ``evn`` (events as stored) and one
        per attribute table; returns the attribute staging names."""
        c = self.con
        c.execute(f"CREATE OR REPLACE TABLE evn ({self._SCHEMAS['ev']})")
        out = {}
        for key, tbl in self.attr_tables.items():
            c.execute(f"CREATE OR REPLACE TABLE n{tbl} ({self._ATTR})")
            out[key] = f"n{tbl}"
        return out

    def apply_delta(self, lo: int) -> None:
        """The staged events join the window (those after ``lo``; links from all of them),
        and whatever is at or before ``lo`` leaves it. Notes the orders this touches directly
        (their events left) and the events that came (see :meth:`changed_orders`)."""
        c = self.con
        lo = int(lo)
        c.execute("CREATE OR REPLACE TEMP TABLE oo0 AS SELECT * FROM oo")
        c.execute("CREATE OR REPLACE TEMP TABLE gone AS SELECT seq, order_id FROM ev WHERE t <= ?",
                  [lo])  # fmt: skip
        c.execute(
            "CREATE OR REPLACE TEMP TABLE touched AS SELECT order_id FROM gone "
            "WHERE order_id <> '' UNION SELECT oo.order_id FROM me JOIN gone USING (seq) "
            "JOIN oo USING (obj)"
        )
        c.execute(
            "CREATE OR REPLACE TEMP TABLE came AS SELECT seq FROM evn WHERE hop >= 0 AND t > ?",
            [lo],
        )
        c.execute("CREATE OR REPLACE TEMP TABLE men (seq BIGINT, obj VARCHAR)")
        self._mentions("evn", "men")
        c.execute(
            "CREATE OR REPLACE TEMP TABLE menx AS SELECT m.seq, m.obj, "
            "split_part(m.obj, ':', 1) AS kind, e.t, e.order_id FROM men m JOIN evn e USING (seq)"
        )
        # links hold from the event that shows them, in the window or before it
        c.execute("INSERT INTO li SELECT DISTINCT obj, '', order_id FROM menx WHERE order_id <> ''")
        c.execute(
            "INSERT INTO li SELECT DISTINCT a.obj, b.obj, '' FROM menx a JOIN menx b "
            "ON a.seq = b.seq AND a.kind <> b.kind"
        )
        c.execute(
            "DELETE FROM me WHERE seq IN (SELECT seq FROM gone "
            "UNION ALL SELECT seq FROM evx WHERE t <= ?)",
            [lo],
        )
        c.execute("DELETE FROM ev WHERE t <= ?", [lo])
        c.execute("DELETE FROM evx WHERE t <= ?", [lo])
        c.execute("INSERT INTO me SELECT seq, obj FROM menx WHERE t > ?", [lo])
        c.execute(
            "INSERT INTO evx SELECT seq, t FROM evn WHERE hop < 0 AND t > ? "
            "AND objects IS NOT NULL AND objects <> ''",
            [lo],
        )
        c.execute(
            "INSERT INTO ev SELECT seq, order_id, hop, phase, t FROM evn WHERE hop >= 0 AND t > ?",
            [lo],
        )
        for (role, _), tbl in self.attr_tables.items():
            c.execute(f"DELETE FROM {tbl} WHERE t <= ?", [lo])
            src = _keyed(f"n{tbl}") if role == "unique" else f"SELECT * FROM n{tbl}"
            c.execute(f"INSERT INTO {tbl} {src}")
            c.execute(f"DROP TABLE n{tbl}")
        c.execute("DROP TABLE evn")

    # -- the cache file ---------------------------------------------------------------------
    def keep_tables(self, tables: dict[str, Any]) -> None:
        """Arrow tables kept with the window (a cache's order states and overdue units)."""
        c = self.con
        for name, tb in tables.items():
            c.register("_x", tb)
            c.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _x")
            c.unregister("_x")

    def release(self, keep: Sequence[str] = ("ord",)) -> None:
        """A window that is not kept as a cache, once judged: every table but ``keep`` goes (by
        default its orders, which recording the run asks about), and with it their memory."""
        _empty(self.con, keep=keep)
        # DuckDB keeps freed buffers for reuse until its limit presses: a limit just above what
        # the kept tables use hands them back to the system (1.1 GB -> 0.3 GB on 1M orders)
        used = self.con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchall()
        self.con.execute(f"SET memory_limit = '{int(used[0][0] or 0) // 2**20 + 64}MB'")
        if self._memory:
            self.con.execute(f"SET memory_limit = {_q(self._memory)}")
        else:
            self.con.execute("RESET memory_limit")

    def keep(self, meta: dict[str, Any]) -> None:
        """Make this database a cache for the next incremental run: ``meta`` replaces any
        earlier one; working tables go."""
        c = self.con
        c.execute(f"CREATE TABLE IF NOT EXISTS pop ({self._pop})")
        meta = {**meta, "attr_tables": [[list(k), v] for k, v in self.attr_tables.items()]}
        c.execute("CREATE OR REPLACE TABLE meta (v VARCHAR)")
        c.execute("INSERT INTO meta VALUES (?)", [orjson.dumps(meta).decode()])
        for name in ("mem", "memp", "emp"):
            kind = c.execute(
                "SELECT table_type FROM information_schema.tables WHERE table_name = ?", [name]
            ).fetchall()
            if kind:
                c.execute(f"DROP {'VIEW' if kind[0][0] == 'VIEW' else 'TABLE'} {name}")
        for name in ("mo", "ord"):
            c.execute(f"DROP TABLE IF EXISTS {name}")

    def meta(self) -> dict[str, Any] | None:
        """A cache's meta (None: not a cache), and its attribute tables restored."""
        c = self.con
        if not c.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_name = 'meta'"
        ).fetchall():
            return None
        meta: dict[str, Any] = orjson.loads(c.execute("SELECT v FROM meta").fetchall()[0][0])
        self.attr_tables = {(k[0], k[1]): v for k, v in meta.pop("attr_tables")}
        return meta

    def affected(self, as_of: int, orphans: Sequence[str]) -> tuple[list[str], list[str]]:
        """After :meth:`apply_delta` and :meth:`resolve` in a cache: the orders to judge again
        (changed, due by ``as_of``, or ``orphans`` the window's start may clear) and, with the
        orders that left the window, every order whose kept state goes (``redo``). Returns
        (redo, affected), sorted."""
        c = self.con
        c.register("_orph", pa.table({"order_id": pa.array(list(orphans), type=pa.string())}))
        c.execute(
            "CREATE OR REPLACE TEMP TABLE redo AS "
            "SELECT order_id FROM touched UNION "
            "SELECT mem.order_id FROM mem JOIN came USING (seq) UNION "
            "SELECT order_id FROM ((SELECT * FROM oo EXCEPT SELECT * FROM oo0) "
            "UNION ALL (SELECT * FROM oo0 EXCEPT SELECT * FROM oo)) UNION "
            "SELECT order_id FROM ostate WHERE due <= ? UNION "
            "SELECT order_id FROM _orph UNION "
            "SELECT order_id FROM ostate WHERE order_id NOT IN (SELECT order_id FROM ord)",
            [float(as_of)],
        )
        c.unregister("_orph")
        redo = [r[0] for r in c.execute("SELECT order_id FROM redo ORDER BY 1").fetchall()]
        affected = [
            r[0]
            for r in c.execute(
                "SELECT order_id FROM redo JOIN ord USING (order_id) ORDER BY 1"
            ).fetchall()
        ]
        return redo, affected

    def kept_overdue(self) -> Any:
        """The cache's overdue units of the orders not judged again (Arrow)."""
        return self.con.sql(
            "SELECT * FROM over WHERE order_id NOT IN (SELECT order_id FROM redo)"
        ).to_arrow_table()

    def replace_kept(self, over: Any, ostate: Any) -> None:
        """The orders judged again: their overdue units and states replace the cache's."""
        c = self.con
        for name, tb in (("over", over), ("ostate", ostate)):
            c.execute(f"DELETE FROM {name} WHERE order_id IN (SELECT order_id FROM redo)")
            c.register("_x", tb)
            c.execute(f"INSERT INTO {name} SELECT * FROM _x")
            c.unregister("_x")

    def state_counts(self) -> dict[str, int]:
        rows = self.con.execute("SELECT state, count(*) FROM ostate GROUP BY 1").fetchall()
        return {str(k): int(v) for k, v in sorted(rows)}

    def present_orders(self, ids: Sequence[str]) -> set[str]:
        """Which of these orders are in the window."""
        return self._present(ids, "order_id", "ord")

    def _present(self, ids: Sequence[str], col: str, table: str) -> set[str]:
        """Which of ``ids`` are values of ``table``.``col``."""
        if not ids:
            return set()
        c = self.con
        c.register("_ids", pa.table({col: pa.array(list(ids), type=pa.string())}))
        try:
            rows = c.execute(f"SELECT {col} FROM _ids SEMI JOIN {table} USING ({col})").fetchall()
        finally:
            c.unregister("_ids")
        return {r[0] for r in rows}

    def resolve(self, part_orders: int | None = None) -> int:
        """Objects -> orders, events -> orders, orders -> parts. Returns the number of orders.

        What only this run needs (events -> orders, orders -> parts) is a TEMP table: in a
        cache, a file, a main table is written to disk (0.7 s of an incremental run at 1M
        orders, against 0.1 s in memory)."""
        c = self.con
        plan = self.plan
        c.execute(
            "CREATE OR REPLACE TABLE oo AS SELECT DISTINCT obj, order_id FROM li "
            "WHERE order_id <> ''"
        )
        for kind in _via_order(plan):
            via = plan.via.get(kind)
            if via is None:
                continue
            c.execute(
                "INSERT INTO oo SELECT DISTINCT l.obj, o.order_id FROM li l JOIN oo o "
                "ON l.other = o.obj WHERE l.other <> '' "
                f"AND split_part(l.obj, ':', 1) = {_q(kind)} "
                f"AND split_part(l.other, ':', 1) = {_q(via)}"
            )
        c.execute("CREATE OR REPLACE TABLE oo AS SELECT DISTINCT obj, order_id FROM oo")
        # each event with each order it belongs to: its own (ev as it stands), and the orders of
        # the objects it names where that is another order (``mo``, computed once), so no
        # global DISTINCT is needed
        c.execute(
            "CREATE OR REPLACE TEMP TABLE mo AS SELECT DISTINCT m.seq, oo.order_id, e.hop, "
            "e.phase, e.t FROM me m JOIN oo USING (obj) JOIN ev e USING (seq) "
            "WHERE oo.order_id <> e.order_id"
        )
        members = (
            "SELECT seq, order_id, hop, phase, t FROM ev WHERE order_id <> '' "
            "UNION ALL SELECT seq, order_id, hop, phase, t FROM mo"
        )
        c.execute(
            "CREATE OR REPLACE TEMP TABLE ord AS SELECT DISTINCT order_id FROM ("
            "SELECT order_id FROM ev WHERE order_id <> '' UNION ALL SELECT order_id FROM mo)"
        )
        n = int(c.execute("SELECT count(*) FROM ord").fetchall()[0][0])
        per = part_orders or DEFAULT_PART_ORDERS
        self.n_parts = max(1, math.ceil(n / per))
        # the members are not joined back to ev by seq for their hop, phase and time: that cost
        # more than sorting them (21 of 33 CPU-s at 10M orders). The part is computed as ord
        # computes it, not joined from ord: a hash table of every order id would not fit a
        # small budget on a large window (30M orders, 2 GB)
        part = f"(hash(order_id) % {self.n_parts})::INTEGER" if self.n_parts > 1 else "0"
        c.execute(f"CREATE OR REPLACE TEMP TABLE ord AS SELECT order_id, {part} AS part FROM ord")
        # one part: nothing to cluster, its queries read the window as it is (views). Many:
        # stored by part, so that a part's queries read only its own row groups (zone maps),
        # never the whole window again; a few parts filter a plain copy instead (sorting costs
        # more than that)
        kind = "VIEW" if self.n_parts == 1 else "TABLE"
        by_part = " ORDER BY part" if self.n_parts > SORT_PARTS else ""
        c.execute(
            f"CREATE OR REPLACE TEMP {kind} emp AS SELECT {part} AS part, order_id, seq, hop, "
            f"phase, t FROM ({members}){by_part}"
        )
        c.execute("CREATE OR REPLACE TEMP VIEW mem AS SELECT seq, order_id FROM emp")
        c.execute(
            f"CREATE OR REPLACE TEMP {kind} memp AS SELECT x.part, x.order_id, x.seq, me.obj, "
            f"x.hop, x.phase, x.t FROM me JOIN emp x USING (seq){by_part}"
        )
        return n

    # -- one part --------------------------------------------------------------------------
    def part_state(
        self, part: int, chosen: Sequence[str] | None = None, orders: Any = None
    ) -> tuple[State, Facts]:
        """The state of the orders of one hash part (every order when there is one part), or
        of the given ``orders`` (an Arrow table with an order_id column: an incremental run's
        affected orders; part 0 then stands for the window-wide facts)."""
        c = self.con
        plan = self.plan
        n_h = plan.n_hops
        if orders is not None:
            c.register("_orders", orders)
            c.execute(
                "CREATE OR REPLACE TEMP TABLE po AS SELECT order_id, "
                "(row_number() OVER (ORDER BY order_id) - 1)::BIGINT AS o "
                "FROM (SELECT DISTINCT order_id FROM _orders) JOIN ord USING (order_id)"
            )
            c.unregister("_orders")
            part_cond = "TRUE"
        else:
            c.execute(
                "CREATE OR REPLACE TEMP TABLE po AS SELECT order_id, "
                "(row_number() OVER (ORDER BY order_id) - 1)::BIGINT AS o "
                f"FROM ord WHERE part = {int(part)}"
            )
            part_cond = f"x.part = {int(part)}"
        c.execute(
            "CREATE OR REPLACE TEMP TABLE pm AS SELECT x.seq, po.o, x.hop, x.phase, x.t "
            f"FROM emp x JOIN po USING (order_id) WHERE {part_cond}"
        )
        order_ids = _np(
            c.sql("SELECT order_id FROM po ORDER BY o").to_arrow_table(), "order_id", object
        )
        n = len(order_ids)
        judged = np.ones(n, dtype=bool)
        if chosen is not None:
            judged = np.isin(order_ids, np.array(list(chosen), dtype=object))
        red = c.sql(
            "SELECT o, hop, phase, min(t) AS mn, max(t) AS mx FROM pm GROUP BY ALL"
        ).to_arrow_table()
        first, last = _scatter3(red, "o", n, n_h)
        cnt = c.sql(
            "SELECT o, count(*) AS n, arg_max(seq, (t, seq)) AS last_seq FROM pm GROUP BY 1"
        ).to_arrow_table()
        event_count = np.zeros(n, dtype=np.int64)
        last_seq = np.full(n, -1, dtype=np.int64)
        oi = _np(cnt, "o", np.int64)
        event_count[oi] = _np(cnt, "n", np.int64)
        last_seq[oi] = _np(cnt, "last_seq", np.int64)

        comp = first[:, :, COMPLETED]
        reach = np.fmin(first[:, :, COMPLETED], first[:, :, FAILED])
        comp_all, comp_any, reach_any = comp.copy(), comp.copy(), reach.copy()
        units: dict[str | None, Units] = {
            None: Units(
                None,
                np.arange(n, dtype=np.int64),
                np.full(n, None, dtype=object),
                comp,
                last[:, :, COMPLETED],
                last[:, :, FAILED],
                reach,
                np.full(n, -1, dtype=np.int64),
            )
        }
        objects_total: dict[str, Any] = {}
        unit_sql: dict[str, str] = {}
        for kind in plan.unit_kinds:
            if kind is None:
                continue
            kind_hops = [i for i, e in enumerate(plan.each) if e == kind]
            tbl = f"pu_{plan.kinds.index(kind)}"
            c.execute(
                f"CREATE OR REPLACE TEMP TABLE {tbl} AS SELECT po.o, oo.obj, "
                "(row_number() OVER (ORDER BY po.o, oo.obj) - 1)::BIGINT AS u "
                f"FROM oo JOIN po USING (order_id) WHERE split_part(oo.obj, ':', 1) = {_q(kind)}"
            )
            objs = c.sql(f"SELECT o, obj FROM {tbl} ORDER BY u").to_arrow_table()
            ko_o = _np(objs, "o", np.int64)
            ko_obj = _np(objs, "obj", object)
            n_obj = len(ko_o)
            has = np.zeros(n, dtype=bool)
            has[ko_o] = True
            objects_total[kind] = np.bincount(ko_o, minlength=n).astype(np.int64)
            plain = np.flatnonzero(~has)
            u_order = np.concatenate([ko_o, plain])
            nu = len(u_order)
            hop_list = ", ".join(map(str, kind_hops)) or "-1"
            unit_sql[kind] = (
                f"SELECT {tbl}.u, x.seq, x.hop, x.phase, x.t FROM memp x JOIN po USING (order_id) "
                f"JOIN {tbl} ON {tbl}.o = po.o AND {tbl}.obj = x.obj "
                f"WHERE {part_cond} AND x.hop IN ({hop_list})"
            )
            ured = c.sql(
                f"SELECT u AS o, hop, phase, min(t) AS mn, max(t) AS mx FROM ({unit_sql[kind]}) "
                f"WHERE phase IN ({COMPLETED}, {FAILED}) GROUP BY ALL"
            ).to_arrow_table()
            # units need completed and failed times only: four [units, hops] arrays, not two
            # [units, hops, 3 phases] (a third less memory to fill on millions of items)
            cf, ff, cl, fl = (np.full((nu, n_h), np.nan) for _ in range(4))
            if ured.num_rows:
                r, h = _np(ured, "o", np.int64), _np(ured, "hop", np.int64)
                ph = _np(ured, "phase", np.int64)
                mn, mx = _np(ured, "mn", np.float64), _np(ured, "mx", np.float64)
                for ph_, fst, lst in ((COMPLETED, cf, cl), (FAILED, ff, fl)):
                    sel = ph == ph_
                    fst[r[sel], h[sel]] = mn[sel]
                    lst[r[sel], h[sel]] = mx[sel]
            for dst, src, ph_ in ((cf, first, COMPLETED), (ff, first, FAILED),
                                  (cl, last, COMPLETED), (fl, last, FAILED)):  # fmt: skip
                dst[n_obj:] = src[plain, :, ph_]  # order units: the order's own times
            u = Units(
                kind, u_order, np.concatenate([ko_obj, np.full(len(plain), None, dtype=object)]),
                cf, cl, fl, np.fmin(cf, ff),
                np.concatenate([np.arange(n_obj, dtype=np.int64), np.full(len(plain), -1, dtype=np.int64)]),
            )  # fmt: skip
            units[kind] = u
            if n_obj:
                # the objects' rows come ordered by order: reduce each order's run of rows
                gi, start, size = np.unique(ko_o, return_index=True, return_counts=True)
                for h in kind_hops:
                    cf, rf = u.comp_first[:n_obj, h], u.reach_first[:n_obj, h]
                    done = np.add.reduceat((~np.isnan(cf)).astype(np.int64), start) == size
                    comp_all[gi, h] = np.where(done, np.fmax.reduceat(cf, start), np.nan)
                    comp_any[gi, h] = np.fmin.reduceat(cf, start)
                    reach_any[gi, h] = np.fmin.reduceat(rf, start)

        attrs: dict[str, Any] = {}
        for a in plan.condition_attrs:
            col = np.full(n, MISSING, dtype=object)
            atbl = self.attr_tables.get(("when", a))
            if atbl:
                got = c.sql(
                    f"SELECT pm.o, arg_min(a.v, (a.t, a.src, a.eid)) AS v FROM {atbl} a "
                    "JOIN pm USING (seq) GROUP BY 1"
                ).to_arrow_table()
                col[_np(got, "o", np.int64)] = [
                    orjson.loads(x) for x in got.column("v").to_pylist()
                ]
            attrs[a] = col

        facts = Facts(self._dups(units, n, unit_sql), self._check_values(), self._unlinked(part))
        st = State(
            plan=plan, order_ids=order_ids, judged=judged, first=first, last=last,
            comp_all=comp_all, comp_any=comp_any, reach_any=reach_any, units=units, attrs=attrs,
            event_count=event_count, last_seq=last_seq, objects_total=objects_total,
        )  # fmt: skip
        return st, facts

    def _dups(
        self, units: dict[str | None, Units], n: int, unit_sql: dict[str, str]
    ) -> dict[int, pd.DataFrame]:
        """Per unique hop: units with two or more distinct completed events (or values), the
        first and the time the second appeared."""
        c = self.con
        out: dict[int, pd.DataFrame] = {}
        for h, hp in enumerate(self.plan.config.hops):
            if not hp.unique:
                continue
            kind = hp.each
            order_events = f"SELECT o AS u, seq, t FROM pm WHERE hop = {h} AND phase = {COMPLETED}"
            if kind is None:
                pairs = order_events
            else:
                u = units[kind]
                n_obj = int((u.obj_code >= 0).sum())
                plain = u.order[n_obj:]
                c.register(
                    "_plain", pa.table({"o": plain, "u": np.arange(n_obj, n_obj + len(plain))})
                )
                c.execute("CREATE OR REPLACE TEMP TABLE plain_u AS SELECT * FROM _plain")
                c.unregister("_plain")
                pairs = (
                    f"SELECT p.u, x.seq, x.t FROM ({order_events}) x JOIN plain_u p ON p.o = x.u "
                    f"UNION ALL SELECT u, seq, t FROM ({unit_sql[kind]}) "
                    f"WHERE hop = {h} AND phase = {COMPLETED}"
                )
            if hp.unique_by:
                tbl = self.attr_tables[("unique", hp.unique_by)]
                keyed = f"SELECT p.u, p.t, a.vk AS k FROM ({pairs}) p JOIN {tbl} a USING (seq)"
            else:
                keyed = f"SELECT u, t, seq::VARCHAR AS k FROM ({pairs})"
            df = c.sql(
                "WITH f AS (SELECT u, k, min(t) AS t FROM (" + keyed + ") GROUP BY u, k), "
                "r AS (SELECT u, t, row_number() OVER (PARTITION BY u ORDER BY t) AS rk, "
                "count(*) OVER (PARTITION BY u) AS n FROM f) "
                "SELECT u, max(n) AS n, min(t) FILTER (WHERE rk = 1) AS first_t, "
                "min(t) FILTER (WHERE rk = 2) AS second_t FROM r GROUP BY u HAVING max(n) >= 2"
            ).to_df()
            out[h] = df
        return out

    def _check_values(self) -> list[pd.DataFrame]:
        c = self.con
        out = []
        for j, chk in enumerate(self.plan.config.checks):
            tbl = self.attr_tables.get(("check", f"{j}:{chk.field}"))
            if tbl is None:
                out.append(pd.DataFrame({"o": [], "hop": [], "t": [], "v": []}))
                continue
            hops = ", ".join(str(self.plan.hx[h]) for h in chk.hops)
            tb = c.sql(
                f"SELECT pm.o, pm.hop, arg_min(a.t, (a.t, a.src, a.eid)) AS t, "
                f"arg_min(a.v, (a.t, a.src, a.eid)) AS v FROM {tbl} a JOIN pm USING (seq) "
                f"WHERE pm.phase = {COMPLETED} AND pm.hop IN ({hops}) GROUP BY 1, 2"
            ).to_arrow_table()
            out.append(pd.DataFrame({
                "o": _np(tb, "o", np.int64), "hop": _np(tb, "hop", np.int64),
                "t": _np(tb, "t", np.int64),
                "v": pd.Series([orjson.loads(x) for x in tb.column("v").to_pylist()],
                               dtype=object),
            }))  # fmt: skip
        return out

    def _unlinked(self, part: int) -> pd.DataFrame:
        """Objects of the window that belong to no order (given with part 0): each first window
        event's (hop, t, seq) candidates at its earliest time."""
        if part != 0:
            return pd.DataFrame({"obj": [], "hop": [], "t": [], "seq": []})
        return self.con.sql(
            "WITH x AS (SELECT me.obj, e.hop, e.t, e.seq FROM me JOIN ev e USING (seq) "
            "WHERE me.obj NOT IN (SELECT obj FROM oo)), "
            "m AS (SELECT obj, min(t) AS t FROM x GROUP BY obj) "
            "SELECT x.obj, x.hop, x.t, x.seq FROM x JOIN m USING (obj, t) ORDER BY x.obj, x.seq"
        ).to_df()

    # -- edge populations (vanished vs stalled) ------------------------------------------------
    _POP = "req INTEGER, a DOUBLE, b DOUBLE, order_id VARCHAR"

    @property
    def _pop(self) -> str:
        """The edge populations' columns: the order of each point only in a cache (its next
        run forgets the points of the orders it judges again); a window's run needs none."""
        return self._POP if self.path else "req INTEGER, a DOUBLE, b DOUBLE"

    def add_points(self, points: dict[int, tuple[Any, Any]], owners: dict[int, Any]) -> None:
        """Keep a part's edge populations: (requirement, time at its source, first reach, the
        order of the unit)."""
        c = self.con
        c.execute(f"CREATE TABLE IF NOT EXISTS pop ({self._pop})")
        for req, (a, b) in points.items():
            if len(a):
                cols = {"req": np.full(len(a), req, dtype=np.int32), "a": a, "b": b}
                if self.path:
                    cols["order_id"] = pa.array(owners[req], type=pa.string())
                self.insert("pop", pa.table(cols))

    def drop_points(self, orders: Sequence[str]) -> None:
        """Forget the populations of these orders (to be judged again)."""
        c = self.con
        c.execute(f"CREATE TABLE IF NOT EXISTS pop ({self._pop})")
        if orders:
            c.register("_gone", pa.table({"order_id": pa.array(list(orders), type=pa.string())}))
            c.execute("DELETE FROM pop WHERE order_id IN (SELECT order_id FROM _gone)")
            c.unregister("_gone")

    def order_ids(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT order_id FROM ord").fetchall()]

    def points(self, req: int) -> tuple[Any, Any]:
        """One requirement's population over every part, sorted by its source time."""
        c = self.con
        c.execute(f"CREATE TABLE IF NOT EXISTS pop ({self._pop})")
        tb = c.sql(f"SELECT a, b FROM pop WHERE req = {int(req)} ORDER BY a").to_arrow_table()
        return _np(tb, "a", np.float64), _np(tb, "b", np.float64)

    # -- window-wide facts ------------------------------------------------------------------
    def last_activity(self) -> dict[str, float | None]:
        rows = dict(
            self.con.execute("SELECT hop, max(t) FROM ev WHERE phase <> 1 GROUP BY hop").fetchall()
        )
        return {
            name: (float(rows[h]) if h in rows else None) for h, name in enumerate(self.plan.names)
        }

    def member_seqs(self, order_id: str) -> list[int]:
        """The events (ingest_seq) that belong to an order: its own and its objects'."""
        rows = self.con.execute("SELECT seq FROM mem WHERE order_id = ? ORDER BY seq", [order_id])
        return [int(r[0]) for r in rows.fetchall()]

    def present_objects(self, objs: Sequence[str]) -> set[str]:
        """Which of these objects ("kind:id") the window's events name."""
        return self._present(objs, "obj", "me")

    def unlinked_count(self) -> int:
        return int(
            self.con.execute(
                "SELECT count(DISTINCT obj) FROM me WHERE obj NOT IN (SELECT obj FROM oo)"
            ).fetchall()[0][0]
        )

    def event_count(self) -> int:
        return int(self.con.execute("SELECT count(*) FROM ev").fetchall()[0][0])

    def order_count(self) -> int:
        return int(self.con.execute("SELECT count(*) FROM ord").fetchall()[0][0])


def _keyed(tbl: str) -> str:
    """Attribute rows of ``tbl`` with ``vk``, a comparable key for ``unique_by`` (7 and 7.0
    agree; "7" and true do not); rows without a value drop out."""
    return (
        "SELECT * FROM (SELECT *, CASE json_type(v) "
        "WHEN 'VARCHAR' THEN 's:' || (v::JSON ->> '$') "
        "WHEN 'BOOLEAN' THEN 'b:' || v "
        "WHEN 'NULL' THEN NULL "
        "WHEN 'OBJECT' THEN 'j:' || v WHEN 'ARRAY' THEN 'j:' || v "
        f"ELSE 'n:' || CAST(CAST(v AS DOUBLE) AS VARCHAR) END AS vk FROM {tbl}) WHERE vk IS NOT NULL"
    )


def _np(tb: Any, col: str, dtype: Any) -> Any:
    arr = tb.column(col).to_numpy(zero_copy_only=False) if tb.num_rows else np.empty(0)
    return np.asarray(arr, dtype=dtype)


def _scatter3(tb: Any, key: str, n_rows: int, n_hops: int) -> tuple[Any, Any]:
    """Rows (key, hop, phase, mn, mx) -> first and last times [rows, hops, 3 phases]."""
    first = np.full((n_rows, n_hops, 3), np.nan)
    last = np.full((n_rows, n_hops, 3), np.nan)
    if tb.num_rows:
        r = _np(tb, key, np.int64)
        h = _np(tb, "hop", np.int64)
        p = _np(tb, "phase", np.int64)
        first[r, h, p] = _np(tb, "mn", np.float64)
        last[r, h, p] = _np(tb, "mx", np.float64)
    return first, last


def _via_order(plan: Plan) -> list[str]:
    """Object kinds so that a kind comes after the kind it is ``via``."""
    out: list[str] = []
    pending = list(plan.kinds)
    while pending:
        for k in list(pending):
            v = plan.via.get(k)
            if v is None or v in out or v not in plan.kinds:
                out.append(k)
                pending.remove(k)
    return out


def default_memory() -> str:
    """DuckDB's share of memory when the config says nothing: half the machine, at most 8 GB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return "4GB"
    return f"{max(1, min(8, total // 2**31))}GB"


def seqs_in(it: Iterable[int]) -> str:
    return ", ".join(str(int(s)) for s in it) or "-1"
