"""The operators' loop: honest output about time and emptiness, a trail readable at 80 columns,
consistent exit codes, names checked against the config, the same report on both stores."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from ordertrail.cli.main import cli
from ordertrail.simulation.shop import ShopSimulation

AS_OF = "2026-03-01T00:00:00Z"


def invoke(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, ["--config", str(cwd / "ordertrail.toml"), *args], env=env)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    root = tmp_path_factory.mktemp("shop")
    res = ShopSimulation(orders=400, seed=3).run(root)
    assert invoke(root, "ingest").exit_code == 0
    assert invoke(root, "reconcile", "--as-of", AS_OF).exit_code == 0
    yield root, res


def test_trace_is_readable_at_80_columns_and_never_splits_ids(shop: tuple[Path, Any]) -> None:
    root, res = shop
    lost = next(k for k, v in sorted(res.expected.items()) if v == "parcel_lost")
    tracking = lost[4][0].partition(":")[2]
    r = invoke(root, "trace", tracking, "--as-of", AS_OF, env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    # a line is longer than 80 columns only when one unbreakable token is
    for ln in lines:
        if len(ln) > 80:
            assert max(len(tok) for tok in ln.split()) > 80 - len(ln) + len(ln.split()[-1])
    doc = orjson.loads(invoke(root, "trace", tracking, "--as-of", AS_OF, "--format", "json").stdout)
    for e in doc["events"]:
        assert e["source_ref"] in r.stdout  # refs whole, on one line
        for ids in e["objects"].values():
            for i in ids:
                assert i in r.stdout
        email = e["attributes"].get("customer.email")
        if email:
            assert email in r.stdout
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ", r.stdout, re.M)  # dates unsplit
    assert "(times UTC" in r.stdout and "(deadlines UTC)" in r.stdout
    assert "trace " not in r.stdout.split("Trail", 1)[1]  # no empty trace lines


def test_search_by_object_and_exit_codes_match_trace(shop: tuple[Path, Any]) -> None:
    root, res = shop
    lost = next(k for k, v in sorted(res.expected.items()) if v == "parcel_lost")
    r = invoke(root, "search", "--object", lost[4][0].replace(":", "=", 1), "--format", "json")
    assert r.exit_code == 0, r.output
    assert [o["order_id"] for o in orjson.loads(r.stdout)["orders"]] == [lost[0]]
    none = invoke(root, "search", "--attr", "customer.email=nobody@example.com")
    assert none.exit_code == 1 and "No order matches." in none.stderr
    assert invoke(root, "trace", "WO-NOPE").exit_code == 1


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["findings", "--kind", "vanishd"], "did you mean 'vanished'"),
        (["findings", "--hop", "pament"], "did you mean 'payment'"),
        (["reconcile", "--fail-on", "stallled"], "did you mean 'stalled'"),
    ],
)
def test_names_are_checked_against_the_config(
    shop: tuple[Path, Any], args: list[str], said: str
) -> None:
    r = invoke(shop[0], *args)
    assert r.exit_code == 2 and said in r.stderr


def test_reconcile_says_when_there_is_nothing_to_judge(tmp_path: Path) -> None:
    (tmp_path / "ordertrail.toml").write_text(
        '[[hops]]\nname = "a"\nnext = ["b"]\nwithin = "1h"\n[[hops]]\nname = "b"\n'
        '[[sources]]\nname = "f"\nkind = "file"\npath = "logs/*.jsonl"\nhop = "a"\n'
        'order_id = "o"\ntimestamp = "t"\n'
    )
    assert invoke(tmp_path, "ingest").exit_code == 0
    r = invoke(tmp_path, "reconcile")
    assert r.exit_code == 0
    said = " ".join(r.stdout.split())
    assert "nothing was judged" in said and "matched no file" in said
    assert "every order is complete" not in said
    notes = orjson.loads(invoke(tmp_path, "reconcile", "--format", "json").stdout)["run"]["notes"]
    assert any("logs/*.jsonl" in n for n in notes)


def test_data_never_reaches_the_terminal_as_markup_or_control_codes(tmp_path: Path) -> None:
    from ordertrail.schemas.event import OrderEvent
    from ordertrail.store import Store

    (tmp_path / "ordertrail.toml").write_text('[[hops]]\nname = "a"\n')
    url = f"sqlite:///{tmp_path / 's.db'}"
    evil = "O-1\x1b[2J[link=https://x.example]click[/link][/]\r"
    with Store(url) as s:
        s.write_batch(events=[OrderEvent("e1", evil, "a", 1_767_225_600_000_000, "src",
                                         attributes={"note": "[bold]x[/bold]\x07"})])  # fmt: skip
    r = invoke(tmp_path, "--db", url, "trace", evil, "--as-of", AS_OF)
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "\r" not in r.stdout
    assert "\\x1b[2J[link=https://x.example]click[/link][/]\\r" in r.stdout
    assert "[bold]x[/bold]\\x07" in r.stdout


def test_report_amount_at_risk_is_the_same_on_sqlite_and_postgresql(
    tmp_path: Path, pg_url: str
) -> None:
    root = tmp_path / "shop"
    ShopSimulation(orders=300, seed=5).run(root)
    docs = []
    for url in (f"sqlite:///{tmp_path / 's.db'}", pg_url):
        assert invoke(root, "--db", url, "ingest").exit_code == 0
        assert invoke(root, "--db", url, "reconcile", "--as-of", AS_OF).exit_code == 0
        r = invoke(root, "--db", url, "report", "--as-of", AS_OF, "--format", "json")
        assert r.exit_code == 0, r.output
        docs.append(orjson.loads(r.stdout))
    assert docs[0]["at_risk"] == docs[1]["at_risk"] and docs[0]["at_risk"]["amount"] > 0
    assert docs[0]["funnel"] == docs[1]["funnel"]
