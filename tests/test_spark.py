"""The Spark engine against the local engine: Spark in local[2] must record exactly the local
engine's run — every finding with its evidence, detail and status, the incidents, the summary
and counts, the orders left in flight — reading a PostgreSQL store over JDBC and reading the
Parquet files ``ordertrail export`` wrote.

Spark needs a second or more per job, so the oracle's cases are judged many at a time: a batch
of cases becomes one pipeline (each case's hops, objects, sources and orders renamed apart, its
times shifted to a common as_of), which both engines judge in one run. The cases differ in
lookback and clock skew; a batch takes its first case's. ``ORDERTRAIL_SPARK_BATCHES`` sets the
generated batches (default 2 of 30 cases).
"""

from __future__ import annotations

import copy
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from ordertrail.reconcile import reconcile
from ordertrail.reconcile.parquet import export_window, read_manifest
from ordertrail.schemas.config import load_config
from ordertrail.schemas.event import OrderEvent, datetime_to_us
from ordertrail.store import Checkpoint, Store
from tests.oracle_cases import CASES
from tests.pipeline_strategies import BASE, GRID, cases
from tests.test_engine_vs_oracle import TABLES, engine_config

pytestmark = pytest.mark.spark

BATCHES = int(os.environ.get("ORDERTRAIL_SPARK_BATCHES", "2"))
BATCH = 30
AS_OF = BASE + 400 * GRID
RUN_TABLES = ("runs", "findings", "pending_orders", "incidents")


# -- cases, many at a time -------------------------------------------------------------------


def merge_cases(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Cases as one: each case's names prefixed ``c<i>_``, its times shifted to AS_OF. A
    hop_field source becomes one source per hop of its case (with its watermark), so a case's
    hops wait only for its own sources, as they did alone."""
    hops: list[dict[str, Any]] = []
    objects: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    sources: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    watermarks: dict[str, int | None] = {}
    for i, case in enumerate(batch):
        p = f"c{i}_"
        cfg = case["config"]
        shift = AS_OF - int(case["as_of"])
        for o in cfg.get("objects", []):
            objects.append(
                {"name": p + o["name"], **({"via": p + o["via"]} if o.get("via") else {})}
            )
        names = [h["name"] for h in cfg["hops"]]
        for h in cfg["hops"]:
            n = copy.deepcopy(h)
            n["name"] = p + h["name"]
            for k in ("next", "next_any", "promises"):
                if k in h:
                    n[k] = [p + x for x in h[k]]
            if isinstance(h.get("within"), dict):
                n["within"] = {p + k: v for k, v in h["within"].items()}
            if "when" in h:
                n["when"] = {p + k: v for k, v in h["when"].items()}
            if h.get("each"):
                n["each"] = p + h["each"]
            hops.append(n)
        for c in cfg.get("checks", []):
            checks.append({**c, "hops": [p + x for x in c["hops"]]})
        wms = case.get("watermarks") or {}
        split: set[str] = set()
        for s in cfg["sources"]:
            base = {k: v for k, v in s.items() if k not in ("name", "hop", "hop_field", "objects")}
            if s.get("objects"):
                base["objects"] = {p + k: v for k, v in s["objects"].items()}
            if "hop_field" in s:
                split.add(s["name"])
                for h in names:
                    sources.append({**base, "name": f"{p}{s['name']}__{h}", "hop": p + h})
                    if s["name"] in wms:
                        wm = wms[s["name"]]
                        watermarks[f"{p}{s['name']}__{h}"] = None if wm is None else wm + shift
            else:
                sources.append({**base, "name": p + s["name"], "hop": p + s["hop"]})
                if s["name"] in wms:
                    wm = wms[s["name"]]
                    watermarks[p + s["name"]] = None if wm is None else wm + shift
        for e in case["events"]:
            src = f"{p}{e['source']}__{e['hop']}" if e["source"] in split else p + e["source"]
            events.append({
                **e, "source": src, "event_id": p + e["event_id"], "hop": p + e["hop"],
                "order_id": p + e["order_id"] if e.get("order_id") else "",
                "objects": {p + k: v for k, v in (e.get("objects") or {}).items()},
                "occurred_at": int(e["occurred_at"]) + shift,
            })  # fmt: skip
    first = batch[0]["config"].get("pipeline", {})
    return {
        "config": {
            "pipeline": {"name": "merged", **{k: v for k, v in first.items() if k != "name"}},
            "objects": objects, "hops": hops, "checks": checks, "sources": sources,
        },
        "events": events,
        "as_of": AS_OF,
        "watermarks": watermarks,
    }  # fmt: skip


def load_case(store: Store, case: dict[str, Any]) -> None:
    with store.engine.begin() as conn:
        for t in TABLES:
            conn.exec_driver_sql(f"DELETE FROM {t}")
    evs = [
        OrderEvent(
            event_id=e["event_id"], order_id=e.get("order_id") or "", hop=e["hop"],
            occurred_at=int(e["occurred_at"]), source=e["source"], phase=e.get("phase", "completed"),
            attributes=dict(e.get("attributes") or {}),
            objects={k: list(v) for k, v in (e.get("objects") or {}).items() if v},
            source_ref=f"case:{k}",
        )
        for k, e in enumerate(case["events"])
    ]  # fmt: skip
    cps = [Checkpoint(s, "", {}, wm) for s, wm in case["watermarks"].items() if wm is not None]
    store.write_batch(events=evs, checkpoints=cps)


# -- one run, as recorded -----------------------------------------------------------------------


def reset_runs(store: Store) -> None:
    with store.engine.begin() as conn:
        for t in RUN_TABLES:
            conn.exec_driver_sql(f"DELETE FROM {t}")


def recorded(store: Store, result: Any) -> dict[str, Any]:
    """Everything a run leaves: its result (but the run id and duration) and what it stored."""
    run = {k: v for k, v in result.run.items() if k not in ("id", "seconds")}
    with store.engine.connect() as conn:
        pending = sorted(conn.execute(text("SELECT order_id, due FROM pending_orders")).all())
        row = conn.execute(
            text(
                "SELECT mode, orders, events, summary, unlinked, max_ingest_seq, config_hash, "
                "status FROM runs ORDER BY id DESC LIMIT 1"
            )
        ).one()
        stored = sorted(
            conn.execute(
                text(
                    "SELECT order_id, object, kind, hop, from_hop, field, since, detail, "
                    "objects, evidence, status FROM findings"
                )
            ).all()
        )
    return {
        "run": run, "summary": result.summary, "findings": result.findings,
        "incidents": result.incidents, "by_hop": result.by_hop, "states": result.states,
        "pending": pending, "runs_row": tuple(row), "stored": stored,
    }  # fmt: skip


def assert_same(local: dict[str, Any], other: dict[str, Any], what: str) -> None:
    for key in local:
        if local[key] != other[key]:
            a, b = local[key], other[key]
            if isinstance(a, list) and isinstance(b, list):
                only_a = [x for x in a if x not in b][:3]
                only_b = [x for x in b if x not in a][:3]
                raise AssertionError(
                    f"{what}: {key} differs; local only {only_a}; {what} only {only_b}"
                )
            raise AssertionError(f"{what}: {key} differs: local {a!r}, {what} {b!r}")


def engines_agree(
    store: Store, cfg: Any, as_of: int, spark: Any, tmp: Path, *, jdbc: bool = True
) -> dict[str, Any]:
    """The local run, then Spark over JDBC (PostgreSQL) and over an export, each on a store
    with no earlier run; all must be recorded alike. Returns the local run."""
    from ordertrail.reconcile.spark import reconcile_spark

    reset_runs(store)
    local = recorded(store, reconcile(store, cfg, as_of=as_of))
    if jdbc:
        reset_runs(store)
        got = reconcile_spark(store, cfg, as_of=as_of, session=spark)
        assert_same(local, recorded(store, got), "spark over JDBC")
    out = tmp / "window"
    export_window(store, cfg, out, as_of=as_of)
    reset_runs(store)
    got = reconcile_spark(store, cfg, parquet=out, session=spark)
    assert_same(local, recorded(store, got), "spark over Parquet")
    return local


# -- the oracle's cases -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_store(pg_server: str | None) -> Any:
    """One PostgreSQL store for the module, emptied before each case."""
    import uuid

    from sqlalchemy import create_engine

    from tests.conftest import _pg_problem, require_service

    base = str(require_service(pg_server, _pg_problem, "PostgreSQL"))
    name = f"ot_spark_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    s = Store(base.rsplit("/", 1)[0] + f"/{name}")
    yield s
    s.close()
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _hand_written_batches() -> list[list[dict[str, Any]]]:
    """The hand-written cases, grouped by (lookback, clock skew) so each keeps its own."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for c in CASES:
        p = c["config"].get("pipeline", {})
        groups[(str(p.get("lookback", "")), str(p.get("clock_skew", "")))].append(c)
    return [g for _, g in sorted(groups.items())]


HAND = _hand_written_batches()


@pytest.mark.parametrize("part_orders", [5], ids=["five-orders-a-part"])
@pytest.mark.parametrize("batch", HAND, ids=[f"{len(b)}-cases-{b[0]['name']}" for b in HAND])
def test_spark_equals_local_on_hand_written_cases(
    pg_store: Store, spark: Any, tmp_path: Path, batch: list[dict[str, Any]], part_orders: Any
) -> None:
    case = merge_cases(batch)
    load_case(pg_store, case)
    engines_agree(pg_store, engine_config(case["config"], part_orders), AS_OF, spark, tmp_path)


@settings(
    max_examples=BATCHES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture,
    ],
    print_blob=True,
    # shrinking a batch costs a Spark run per step: ORDERTRAIL_SPARK_SHRINK=1 to allow it
    phases=list(Phase) if os.environ.get("ORDERTRAIL_SPARK_SHRINK")
    else [Phase.explicit, Phase.reuse, Phase.generate],
)  # fmt: skip
@given(
    batch=st.lists(cases(), min_size=BATCH, max_size=BATCH),
    part_orders=st.sampled_from([None, 10, 50]),
)
def test_spark_equals_local_on_generated_cases(
    pg_store: Store, spark: Any, tmp_path_factory: pytest.TempPathFactory,
    batch: list[dict[str, Any]], part_orders: Any,
) -> None:  # fmt: skip
    case = merge_cases(batch)
    load_case(pg_store, case)
    cfg = engine_config(case["config"], part_orders)
    engines_agree(pg_store, cfg, AS_OF, spark, tmp_path_factory.mktemp("gen"))


def test_merged_cases_keep_each_case_apart() -> None:
    """The merge renames everything a case names and keeps its watermarks per hop."""
    a = CASES[1]
    m = merge_cases([a, CASES[2]])
    names = [h["name"] for h in m["config"]["hops"]]
    assert names[: len(a["config"]["hops"])] == [f"c0_{h['name']}" for h in a["config"]["hops"]]
    assert {e["order_id"][:3] for e in m["events"]} == {"c0_", "c1_"}
    assert m["watermarks"]["c0_s__checkout"] == AS_OF  # the case's own watermark, shifted
    cfg = engine_config(m["config"])
    assert cfg.sources_feeding("c0_payment") == ("c0_s__payment",)


# -- the shop simulation ------------------------------------------------------------------------


def _shop(root: Path, url: str, orders: int, seed: int) -> tuple[Any, int]:
    from ordertrail.collectors import file_sources, ingest_file_source
    from ordertrail.simulation.shop import ShopSimulation

    res = ShopSimulation(orders=orders, seed=seed).run(root)
    cfg = load_config(res.config_path)
    with Store(url) as s:
        for src in file_sources(cfg):
            ingest_file_source(s, cfg, src)
    return cfg, datetime_to_us(res.as_of)


def test_shop_on_postgresql_over_jdbc_and_parquet(tmp_path: Path, pg_url: str, spark: Any) -> None:
    from ordertrail.store.retention import events_partitioned, partitions

    cfg, as_of = _shop(tmp_path / "shop", pg_url, 2000, 7)
    with Store(pg_url) as s:
        with s.engine.connect() as conn:  # JDBC reads the month partitions through events
            assert events_partitioned(conn) and len(partitions(conn)) >= 1
        local = engines_agree(s, cfg, as_of, spark, tmp_path)
        assert local["summary"]["vanished"] > 0 and local["summary"]["stalled"] > 0
        assert local["incidents"] and local["run"]["unlinked"] > 0

        # a second run after the local one: the same statuses (open), and what a later
        # as_of resolves or expires, alike
        from ordertrail.reconcile.spark import reconcile_spark

        later = as_of + 45 * 86400 * 1_000_000
        reset_runs(s)
        reconcile(s, cfg, as_of=as_of)
        want = recorded(s, reconcile(s, cfg, as_of=later))
        reset_runs(s)
        reconcile(s, cfg, as_of=as_of)
        got = recorded(s, reconcile_spark(s, cfg, as_of=later, session=spark))
        assert_same(want, got, "spark after a local run")
        assert want["run"]["expired"] > 0


def test_shop_on_sqlite_through_parquet(tmp_path: Path, spark: Any) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    cfg, as_of = _shop(tmp_path / "shop", url, 2000, 11)
    with Store(url) as s:
        engines_agree(s, cfg, as_of, spark, tmp_path, jdbc=False)


# -- the commands -------------------------------------------------------------------------------


def _cli(*args: str) -> Any:
    from ordertrail.cli.main import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_export_writes_the_window_with_a_manifest(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    cfg, as_of = _shop(tmp_path / "shop", url, 300, 3)
    out = tmp_path / "pq"
    r = _cli("--config", str(cfg.path), "--db", url, "export", "--parquet", str(out),
             "--as-of", str(as_of // 1_000_000))  # fmt: skip
    assert r.exit_code == 0, r.output
    m = read_manifest(out)
    assert m.as_of == as_of and m.lo == as_of - cfg.pipeline.lookback
    assert m.config == cfg.fingerprint and m.hops == list(cfg.hop_names)
    import pyarrow.parquet as pq

    with Store(url) as s, s.engine.connect() as conn:
        n = conn.execute(
            text("SELECT count(*) FROM events WHERE occurred_at > :lo AND occurred_at <= :hi"),
            {"lo": m.lo, "hi": m.as_of},
        ).scalar_one()
    assert pq.read_table(out / "ev").num_rows == m.rows["ev"] == n
    assert pq.read_table(out / "me").schema.names == ["seq", "obj"]
    body = json.loads((out / "manifest.json").read_text())
    assert {a["table"] for a in body["attributes"]} <= {p.name for p in out.iterdir()}
    # again into the same folder: replaced; into a folder holding other files: refused
    assert (
        _cli("--config", str(cfg.path), "--db", url, "export", "--parquet", str(out)).exit_code == 0
    )
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    r = _cli("--config", str(cfg.path), "--db", url, "export", "--parquet", str(tmp_path / "other"))
    assert r.exit_code == 2 and "holds other files" in r.output
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--parquet", "x"], "--parquet goes with --engine spark"),
        (["--spark-master", "local[1]"], "--spark-master goes with --engine spark"),
        (["--engine", "spark", "--shard", "0/2"], "--shard is for the local engine"),
        (["--engine", "spark", "--incremental"], "--incremental is for the local engine"),
    ],
)
def test_reconcile_spark_usage_errors(workdir: Path, args: list[str], message: str) -> None:
    r = _cli("--config", str(workdir / "ordertrail.toml"), "--db",
             f"sqlite:///{workdir / 's.db'}", "reconcile", *args)  # fmt: skip
    assert r.exit_code == 2 and message in r.output


def test_reconcile_spark_needs_postgresql_or_parquet(workdir: Path) -> None:
    r = _cli("--config", str(workdir / "ordertrail.toml"), "--db",
             f"sqlite:///{workdir / 's.db'}", "reconcile", "--engine", "spark")  # fmt: skip
    assert r.exit_code == 2
    assert "export --parquet DIR" in r.output and "Traceback" not in r.output


def test_parquet_of_another_config_or_time_is_refused(tmp_path: Path, workdir: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = str(workdir / "ordertrail.toml")
    assert _cli("--config", cfg, "--db", url, "export", "--parquet", str(tmp_path / "pq"),
                "--as-of", "2026-01-01T00:00:00Z").exit_code == 0  # fmt: skip
    r = _cli("--config", cfg, "--db", url, "reconcile", "--engine", "spark", "--parquet",
             str(tmp_path / "pq"), "--as-of", "2026-02-01T00:00:00Z")  # fmt: skip
    assert r.exit_code == 2 and "as of 2026-01-01T00:00:00Z" in r.output
    other = workdir / "other.toml"
    other.write_text(
        (workdir / "ordertrail.toml").read_text().replace('within = "1h"', 'within = "2h"')
    )
    r = _cli("--config", str(other), "--db", url, "reconcile", "--engine", "spark", "--parquet",
             str(tmp_path / "pq"))  # fmt: skip
    assert r.exit_code == 2 and "another config" in r.output


def test_parquet_of_another_store_or_older_than_the_last_run_is_refused(tmp_path: Path) -> None:
    """A run from an export replaces the store's findings: an export of another store, or one
    older than the store's last run, would record findings of other orders or reopen settled
    ones. Both are refused before Spark starts, and the store keeps its runs."""
    a_url, b_url = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    cfg, as_of = _shop(tmp_path / "a", a_url, 200, 3)
    _shop(tmp_path / "b", b_url, 60, 4)  # the same pipeline, fewer orders
    when = str(as_of // 1_000_000)
    conf = str(cfg.path)
    for url, name in ((a_url, "pa"), (b_url, "pb")):
        r = _cli("--config", conf, "--db", url, "export", "--parquet", str(tmp_path / name),
                 "--as-of", when)  # fmt: skip
        assert r.exit_code == 0, r.output
    for url, name in ((b_url, "pa"), (a_url, "pb")):  # a bigger store's export; a smaller one's
        r = _cli("--config", conf, "--db", url, "reconcile", "--engine", "spark", "--parquet",
                 str(tmp_path / name))  # fmt: skip
        assert r.exit_code == 2 and "exported from another store" in r.output, r.output
    # a run that saw a later event than the export: the export is out of date for this store
    with Store(a_url) as s:
        s.write_batch([OrderEvent("late-1", "LATE-1", "checkout", as_of - 10**6, "t", "t:1")])
    assert _cli("--config", conf, "--db", a_url, "reconcile", "--as-of", when).exit_code in (0, 1)
    r = _cli("--config", conf, "--db", a_url, "reconcile", "--engine", "spark", "--parquet",
             str(tmp_path / "pa"))  # fmt: skip
    assert r.exit_code == 2 and "older than this store's last run" in r.output, r.output
    with Store(a_url) as s, s.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar_one() == 1


def _tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root``: a file's bytes, a link's target, a folder's "dir"."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        out[key] = (f"-> {p.readlink()}" if p.is_symlink()
                    else "dir" if p.is_dir() else p.read_bytes())  # fmt: skip
    return out


@pytest.mark.parametrize(
    "layout",
    [
        "user folders named like tables",
        "another tool's manifest",
        "a file added to an export",
        "a link named ev",
        "a file named ev",
    ],
)
def test_export_never_removes_what_it_did_not_write(
    tmp_path: Path, workdir: Path, layout: str
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = str(workdir / "ordertrail.toml")
    out = tmp_path / "out"
    if layout == "user folders named like tables":
        for name, f in (("ev", "notes.txt"), ("me", "important.csv"), ("av7", "x")):
            (out / name).mkdir(parents=True)
            (out / name / f).write_text("mine")
    elif layout == "another tool's manifest":
        out.mkdir()
        (out / "manifest.json").write_text('{"name": "my web app"}')
    elif layout == "a file added to an export":
        assert _cli("--config", cfg, "--db", url, "export", "--parquet", str(out)).exit_code == 0
        (out / "ev" / "README.txt").write_text("mine")
    elif layout == "a link named ev":
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "keep.txt").write_text("mine")
        out.mkdir()
        (out / "ev").symlink_to(tmp_path / "elsewhere")
    else:
        out.mkdir()
        (out / "ev").write_text("mine")
    before, elsewhere = (
        _tree(out),
        _tree(tmp_path / "elsewhere") if layout == "a link named ev" else {},
    )
    r = _cli("--config", cfg, "--db", url, "export", "--parquet", str(out))
    assert r.exit_code == 2, r.output
    assert "holds other files" in r.output and "Traceback" not in r.output
    assert _tree(out) == before  # nothing removed, nothing written
    if elsewhere:
        assert _tree(tmp_path / "elsewhere") == elsewhere


def test_export_replaces_an_earlier_or_interrupted_export(tmp_path: Path, workdir: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = str(workdir / "ordertrail.toml")
    out = tmp_path / "out"
    assert _cli("--config", cfg, "--db", url, "export", "--parquet", str(out)).exit_code == 0
    first = sorted(p.name for p in out.iterdir())
    assert _cli("--config", cfg, "--db", url, "export", "--parquet", str(out)).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == first
    # an export killed before its manifest: its table folders alone are still its own
    (out / "manifest.json").unlink()
    assert _cli("--config", cfg, "--db", url, "export", "--parquet", str(out)).exit_code == 0
    assert read_manifest(out).rows.keys() <= set(first)


def test_missing_java_is_one_line_and_exit_3(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("pyspark")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-java"))
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = str(workdir / "ordertrail.toml")
    assert (
        _cli("--config", cfg, "--db", url, "export", "--parquet", str(tmp_path / "pq")).exit_code
        == 0
    )
    r = _cli(
        "--config",
        cfg,
        "--db",
        url,
        "reconcile",
        "--engine",
        "spark",
        "--parquet",
        str(tmp_path / "pq"),
    )
    assert r.exit_code == 3
    assert r.output.strip().splitlines() == [
        "Error: --engine spark needs Java 17 or later: install it (Debian: openjdk-17-jre-headless) "
        "or set JAVA_HOME"
    ]


def test_missing_pyspark_is_one_line_and_exit_2(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark -> ImportError
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = str(workdir / "ordertrail.toml")
    assert (
        _cli("--config", cfg, "--db", url, "export", "--parquet", str(tmp_path / "pq")).exit_code
        == 0
    )
    r = _cli(
        "--config",
        cfg,
        "--db",
        url,
        "reconcile",
        "--engine",
        "spark",
        "--parquet",
        str(tmp_path / "pq"),
    )
    assert r.exit_code == 2
    assert (
        r.output.strip() == "Error: --engine spark needs PySpark 4: pip install 'ordertrail[spark]'"
    )


def test_engine_spark_config(tmp_path: Path) -> None:
    from ordertrail.errors import ConfigError
    from ordertrail.schemas.config import parse_config

    doc: dict[str, Any] = {
        "hops": [{"name": "a"}],
        "engine": {"spark": {"master": "spark://h:7077", "spark": {"executor": {"memory": "4g"}},
                             "spark.sql.shuffle.partitions": 64, "spark.ui.enabled": False}},
    }  # fmt: skip
    eng = parse_config(doc).engine
    assert eng.spark_master == "spark://h:7077"
    assert dict(eng.spark_conf) == {
        "spark.executor.memory": "4g", "spark.sql.shuffle.partitions": "64",
        "spark.ui.enabled": "false",
    }  # fmt: skip
    doc["engine"]["spark"]["executors"] = 3
    with pytest.raises(ConfigError, match=r"engine\.spark\.executors: unknown key"):
        parse_config(doc)
    del doc["engine"]["spark"]["executors"]
    for bad in ("bogus://y", "local[0]", "local[abc]", "spark://"):
        doc["engine"]["spark"]["master"] = bad
        with pytest.raises(ConfigError, match=r"engine\.spark\.master: .* is not a Spark master"):
            parse_config(doc)


@pytest.mark.parametrize("master", ["bogus://x", "local[0]", "local[abc]", "", "yarn-client"])
def test_a_master_spark_would_refuse_is_a_usage_error_before_a_jvm(
    workdir: Path, master: str
) -> None:
    r = _cli("--config", str(workdir / "ordertrail.toml"), "--db",
             f"sqlite:///{workdir / 's.db'}", "reconcile", "--engine", "spark", "--parquet",
             str(workdir / "pq"), "--spark-master", master)  # fmt: skip
    assert r.exit_code == 2 and "is not a Spark master" in r.output, r.output


def test_a_spark_error_is_told_by_its_last_cause() -> None:
    from ordertrail.reconcile.spark import _first_line

    class Captured(Exception):
        desc = "Error while instantiating 'org.apache.spark.sql.internal.SessionStateBuilder':"
        stackTrace = (
            "java.lang.IllegalArgumentException: Error while instantiating '…':\n\tat a.b(C:1)\n"
            "Caused by: org.apache.spark.SparkIllegalArgumentException: The value '0' in the config"
            ' "spark.sql.shuffle.partitions" is invalid.\n\tat d.e(F:2)\n'
        )

    assert _first_line(Captured("x")) == (
        "org.apache.spark.SparkIllegalArgumentException: The value '0' in the config "
        '"spark.sql.shuffle.partitions" is invalid.'
    )
    assert _first_line(ValueError("\nplain\nmore")) == "plain"


def test_an_empty_window(tmp_path: Path, workdir: Path, spark: Any) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = load_config(workdir / "ordertrail.toml")
    with Store(url) as s:
        local = engines_agree(s, cfg, AS_OF, spark, tmp_path, jdbc=False)
    assert local["run"]["orders"] == 0 and local["run"]["notes"]
