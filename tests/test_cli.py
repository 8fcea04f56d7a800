"""The CLI: exit codes, one-line errors, JSON shapes, the demo."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.helpers import invoke as run_in
from tests.helpers import rec, write_jsonl


def invoke(args: list[str], cwd: Path) -> object:
    return run_in(cwd, *args)


def test_init_writes_a_valid_config(tmp_path: Path) -> None:
    r = invoke(["init", str(tmp_path / "x")], tmp_path)
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    r = invoke(["init", str(tmp_path / "x")], tmp_path)
    assert r.exit_code == 2 and "exists; use --force" in r.stderr  # type: ignore[attr-defined]
    r = invoke(
        [
            "--config",
            str(tmp_path / "x" / "ordertrail.toml"),
            "--db",
            f"sqlite:///{tmp_path}/s.db",
            "status",
            "--format",
            "json",
        ],
        tmp_path,
    )
    assert r.exit_code == 0, r.stderr  # type: ignore[attr-defined]


def test_missing_config_is_one_line_exit_2(tmp_path: Path) -> None:
    r = invoke(["ingest"], tmp_path)
    assert r.exit_code == 2  # type: ignore[attr-defined]
    assert r.stderr.count("\n") == 1 and "no ordertrail.toml here" in r.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in r.stderr  # type: ignore[attr-defined]


def test_bad_config_exit_2_names_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "ordertrail.toml").write_text('[[hops]]\nname = "a"\nnext = ["b"]\nwithin = "1m"\n')
    r = invoke(["ingest"], tmp_path)
    assert r.exit_code == 2  # type: ignore[attr-defined]
    assert "ordertrail.toml: hops[0] (a).next: unknown hop 'b'" in r.stderr  # type: ignore[attr-defined]


def test_unreachable_store_exit_3(workdir: Path) -> None:
    r = invoke(["--db", "postgresql+psycopg://x@127.0.0.1:1/y", "status"], workdir)
    assert r.exit_code == 3 and "cannot reach store" in r.stderr  # type: ignore[attr-defined]
    assert r.stderr.count("\n") == 1  # type: ignore[attr-defined]


def test_unknown_source_and_non_file_source(workdir: Path) -> None:
    r = invoke(["ingest", "nope"], workdir)
    assert r.exit_code == 2 and "unknown source 'nope'" in r.stderr  # type: ignore[attr-defined]


def test_ingest_and_status_json(workdir: Path, store_url: str) -> None:
    write_jsonl(workdir / "in" / "a.jsonl", [rec(i) for i in range(5)] + [b"{oops"])
    r = invoke(["--db", store_url, "ingest", "--all", "--format", "json"], workdir)
    assert r.exit_code == 0, r.stderr  # type: ignore[attr-defined]
    out = orjson.loads(r.stdout)  # type: ignore[attr-defined]
    assert out["sources"][0]["stored"] == 5 and out["sources"][0]["quarantined"] == 1
    r = invoke(["--db", store_url, "status", "--format", "json"], workdir)
    st = orjson.loads(r.stdout)  # type: ignore[attr-defined]
    assert (st["events"], st["quarantine"], st["orders"]) == (5, 1, 5)
    assert isinstance(st["quarantine"], int)
    src = {s["name"]: s for s in st["sources"]}
    assert src["orders"]["events"] == 5 and src["orders"]["quarantined"] == 1
    assert src["orders"]["watermark"].endswith("Z") and src["orders"]["lag"] == 0
    assert set(src["orders"]) >= {
        "name",
        "kind",
        "events",
        "quarantined",
        "watermark",
        "checkpoint",
        "lag",
    }


def test_status_table_fits_100_columns_without_colour(workdir: Path, sqlite_url: str) -> None:
    write_jsonl(workdir / "in" / "a.jsonl", [rec(i) for i in range(3)])
    invoke(["--db", sqlite_url, "ingest"], workdir)
    r = invoke(["--db", sqlite_url, "status"], workdir)
    assert r.exit_code == 0  # type: ignore[attr-defined]
    assert "\x1b[" not in r.stdout  # type: ignore[attr-defined]
    assert max(len(x) for x in r.stdout.splitlines()) <= 100  # type: ignore[attr-defined]


def test_demo_runs_and_prints_an_ingest_summary(tmp_path: Path) -> None:
    r = invoke(["demo", "--orders", "300", "--dir", str(tmp_path / "d")], tmp_path)
    assert r.exit_code == 0, r.stderr  # type: ignore[attr-defined]
    assert "Ingest" in r.stdout and "checkout" in r.stdout  # type: ignore[attr-defined]
    assert (tmp_path / "d" / "ordertrail.db").exists()


@pytest.mark.parametrize("args", [["reconcile", "--bogus"], ["status", "--format", "xml"]])
def test_usage_errors_exit_2(workdir: Path, args: list[str]) -> None:
    r = invoke(args, workdir)
    assert r.exit_code == 2  # type: ignore[attr-defined]


def test_collect_refuses_a_file_source_clearly(tmp_path: Path) -> None:
    (tmp_path / "ordertrail.toml").write_text(
        '[[hops]]\nname = "a"\n'
        '[[sources]]\nname = "f"\nkind = "file"\npath = "x"\nhop = "a"\norder_id = "o"\ntimestamp = "t"\n'
    )
    r = invoke(["collect", "f"], tmp_path)
    assert r.exit_code == 2 and "run 'ordertrail ingest f'" in r.stderr  # type: ignore[attr-defined]


def test_demo_refuses_a_folder_it_did_not_write_and_deletes_nothing(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "data" / "orders.csv").write_text("mine\n")
    (proj / "ordertrail.toml").write_text("# the user's own config\n")
    r = invoke(["demo", "--orders", "50", "--dir", str(proj)], tmp_path)
    assert r.exit_code == 2 and "not empty" in r.stderr  # type: ignore[attr-defined]
    # --force never overwrites what the demo did not write
    r = invoke(["demo", "--orders", "50", "--dir", str(proj), "--force"], tmp_path)
    assert r.exit_code == 2 and "never overwrites" in r.stderr  # type: ignore[attr-defined]
    assert (proj / "data" / "orders.csv").read_text() == "mine\n"
    assert (proj / "ordertrail.toml").read_text() == "# the user's own config\n"
    assert sorted(p.name for p in proj.rglob("*")) == ["data", "orders.csv", "ordertrail.toml"]


def test_demo_reruns_in_its_own_folder_and_force_adds_beside_other_files(tmp_path: Path) -> None:
    d = tmp_path / "d"
    assert invoke(["demo", "--orders", "50", "--dir", str(d)], tmp_path).exit_code == 0  # type: ignore[attr-defined]
    (d / "notes.txt").write_text("keep me")
    assert invoke(["demo", "--orders", "50", "--dir", str(d)], tmp_path).exit_code == 0  # type: ignore[attr-defined]
    assert (d / "notes.txt").read_text() == "keep me"
    other = tmp_path / "other"
    other.mkdir()
    (other / "README").write_text("x")
    r = invoke(["demo", "--orders", "50", "--dir", str(other), "--force"], tmp_path)
    assert r.exit_code == 0 and (other / "README").read_text() == "x"  # type: ignore[attr-defined]


def test_demo_never_writes_into_the_configured_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prod = tmp_path / "prod.db"
    url = f"sqlite:///{prod}"
    monkeypatch.setenv("ORDERTRAIL_DB_URL", url)
    from ordertrail.store import Store

    Store(url).close()
    before = prod.read_bytes()
    r = invoke(["--db", url, "demo", "--orders", "50", "--dir", str(tmp_path / "d")], tmp_path)
    assert r.exit_code == 0, r.stderr  # type: ignore[attr-defined]
    assert prod.read_bytes() == before
    assert "left alone" in r.stdout  # type: ignore[attr-defined]
    assert (tmp_path / "d" / "ordertrail.db").exists()
