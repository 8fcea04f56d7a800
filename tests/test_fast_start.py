"""Fast start for support: ``--help`` and ``trace`` import only what they need.

Each check runs the command in a fresh interpreter and looks at ``sys.modules`` afterwards (no
timing here: bench/trace.py measures that)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ordertrail.simulation import Simulation
from tests.helpers import invoke

ROOT = Path(__file__).resolve().parents[1]
AS_OF = "2026-03-01T00:00:00Z"
HEAVY = ("pandas", "numpy", "duckdb", "pyarrow", "alembic", "sqlalchemy", "starlette", "jinja2")

_RUN = """
import json, sys
import ordertrail.cli.main
try:
    sys.modules["ordertrail.cli.main"].main(sys.argv[1:])
except SystemExit as e:
    code = e.code
else:
    code = 0
heavy = sorted(n for n in {heavy!r} if n in sys.modules)
sys.stderr.write("\\n@@" + json.dumps({{"code": code, "heavy": heavy}}) + "\\n")
"""


def _run(*args: str, cwd: Path | None = None) -> tuple[dict[str, object], str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    p = subprocess.run(
        [sys.executable, "-c", _RUN.format(heavy=HEAVY), *args],
        capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=300,
    )  # fmt: skip
    tail = p.stderr.rsplit("\n@@", 1)
    assert len(tail) == 2, p.stderr
    return json.loads(tail[1]), p.stdout


def test_import_and_help_load_no_engine_store_or_server() -> None:
    got, out = _run("--help")
    assert got["code"] == 0
    assert "trace" in out and "reconcile" in out
    assert got["heavy"] == []  # not even SQLAlchemy: the store is imported by the commands


def test_subcommand_help_loads_nothing_heavy() -> None:
    for cmd in (["trace", "--help"], ["quarantine", "--help"], ["check", "--help"]):
        got, out = _run(*cmd)
        assert got["code"] == 0 and "Usage:" in out, cmd
        assert got["heavy"] == [], cmd


def test_trace_skips_alembic_and_the_server(tmp_path: Path) -> None:
    res = Simulation(orders=150, seed=4).run(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert invoke(tmp_path, "--db", url, "ingest").exit_code == 0
    oid = sorted(res.expected)[0][0]
    got, out = _run("--db", url, "trace", oid, "--as-of", AS_OF, "--format", "json", cwd=tmp_path)
    assert got["code"] == 0
    assert json.loads(out)["order_id"] == oid
    heavy = set(got["heavy"])  # type: ignore[arg-type]
    # the store at its head revision is opened without Alembic; no web server parts
    assert not heavy & {"alembic", "starlette", "jinja2"}


def test_cli_defaults_match_the_library() -> None:
    from ordertrail.cli.check import DEFAULT_SAMPLE
    from ordertrail.cli.quarantine import DEFAULT_BATCH
    from ordertrail.collectors import check, replay

    assert DEFAULT_SAMPLE == check.DEFAULT_SAMPLE
    assert DEFAULT_BATCH == replay.DEFAULT_BATCH


def test_lazy_last_activity_agrees_with_the_window_query(tmp_path: Path) -> None:
    from ordertrail.store import Store
    from ordertrail.store import window as w

    Simulation(orders=150, seed=4).run(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert invoke(tmp_path, "--db", url, "ingest").exit_code == 0
    hops = ["checkout", "payment", "confirmation", "fulfillment", "shipping", "nowhere"]
    with Store(url) as store:
        with store.engine.connect() as conn:
            full = w.last_activity(conn, hops, 0, 2**62)
        lazy = w.LazyLastActivity(store.engine.connect, hops, 0, 2**62)
        assert full and dict(lazy) == {h: (float(full[h]) if h in full else None) for h in hops}
        assert lazy.get("nowhere") is None and lazy.get("not a hop") is None
