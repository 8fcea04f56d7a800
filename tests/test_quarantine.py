"""``ordertrail quarantine list|show|replay``: after a config fix, replay leaves the store exactly
as a clean first ingest of the fixed config would — on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import create_engine, select, text

from ordertrail.schemas.event import QuarantineRecord, derive_event_id
from ordertrail.store import Checkpoint, Store, tables
from tests.helpers import invoke, write_jsonl

T0 = 1_735_732_800_000  # 2025-01-01T12:00:00Z in ms

HOPS = """
[pipeline]
name = "t"

[[objects]]
name = "item"

[[hops]]
name = "checkout"
next = ["payment"]
within = "15m"

[[hops]]
name = "payment"
"""


@pytest.fixture
def fresh_url(store_url: str, tmp_path: Path, pg_server: str | None) -> Iterator[str]:
    """A second empty store on the same backend as ``store_url``: the clean first ingest."""
    if store_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    assert pg_server is not None
    name = f"ot_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield pg_server.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# -- the mistakes: data, a config that quarantines it, and the fixed config --------------------


def jsonl_orders(root: Path) -> None:
    (root / "in").mkdir()
    recs = []
    for i in range(12):
        recs.append(
            {
                "order": {"id": f"o-{i}"},
                "stage": "checkout" if i % 3 else "payment",
                "ts": T0 + i * 60_000,
                "items": [f"sku-{i}", f"sku-{i + 1}"],
                "amount": i * 10,
            }
        )
    write_jsonl(root / "in" / "a.jsonl", recs[:7])
    write_jsonl(root / "in" / "b.jsonl", recs[7:])


def jsonl_source(**over: str) -> str:
    keys = {
        "name": '"orders"',
        "kind": '"file"',
        "path": '"in/*.jsonl"',
        "hop_field": '"stage"',
        "order_id": '"order.id"',
        "objects": '{ item = "items[*]" }',
        "timestamp": '"ts"',
        "attributes": '["amount"]',
    }
    keys.update(over)
    return "\n[[sources]]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())


def csv_picks(sep: str, times: list[str]) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        lines = [sep.join(["order", "sku", "at"])]
        lines += [sep.join([f"o-{i}", f"sku-{i}", t]) for i, t in enumerate(times)]
        (root / "picks.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    return write


def csv_source(extra: str = "") -> str:
    return (
        '\n[[sources]]\nname = "picks"\nkind = "file"\npath = "picks.csv"\nhop = "payment"\n'
        'order_id = "order"\nobjects = { item = "sku" }\ntimestamp = "at"\n'
        f'timezone = "Europe/Berlin"\n{extra}'
    )


def heartbeats(root: Path) -> None:
    jsonl_orders(root)
    beats = [{"type": "heartbeat", "ts": T0 + i} for i in range(5)]
    write_jsonl(root / "in" / "c.jsonl", beats)


@dataclass(frozen=True)
class Mistake:
    name: str
    data: Callable[[Path], None]
    bad: str
    fixed: str
    cause: str  # what ``check`` says about the bad config
    exit_bad: int = 4


ISO_AND_DOTTED = ["2025-03-01T12:00:00"] * 2 + [f"{d}.03.2025 10:{d}" for d in range(13, 18)]

MISTAKES = [
    Mistake(
        "wrong id path",
        jsonl_orders,
        jsonl_source(order_id='"orderId"', objects="{}"),
        jsonl_source(),
        "no field 'orderId' (order_id) in 12 of 12 records; the records have 'order.id'",
    ),
    Mistake(
        "wrong time path",
        jsonl_orders,
        jsonl_source(timestamp='"time"'),
        jsonl_source(),
        "no field 'time' (timestamp) in 12 of 12 records; fields holding times: 'ts'",
    ),
    Mistake(
        "wrong delimiter",
        csv_picks(";", ["2025-03-01T12:00:00"] * 6),
        csv_source(),
        csv_source('delimiter = ";"\n'),
        "looks like ';'-separated CSV",
    ),
    Mistake(
        # 2 of 7 rows are ISO and stored at once: the replay adds the other 5, no duplicates
        "date format",
        csv_picks(",", ISO_AND_DOTTED),
        csv_source(),
        csv_source('timestamp_format = "%d.%m.%Y %H:%M"\n'),
        'set timestamp_format = "%d.%m.%Y %H:%M"',
    ),
    Mistake(
        # records without an order: quarantined until a `where` filters them
        "records a where should filter",
        heartbeats,
        jsonl_source(),
        jsonl_source(where='{ stage = ["checkout", "payment"] }'),
        "",
        exit_bad=0,  # 5 of 17 is within the default max_quarantine
    ),
]


def write_config(root: Path, source: str) -> None:
    (root / "ordertrail.toml").write_text(HOPS + source, encoding="utf-8")


def snapshot(url: str) -> dict[str, Any]:
    """Everything an ingest decides: events (not when they were stored), links, mentions,
    quarantine, and the filtered counts."""
    ev = tables.events.c
    with Store(url) as s, s.engine.connect() as conn:
        events = conn.execute(
            select(
                ev.source,
                ev.event_id,
                ev.order_id,
                ev.hop,
                ev.phase,
                ev.occurred_at,
                ev.source_ref,
                ev.trace_id,
                ev.attributes,
                ev.objects,
            )
        ).all()
        links = set(conn.execute(select(tables.links)).all())
        mentions = set(conn.execute(select(tables.event_objects)).all())
        q = tables.quarantine.c
        quarantine = set(conn.execute(select(q.source, q.source_ref, q.reason, q.raw)).all())
        filtered = {
            (c["source"], c["key"]): orjson.loads(c["position"]).get("filtered")
            for c in s.all_checkpoints()
        }
    return {
        "count": len(events),
        "events": set(events),
        "links": links,
        "mentions": mentions,
        "quarantine": quarantine,
        "filtered": filtered,
    }


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.name for m in MISTAKES])
def test_replay_after_a_fix_leaves_the_store_as_a_clean_ingest(
    mistake: Mistake, store_url: str, fresh_url: str, tmp_path: Path
) -> None:
    broken, clean = tmp_path / "broken", tmp_path / "clean"
    broken.mkdir()
    mistake.data(broken)
    shutil.copytree(broken, clean)
    write_config(broken, mistake.bad)
    write_config(clean, mistake.fixed)

    # the mistake: check names the cause, ingest quarantines and says so
    r = invoke(broken, "check", "--format", "json")
    said = " | ".join(h["message"] for h in orjson.loads(r.stdout)["sources"][0]["hints"])
    assert mistake.cause in said
    r = invoke(broken, "--db", store_url, "ingest")
    assert r.exit_code == mistake.exit_bad, r.stderr
    quarantined = invoke(broken, "--db", store_url, "quarantine", "list", "--format", "json")
    assert orjson.loads(quarantined.stdout)["total"] > 0

    # the fix, and a replay
    write_config(broken, mistake.fixed)
    assert invoke(broken, "check").exit_code == 0
    r = invoke(broken, "--db", store_url, "quarantine", "replay", "--format", "json")
    assert r.exit_code == 0, r.stderr
    (rep,) = orjson.loads(r.stdout)["sources"]
    assert rep["kept"] == rep["not_replayable"] == 0
    assert rep["examined"] == rep["stored"] + rep["redelivered"] + rep["filtered"]

    # a clean first ingest of the fixed config, from the same files
    assert invoke(clean, "--db", fresh_url, "ingest").exit_code == 0
    replayed, fresh = snapshot(store_url), snapshot(fresh_url)
    assert replayed["count"] == fresh["count"] > 0
    assert replayed == fresh

    # replaying again changes nothing
    r = invoke(broken, "--db", store_url, "quarantine", "replay", "--format", "json")
    assert r.exit_code == 0 and orjson.loads(r.stdout)["sources"] == []
    assert snapshot(store_url) == fresh
    # nor does reading the files again (the checkpoints are at their ends)
    assert invoke(broken, "--db", store_url, "ingest").exit_code == 0
    assert snapshot(store_url) == fresh


def test_records_now_filtered_leave_quarantine_and_are_counted(
    store_url: str, tmp_path: Path
) -> None:
    heartbeats(tmp_path)
    write_config(tmp_path, jsonl_source())
    assert invoke(tmp_path, "--db", store_url, "ingest").exit_code == 0
    write_config(tmp_path, jsonl_source(where='{ stage = ["checkout", "payment"] }'))
    r = invoke(tmp_path, "--db", store_url, "quarantine", "replay")
    assert r.exit_code == 0, r.stderr
    assert (
        "orders: 5 record(s) now filtered by `where` were removed from quarantine and counted as "
        "filtered"
    ) in " ".join(r.stdout.split())
    st = orjson.loads(invoke(tmp_path, "--db", store_url, "status", "--format", "json").stdout)
    assert (st["quarantine"], st["filtered"]) == (0, 5)


def test_replay_is_one_transaction_per_batch(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jsonl_orders(tmp_path)
    write_config(tmp_path, jsonl_source(order_id='"orderId"', objects="{}"))
    assert invoke(tmp_path, "--db", store_url, "ingest").exit_code == 4
    write_config(tmp_path, jsonl_source())

    import ordertrail.store.quarantine as sq

    real, calls = sq.insert_links, []

    def failing_second(conn: Any, rows: Any) -> int:
        calls.append(len(rows))
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(conn, rows)

    monkeypatch.setattr(sq, "insert_links", failing_second)
    with pytest.raises(RuntimeError):
        invoke(tmp_path, "--db", store_url, "quarantine", "replay", "--batch-size", "5")
    with Store(store_url) as s:
        # the first batch is in, the second left no trace, the rest was not reached
        assert (s.count_events(), s.count_quarantine()) == (5, 7)
    monkeypatch.setattr(sq, "insert_links", real)
    r = invoke(tmp_path, "--db", store_url, "quarantine", "replay", "--batch-size", "5")
    assert r.exit_code == 0
    with Store(store_url) as s:
        assert (s.count_events(), s.count_quarantine()) == (12, 0)


def test_a_csv_record_whose_file_is_gone_stays_with_the_reason(
    store_url: str, tmp_path: Path
) -> None:
    csv_picks(";", ["2025-03-01T12:00:00"] * 3)(tmp_path)
    write_config(tmp_path, csv_source())
    assert invoke(tmp_path, "--db", store_url, "ingest").exit_code == 4
    before = snapshot(store_url)
    (tmp_path / "picks.csv").unlink()
    write_config(tmp_path, csv_source('delimiter = ";"\n'))
    r = invoke(tmp_path, "--db", store_url, "quarantine", "replay")
    assert r.exit_code == 0
    assert (
        "picks: 3 not replayable: CSV file 'picks.csv' is gone: its header is needed to map "
        "the record"
    ) in r.stdout
    assert snapshot(store_url) == before  # reasons untouched: they still say what went wrong
    r = invoke(tmp_path, "--db", store_url, "quarantine", "show", "1")
    assert "cannot be replayed: CSV file 'picks.csv' is gone" in r.stdout


def test_reasons_follow_the_current_config_and_dry_run_changes_nothing(
    store_url: str, tmp_path: Path
) -> None:
    jsonl_orders(tmp_path)
    write_config(tmp_path, jsonl_source(order_id='"orderId"', objects="{}"))
    assert invoke(tmp_path, "--db", store_url, "ingest").exit_code == 4
    write_config(tmp_path, jsonl_source(timestamp='"time"'))  # a second mistake
    before = snapshot(store_url)
    r = invoke(tmp_path, "--db", store_url, "quarantine", "replay", "--dry-run", "--format", "json")
    (rep,) = orjson.loads(r.stdout)["sources"]
    assert (rep["dry_run"], rep["kept"], rep["reasons_changed"]) == (True, 12, 12)
    assert snapshot(store_url) == before
    r = invoke(tmp_path, "--db", store_url, "quarantine", "replay")
    assert "orders: 12 record(s) stay with a new reason" in r.stdout
    assert "still quarantined 12 × missing timestamp (field 'time')" in r.stdout
    listed = orjson.loads(
        invoke(tmp_path, "--db", store_url, "quarantine", "list", "--format", "json").stdout
    )
    assert {x["reason"] for x in listed["records"]} == {"missing timestamp (field 'time')"}


def test_list_filters_by_reason_and_limits(store_url: str, tmp_path: Path) -> None:
    jsonl_orders(tmp_path)
    (tmp_path / "in" / "c.jsonl").write_bytes(b'{"order": {"id": "x"\n')
    write_config(tmp_path, jsonl_source(timestamp='"time"'))
    invoke(tmp_path, "--db", store_url, "ingest")
    doc = orjson.loads(
        invoke(tmp_path, "--db", store_url, "quarantine", "list", "--format", "json").stdout
    )
    assert (doc["total"], doc["shown"]) == (13, 13)
    assert doc["by_reason"] == [
        {"source": "orders", "reason": "missing timestamp (field 'time')", "count": 12},
        {"source": "orders", "reason": "malformed JSON", "count": 1},
    ]
    first = doc["records"][0]
    assert set(first) == {"id", "source", "source_ref", "reason", "received_at", "raw"}
    assert first["source_ref"] == "in/a.jsonl:1" and first["received_at"].endswith("Z")
    args = ["quarantine", "list", "orders", "--reason", "MALFORMED", "--format", "json"]
    doc = orjson.loads(invoke(tmp_path, "--db", store_url, *args).stdout)
    assert doc["total"] == 1 and doc["records"][0]["source_ref"] == "in/c.jsonl:1"
    r = invoke(tmp_path, "--db", store_url, "quarantine", "list", "--limit", "2")
    assert r.exit_code == 0
    assert "2 of 13 shown; --limit 13 shows all" in r.stdout
    assert "missing timestamp (field 'time')" in r.stdout
    # without a subcommand: the list
    assert "2 of 13 shown" not in invoke(tmp_path, "--db", store_url, "quarantine").stdout
    assert "13 of 13 shown" in invoke(tmp_path, "--db", store_url, "quarantine").stdout


def test_show_escapes_control_characters(store_url: str, tmp_path: Path) -> None:
    write_config(tmp_path, jsonl_source())
    raw = '{"order": {"id": "o-1"}, "note": "\x1b[31mred\x07\u202eevil\r\nnext"}'
    with Store(store_url) as s:
        s.write_batch(quarantined=[QuarantineRecord("orders", "in/x.jsonl:3", "bad \x1b[0m", raw)])
    r = invoke(tmp_path, "--db", store_url, "quarantine", "show", "1")
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out and "\r" not in out
    assert '"note": "\\x1b[31mred\\x07\\u202eevil\\r\\nnext"}' in out
    assert "ref:      in/x.jsonl:3" in out and "reason:   bad \\x1b[0m" in out
    assert "received: " in out and " UTC" in out
    doc = orjson.loads(
        invoke(tmp_path, "--db", store_url, "quarantine", "show", "1", "--format", "json").stdout
    )
    assert doc["raw"] == raw  # JSON carries it exactly (escaped by JSON itself)
    assert doc["now"]["outcome"] == "quarantined"
    r = invoke(tmp_path, "--db", store_url, "quarantine", "show", "99")
    assert r.exit_code == 1 and r.stderr.strip() == "Error: no quarantined record with id 99"
    r = invoke(tmp_path, "--db", store_url, "quarantine", "list")
    assert "\x1b" not in r.stdout


KAFKA = """
[[sources]]
name = "pay"
kind = "kafka"
topic = "payments"
bootstrap_servers = "127.0.0.1:1"
hop = "payment"
order_id = "order.id"
timestamp = "ts"
where = { type = "charge" }
"""


def test_kafka_records_replay_with_their_ids_and_partition_counts(
    store_url: str, tmp_path: Path
) -> None:
    """Kafka rows need no broker: the record is the message value (its headers are not kept)."""
    write_config(tmp_path, KAFKA.replace('"order.id"', '"orderId"'))
    good = orjson.dumps({"type": "charge", "order": {"id": "o-1"}, "ts": T0}).decode()
    other = orjson.dumps({"type": "refund", "order": {"id": "o-1"}, "ts": T0}).decode()
    rows = [
        QuarantineRecord("pay", "payments:0:7", "missing order id (field 'orderId')", good),
        QuarantineRecord("pay", "payments:1:3", "missing order id (field 'orderId')", other),
    ]
    with Store(store_url) as s:
        s.write_batch(
            quarantined=rows,
            checkpoints=[
                Checkpoint("pay", "payments:0", {"offset": 8, "filtered": 2}),
                Checkpoint("pay", "payments:1", {"offset": 4, "filtered": 0}),
            ],
        )
    write_config(tmp_path, KAFKA)
    r = invoke(tmp_path, "--db", store_url, "quarantine", "replay", "pay", "--format", "json")
    assert r.exit_code == 0, r.stderr
    (rep,) = orjson.loads(r.stdout)["sources"]
    assert (rep["stored"], rep["filtered"], rep["filtered_counted"]) == (1, 1, 1)
    with Store(store_url) as s:
        (e,) = s.order_events("o-1")
        assert e.event_id == derive_event_id("pay", good.encode())  # as the collector derives it
        assert e.source_ref == "payments:0:7" and e.trace_id is None
        cps = s.checkpoints("pay")
        assert cps["payments:1"].position["filtered"] == 1
        assert cps["payments:0"].position["filtered"] == 2
        assert s.count_quarantine() == 0


def test_rows_of_a_source_no_longer_configured_are_left_alone(
    store_url: str, tmp_path: Path
) -> None:
    write_config(tmp_path, jsonl_source())
    with Store(store_url) as s:
        s.write_batch(quarantined=[QuarantineRecord("gone", "x:1", "why", "{}")])
    r = invoke(tmp_path, "--db", store_url, "quarantine", "replay", "--format", "json")
    (rep,) = orjson.loads(r.stdout)["sources"]
    assert rep["not_replayable_reasons"] == {"source 'gone' is not in the config": 1}
    r = invoke(tmp_path, "--db", store_url, "quarantine", "replay", "gone")
    assert r.exit_code == 2 and "unknown source 'gone'" in r.stderr
    with Store(store_url) as s:
        assert s.count_quarantine() == 1


def test_an_unfinished_last_line_the_file_source_reads_again_stays(
    store_url: str, tmp_path: Path
) -> None:
    """The file source remembers a quarantined, unconsumed last line as its file's ``tail``: it
    may be half a record, so replay leaves it to the next ingest."""
    write_config(tmp_path, jsonl_source(objects="{}"))
    half = orjson.dumps({"order": {"id": "o-1"}, "stage": "checkout", "ts": T0}).decode()
    with Store(store_url) as s:
        s.write_batch(
            quarantined=[QuarantineRecord("orders", "in/a.jsonl:3", "possibly torn", half)],
            checkpoints=[
                Checkpoint("orders", "in/a.jsonl", {"offset": 80, "tail": {"ref": "in/a.jsonl:3"}})
            ],
        )
    r = invoke(tmp_path, "--db", store_url, "quarantine", "replay", "--format", "json")
    (rep,) = orjson.loads(r.stdout)["sources"]
    assert rep["not_replayable_reasons"] == {
        "the unfinished last line of a file: ingest reads it again once it is complete": 1
    }
    with Store(store_url) as s:
        assert (s.count_events(), s.count_quarantine()) == (0, 1)
