"""`ordertrail reconcile` and `ordertrail findings` from the command line."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from ordertrail.simulation import Simulation
from tests.helpers import invoke


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    res = Simulation(orders=600, seed=2).run(root)
    r = invoke(root, "ingest")
    assert r.exit_code == 0, r.stderr
    (root / "as_of").write_text(res.as_of.isoformat())
    return root


def test_reconcile_json_shape_and_fail_on(demo: Path) -> None:
    as_of = (demo / "as_of").read_text()
    r = invoke(demo, "reconcile", "--as-of", as_of, "--format", "json", "--fail-on", "vanished")
    assert r.exit_code == 1, r.stderr  # type: ignore[attr-defined]
    out = orjson.loads(r.stdout)  # type: ignore[attr-defined]
    assert set(out) == {"run", "summary", "findings", "incidents"}
    assert {"id", "as_of", "orders", "events"} <= set(out["run"])
    assert out["run"]["as_of"] == "2026-03-01T00:00:00Z"
    assert out["summary"]["vanished"] > 0
    f = out["findings"][0]
    assert set(f) == {
        "order_id", "kind", "hop", "from_hop", "since", "detail", "status", "objects", "field",
        "evidence",
    }  # fmt: skip
    assert isinstance(f["objects"], list) and isinstance(f["evidence"], dict)
    i = out["incidents"][0]
    assert set(i) == {"kind", "hop", "since", "orders", "detail"}
    assert out["findings"] == sorted(
        out["findings"], key=lambda x: (x["order_id"], x["kind"], x["hop"], x["from_hop"] or "")
    )
    r = invoke(demo, "reconcile", "--as-of", as_of, "--format", "json", "--fail-on", "hop_silent")
    assert r.exit_code == 1  # type: ignore[attr-defined]
    r = invoke(
        demo,
        "reconcile",
        "--as-of",
        "2026-02-01T00:00:00Z",
        "--format",
        "json",
        "--fail-on",
        "vanished",
    )
    assert r.exit_code == 0  # type: ignore[attr-defined]


def test_reconcile_table_csv_and_output_file(demo: Path, tmp_path: Path) -> None:
    as_of = (demo / "as_of").read_text()
    r = invoke(demo, "reconcile", "--as-of", as_of)
    assert r.exit_code == 0  # type: ignore[attr-defined]
    text = r.stdout  # type: ignore[attr-defined]
    assert "Findings by kind and hop" in text and "Worst findings" in text and "hop_silent" in text
    assert max(len(x) for x in text.splitlines()) <= 100 and "\x1b[" not in text
    out = tmp_path / "f.csv"
    r = invoke(demo, "reconcile", "--as-of", as_of, "--format", "csv", "--output", str(out))
    assert r.exit_code == 0  # type: ignore[attr-defined]
    lines = out.read_text().splitlines()
    assert (
        lines[0] == "order_id,kind,hop,from_hop,field,objects,since,detail,status"
        and len(lines) > 10
    )


def test_findings_filters(demo: Path) -> None:
    as_of = (demo / "as_of").read_text()
    invoke(demo, "reconcile", "--as-of", as_of)
    r = invoke(demo, "findings", "--kind", "vanished", "--format", "json")
    rows = orjson.loads(r.stdout)["findings"]  # type: ignore[attr-defined]
    assert rows and {x["kind"] for x in rows} == {"vanished"}
    assert {x["status"] for x in rows} == {"open"}
    r = invoke(demo, "findings", "--hop", "shipping", "--kind", "stalled", "--limit", "3")
    assert r.exit_code == 0 and "stalled" in r.stdout  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["reconcile", "--as-of", "someday"], "not a time: 'someday'"),
        (["reconcile", "--fail-on", "vanishd"], "unknown kind 'vanishd'"),
        (["reconcile", "--shard", "3/2"], "--shard 3/2: need 0 <= I < N"),
    ],
)
def test_reconcile_usage_errors(demo: Path, args: list[str], message: str) -> None:
    r = invoke(demo, *args)
    assert r.exit_code == 2  # type: ignore[attr-defined]
    assert message in r.stderr and "Traceback" not in r.stderr  # type: ignore[attr-defined]


def test_shards_cover_the_whole(demo: Path) -> None:
    as_of = (demo / "as_of").read_text()
    full = orjson.loads(invoke(demo, "reconcile", "--as-of", as_of, "--format", "json").stdout)  # type: ignore[attr-defined]
    parts = []
    for i in range(3):
        r = invoke(demo, "reconcile", "--as-of", as_of, "--format", "json", "--shard", f"{i}/3")
        parts += [f for f in orjson.loads(r.stdout)["findings"] if f["status"] != "resolved"]  # type: ignore[attr-defined]
    key = lambda f: (f["order_id"], f["kind"], f["hop"], f["from_hop"], f["detail"])  # noqa: E731
    assert sorted(map(key, parts)) == sorted(
        key(f) for f in full["findings"] if f["status"] != "resolved"
    )


def test_duckdb_out_of_memory_is_one_line_and_exit_3(
    demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A budget that is valid but too small for the window: DuckDB's own error, in one line,
    with what to change (a traceback before)."""
    import duckdb

    import ordertrail.reconcile as rec

    def oom(*a: object, **k: object) -> None:
        raise duckdb.OutOfMemoryException(
            "Out of Memory Error: failed to pin block of size 256.0 KiB (867.5 KiB/976.5 KiB "
            "used)\n\nPossible solutions: ..."
        )

    monkeypatch.setattr(rec, "reconcile", oom)
    r = invoke(demo, "reconcile", "--as-of", (demo / "as_of").read_text())
    assert r.exit_code == 3 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "Error: DuckDB ran out of memory: Out of Memory Error: failed to pin block of size "
        "256.0 KiB (867.5 KiB/976.5 KiB used); raise [engine] memory or lower [engine] part_orders"
    ]
