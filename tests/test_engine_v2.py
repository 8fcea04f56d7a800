"""The v2 engine end to end on a real store: objects and links, expired findings, trace by any
id and as of a time, a v1 store upgraded in place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from ordertrail.cli.main import cli
from ordertrail.reconcile import reconcile
from ordertrail.schemas.config import parse_config
from ordertrail.schemas.event import OrderEvent
from ordertrail.store import Checkpoint, Store
from ordertrail.store.engine import migrate

MIN = 60_000_000
H = 60 * MIN
T0 = 1_767_225_600_000_000  # 2026-01-01

CONFIG: dict[str, Any] = {
    "pipeline": {"name": "shop", "clock_skew": "2m", "lookback": "2d"},
    "objects": [{"name": "item"}, {"name": "parcel", "via": "item"},
                {"name": "shipment", "via": "parcel"}],
    "hops": [
        {"name": "checkout", "next": ["picked"], "within": "1h"},
        {"name": "picked", "each": "item", "next": ["packed"], "within": "1h"},
        {"name": "packed", "each": "parcel", "next": ["shipped"], "within": "2h"},
        {"name": "shipped", "next": ["delivered"], "within": "1d"},
        {"name": "delivered", "each": "shipment"},
        {"name": "cancelled", "closes": True},
    ],
    "sources": [
        {"name": "shop", "kind": "file", "path": "x/*.jsonl", "hop_field": "h", "order_id": "o",
         "timestamp": "t"},
    ],
}  # fmt: skip


def ev(eid: str, order: str, hop: str, minutes: int, **objects: list[str]) -> OrderEvent:
    return OrderEvent(eid, order, hop, T0 + minutes * MIN, "shop", f"f:{eid}", objects=objects)


def trail_store(url: str) -> Store:
    s = Store(url)
    s.write_batch(
        events=[
            ev("c1", "A", "checkout", 0, item=["A-1", "A-2", "A-3"]),
            ev("p1", "A", "picked", 10, item=["A-1"]),
            ev("p2", "A", "picked", 12, item=["A-2"]),
            # A-3 is never picked; the parcel holds and an item of order B
            ev("c2", "B", "checkout", 5, item=["B-1"]),
            ev("p3", "B", "picked", 15, item=["B-1"]),
            ev("k1", "", "packed", 30, parcel=["P1"], item=["A-1", "A-2", "B-1"]),
            # the carrier's scan arrives before the event that links its tracking number
            ev("d1", "", "delivered", 600, shipment=["1Z999AA1"]),
            ev("s1", "", "shipped", 120, parcel=["P1"], shipment=["1Z999AA1"]),
            # later orders pass picked after A-3 was due: the pipeline moved on past A-3
            *[ev(f"lc{k}", f"L{k}", "checkout", 20 + k) for k in range(3)],
            *[ev(f"lp{k}", f"L{k}", "picked", 70 + k) for k in range(3)],
            *[ev(f"lk{k}", f"L{k}", "packed", 100 + k) for k in range(3)],
            *[ev(f"ls{k}", f"L{k}", "shipped", 150 + k) for k in range(3)],
            *[ev(f"ld{k}", f"L{k}", "delivered", 300 + k) for k in range(3)],
        ],
        checkpoints=[Checkpoint("shop", "", {}, T0 + 40 * H)],
    )
    return s


def test_objects_resolve_through_links_and_via(store_url: str) -> None:
    cfg = parse_config(CONFIG)
    with trail_store(store_url) as s:
        r = reconcile(s, cfg, as_of=T0 + 20 * H)
    got = {(f["order_id"], f["kind"], f["hop"], f["from_hop"]): f for f in r.active()}
    lost = got[("A", "vanished", "picked", "checkout")]
    assert lost["objects"] == ["item:A-3"]
    assert lost["detail"].startswith("1 of 3 items: A-3: checkout at")
    assert lost["evidence"]["later_orders"] == 3 and lost["evidence"]["objects_total"] == {
        "item": 3
    }
    assert lost["evidence"]["last_event"]["source_ref"] == "f:d1"  # its parcel's delivery
    # the parcel belongs to both orders through its items; B is complete
    assert not any(k[0] == "B" for k in got)
    assert not any(f["order_id"] is None for f in r.active())  # the scan is linked
    assert r.states["complete"] >= 1


def test_a_finding_whose_order_left_the_window_expires(store_url: str) -> None:
    cfg = parse_config(CONFIG)
    with trail_store(store_url) as s:
        first = reconcile(s, cfg, as_of=T0 + 20 * H)
        assert any(f["order_id"] == "A" for f in first.active())
        later = reconcile(s, cfg, as_of=T0 + 30 * 24 * H)  # every event is out of the window
    gone = [f for f in later.findings if f["order_id"] == "A"]
    assert gone and {f["status"] for f in gone} == {"expired"}
    assert later.run["expired"] == len([f for f in first.active()])
    assert later.run["resolved"] == 0


def _invoke(tmp_path: Path, url: str, *args: str) -> Any:
    import tomllib  # noqa: F401  (the config is written as TOML below)

    cfg = tmp_path / "ordertrail.toml"
    cfg.write_text(_toml(CONFIG))
    return CliRunner().invoke(cli, ["--config", str(cfg), "--db", url, *args])


def _toml(doc: dict[str, Any]) -> str:
    def val(v: Any) -> str:
        if isinstance(v, str):
            return orjson.dumps(v).decode()
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + " }"
        return str(v)

    out = []
    for k, v in doc.items():
        if isinstance(v, dict):
            out.append(f"[{k}]")
            out.extend(f"{kk} = {val(vv)}" for kk, vv in v.items())
        else:
            for t in v:
                out.append(f"[[{k}]]")
                out.extend(f"{kk} = {val(vv)}" for kk, vv in t.items())
    return "\n".join(out) + "\n"


def test_trace_by_tracking_number_shows_every_order_of_the_parcel(
    tmp_path: Path, store_url: str
) -> None:
    trail_store(store_url).close()
    r = _invoke(tmp_path, store_url, "trace", "1Z999AA1", "--as-of", "2026-01-01T20:00:00Z",
                "--format", "json")  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = orjson.loads(r.stdout)
    orders = {t["order_id"]: t for t in doc["orders"]}
    assert set(orders) == {"A", "B"}
    assert orders["A"]["found_by"] == "shipment:1Z999AA1"
    assert [(m["hop"], m["objects"]) for m in orders["A"]["missing"]] == [("picked", ["item:A-3"])]
    assert {f["kind"] for f in orders["A"]["findings"]} == {"vanished"}
    assert "1Z999AA1" in {
        i for e in orders["A"]["events"] for i in e["objects"].get("shipment", [])
    }
    # with the kind prefix, and as a table for people
    r = _invoke(
        tmp_path, store_url, "trace", "shipment:1Z999AA1", "--as-of", "2026-01-01T20:00:00Z"
    )
    assert r.exit_code == 0 and "Order A (found by shipment:1Z999AA1)" in r.stdout


def test_trace_of_what_names_nothing_stored_is_unknown(tmp_path: Path, store_url: str) -> None:
    """``kind:id`` of an object never stored, a kind with no id and the empty id are unknown
    (exit 1), not an unlinked object or an order; an item whose own id has a colon (here it
    even begins with the order's id and a kind's name) is found by that id."""
    s = trail_store(store_url)
    s.write_batch([ev("x1", "item:X", "checkout", 1, item=["item:X:i0"])])
    s.close()
    at = ("--as-of", "2026-01-01T20:00:00Z")
    for ident in ("item:NOPE", "shipment:", ""):
        r = _invoke(tmp_path, store_url, "trace", ident, *at)
        assert r.exit_code == 1 and "no events for order" in r.output, (ident, r.output)
        assert "closest known ids: , " not in r.output and "belongs to no order" not in r.output
    r = _invoke(tmp_path, store_url, "trace", "item:X:i0", *at, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = orjson.loads(r.stdout)  # one order: its trail itself
    assert (doc["order_id"], doc["found_by"]) == ("item:X", "item:item:X:i0")


def test_trace_as_of_shows_no_later_event_and_judges_then(tmp_path: Path, store_url: str) -> None:
    trail_store(store_url).close()
    r = _invoke(
        tmp_path, store_url, "trace", "A", "--as-of", "2026-01-01T00:11:00Z", "--format", "json"
    )
    assert r.exit_code == 0, r.output
    doc = orjson.loads(r.stdout)
    assert [e["event_id"] for e in doc["events"]] == ["c1", "p1"]
    assert doc["findings"] == []  # nothing was overdue yet at 00:11
    assert doc["state"] == "in_flight"
    assert {m["hop"] for m in doc["missing"]} == {"picked"}
    # an unknown id: exit 1 with the closest ids
    r = _invoke(tmp_path, store_url, "trace", "AA", "--as-of", "2026-01-01T20:00:00Z")
    assert r.exit_code == 1


@pytest.mark.parametrize(
    "as_of",
    [
        "2026-01-01T00:20:00Z",  # every event in the window
        "2026-01-03T00:11:00Z",  # A's checkout and first pick before the window start
        "2026-01-03T00:40:00Z",  # A's checkout, picks and packing before it
        "2026-01-06T00:00:00Z",  # every event of A and B before it
    ],
)
def test_trace_judges_an_order_as_reconcile_does_whatever_of_it_is_old(
    tmp_path: Path, store_url: str, as_of: str
) -> None:
    """The trail shows the whole order, however old, but it is judged on the lookback window
    as reconcile judges it: the same findings, and none for an order wholly before it (an
    adversarial probe found trace reporting what no run ever would)."""
    trail_store(store_url).close()
    r = _invoke(tmp_path, store_url, "reconcile", "--as-of", as_of, "--format", "json")
    assert r.exit_code == 0, r.output
    ran = orjson.loads(r.stdout)["findings"]

    def key(f: dict[str, Any]) -> tuple[Any, ...]:
        return (f["kind"], f["hop"], f["from_hop"], tuple(f["objects"]), f["since"])

    for order in ("A", "B"):
        r = _invoke(tmp_path, store_url, "trace", order, "--as-of", as_of, "--format", "json")
        assert r.exit_code == 0, r.output
        (doc,) = [orjson.loads(r.stdout)] if r.stdout.startswith("{") else orjson.loads(r.stdout)
        assert sorted(map(key, doc["findings"])) == sorted(
            key(f) for f in ran if f["order_id"] == order
        )
        assert all(f["status"] != "not yet recorded" for f in doc["findings"])
        assert doc["events"] and doc["events"][0]["event_id"] == ("c1" if order == "A" else "c2")
        if as_of.startswith("2026-01-06"):
            assert doc["missing"] == []
            if order == "A":  # A-3 was never picked: no longer judged, not a finding
                assert doc["state"] == "outside_window"
                assert "older than the lookback window" in doc["summary"][0]
            else:  # B was delivered: an old finished order still reads as finished
                assert doc["state"] == "complete"
                assert doc["summary"] == ["Complete: every expected hop was reached."]


def test_the_order_page_of_an_order_wholly_before_the_window(store_url: str) -> None:
    from ordertrail.report.trace import build_trail
    from ordertrail.serve.pages import order_page

    cfg = parse_config(CONFIG)
    as_of = T0 + 5 * 24 * H
    with trail_store(store_url) as s:
        trail = build_trail(s, cfg, "A", as_of)
        page = order_page(s, cfg, trail, as_of, redact=False)
    assert trail.state == "outside_window" and trail.findings == [] and trail.expectations == []
    assert [e.event_id for e in trail.events][:1] == ["c1"]
    assert page.state == "Older than the lookback window"
    assert page.tell.startswith("The last news we have of this order is ")
    assert "older than the period we check automatically" in page.tell


def test_a_v1_store_upgrades_in_place_and_reconciles_the_same(tmp_path: Path) -> None:
    """Events written by v1 (revision 0002) reconcile to the findings of a fresh v2 store."""
    cfg = parse_config(
        {
            "pipeline": {"name": "v1", "lookback": "30d"},
            "hops": [
                {"name": "checkout", "next": ["payment"], "within": "15m"},
                {"name": "payment", "unique": True},
            ],
            "sources": [
                {
                    "name": "s",
                    "kind": "file",
                    "path": "x",
                    "hop_field": "h",
                    "order_id": "o",
                    "timestamp": "t",
                }
            ],
        }
    )
    rows = [
        ("e1", "O1", "checkout", 0), ("e2", "O2", "checkout", 1), ("e3", "O2", "payment", 5),
        ("e4", "O2", "payment", 7), ("e5", "O3", "payment", 9), ("e6", "O4", "checkout", 30),
        ("e7", "O4", "payment", 31),
    ]  # fmt: skip
    old_url = f"sqlite:///{tmp_path / 'v1.db'}"
    eng = create_engine(old_url)
    migrate(eng, "0002")
    with eng.begin() as c:
        for eid, o, hop, m in rows:
            c.execute(
                text(
                    "INSERT INTO events (event_id, source, order_id, order_bucket, hop, phase, "
                    "occurred_at, source_ref, attributes, ingested_at) VALUES (:e, 's', :o, 0, :h, "
                    "'completed', :t, '', '{}', 0)"
                ),
                {"e": eid, "o": o, "h": hop, "t": T0 + m * MIN},
            )
        c.execute(
            text("INSERT INTO checkpoints (source, key, position, watermark, updated_at) "
                 "VALUES ('s', '', '{}', :w, 0)"),
            {"w": T0 + 10 * H},
        )  # fmt: skip
    eng.dispose()
    fresh = Store(f"sqlite:///{tmp_path / 'v2.db'}")
    fresh.write_batch(
        events=[OrderEvent(e, o, h, T0 + m * MIN, "s") for e, o, h, m in rows],
        checkpoints=[Checkpoint("s", "", {}, T0 + 10 * H)],
    )

    def key(r: Any) -> list[tuple[Any, ...]]:
        return sorted((f["order_id"], f["kind"], f["hop"], f["since"]) for f in r.active())

    with Store(old_url) as upgraded:
        got = reconcile(upgraded, cfg, as_of=T0 + 10 * H)
    want = reconcile(fresh, cfg, as_of=T0 + 10 * H)
    fresh.close()
    assert key(got) == key(want)
    assert {f["kind"] for f in got.active()} == {"vanished", "duplicate", "orphan"}


def test_columnar_reads_see_what_this_process_just_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SQLite reader process (ADBC) reads what the pooled connections of this process
    committed a moment ago, and gives the same findings as the DBAPI path."""
    from ordertrail.store import arrow

    cfg = parse_config(CONFIG)
    url = f"sqlite:///{tmp_path / 's.db'}"
    with trail_store(url) as s:
        monkeypatch.setattr(arrow, "PROCESS_MIN_ROWS", 10**9)
        by_cursor = reconcile(s, cfg, as_of=T0 + 20 * H)
        monkeypatch.setattr(arrow, "PROCESS_MIN_ROWS", 0)
        by_process = reconcile(s, cfg, as_of=T0 + 20 * H)
        assert [f["detail"] for f in by_process.active()] == [
            f["detail"] for f in by_cursor.active()
        ]
        # A-3 is picked now: the next run must see it
        s.write_batch(events=[ev("p9", "A", "picked", 20 * 60 - 5, item=["A-3"])])
        again = reconcile(s, cfg, as_of=T0 + 20 * H)
    assert not any(f["order_id"] == "A" and f["kind"] == "vanished" for f in again.active())
