"""``ordertrail check``: a sample of real records mapped with the real config, nothing stored —
and for each common mistake, the cause named."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from ordertrail.collectors.check import close_fields, fitting_formats, reason_key
from ordertrail.store import Store
from tests.helpers import invoke, write_csv, write_jsonl

HOPS = """
[pipeline]
name = "t"

[[hops]]
name = "checkout"
next = ["payment"]
within = "15m"

[[hops]]
name = "payment"
"""


T0 = 1_735_732_800_000_000  # 2025-01-01T12:00:00Z in µs: in the past, whatever the clock says


def setup(root: Path, source: str) -> None:
    (root / "ordertrail.toml").write_text(HOPS + source, encoding="utf-8")


def orders_source(**over: str) -> str:
    keys = {
        "name": '"orders"',
        "kind": '"file"',
        "path": '"in/*.jsonl"',
        "hop_field": '"stage"',
        "order_id": '"order.id"',
        "timestamp": '"ts"',
    }
    keys.update(over)
    return "\n[[sources]]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())


def records(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": f"e{i}",
            "order": {"id": f"o-{i}"},
            "stage": "checkout" if i % 2 else "payment",
            "ts": (T0 + i * 60_000_000) // 1000,
            **extra,
        }
        for i in range(n)
    ]


def check_json(root: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    r = invoke(root, "check", *args, "--format", "json")
    return r.exit_code, orjson.loads(r.stdout), r.stderr


def one(doc: dict[str, Any]) -> dict[str, Any]:
    assert len(doc["sources"]) == 1
    return doc["sources"][0]


def hints(src: dict[str, Any], kind: str | None = None) -> list[str]:
    return [h["message"] for h in src["hints"] if kind is None or h["kind"] == kind]


# -- a clean source --------------------------------------------------------------------------


def test_a_clean_source_exits_0_with_counts_hops_and_time_range(tmp_path: Path) -> None:
    setup(tmp_path, orders_source())
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", records(12))
    code, doc, err = check_json(tmp_path)
    assert code == 0, err
    src = one(doc)
    assert doc["ok"] is True
    assert (src["sampled"], src["stored"], src["filtered"], src["quarantined"]) == (12, 12, 0, 0)
    assert src["hops"] == {"checkout": 6, "payment": 6}
    assert src["time_range"] == {"first": "2025-01-01T12:00:00Z", "last": "2025-01-01T12:11:00Z"}
    assert src["hints"] == [] and src["reasons"] == []
    assert src["files"] == 1


def test_check_stores_nothing_and_leaves_checkpoints_alone(tmp_path: Path) -> None:
    setup(tmp_path, orders_source())
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", records(5))
    db = tmp_path / "never.db"
    r = invoke(tmp_path, "--db", f"sqlite:///{db}", "check")
    assert r.exit_code == 0, r.stderr
    assert not db.exists()  # check does not even open the store
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert invoke(tmp_path, "--db", url, "ingest").exit_code == 0
    with Store(url) as s:
        before = s.all_checkpoints()
    write_jsonl(tmp_path / "in" / "a.jsonl", records(3), mode="ab")
    _, doc, _ = check_json(tmp_path, "--sample", "100")
    assert one(doc)["sampled"] == 8  # from the start of the file, not from the checkpoint
    with Store(url) as s:
        assert s.all_checkpoints() == before
        assert s.count_events() == 5


def test_sample_limits_the_records_read(tmp_path: Path) -> None:
    setup(tmp_path, orders_source())
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", records(30))
    write_jsonl(tmp_path / "in" / "b.jsonl", records(30))
    _, doc, _ = check_json(tmp_path, "--sample", "7")
    assert one(doc)["sampled"] == 7


# -- one test per mistake class ---------------------------------------------------------------


def test_wrong_id_path_names_the_field_the_records_have(tmp_path: Path) -> None:
    setup(tmp_path, orders_source(order_id='"orderId"'))
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", records(12))
    code, doc, err = check_json(tmp_path)
    assert code == 4
    assert err.strip() == (
        "Error: orders would quarantine 100% of its sampled records (max_quarantine 50%): "
        "missing order id (field 'orderId')"
    )
    src = one(doc)
    assert src["quarantined"] == 12 and src["ok"] is False
    top = src["reasons"][0]
    assert (top["reason"], top["count"], top["field"]) == (
        "missing order id (field 'orderId')",
        12,
        "orderId",
    )
    assert top["example"]["source_ref"] == "in/a.jsonl:1"
    assert '"order":{"id":"o-0"}' in top["example"]["raw"]
    assert hints(src, "missing_field") == [
        "no field 'orderId' (order_id) in 12 of 12 records; the records have 'order.id'"
    ]
    assert src["hints"][0]["suggestion"] == 'order_id = "order.id"'
    # the table says the same
    r = invoke(tmp_path, "check")
    assert r.exit_code == 4
    assert "no field 'orderId' (order_id) in 12 of 12 records; the records have 'order.id'" in (
        r.stdout.replace("\n", " ")
    )


def test_id_path_naming_an_object_suggests_its_id(tmp_path: Path) -> None:
    setup(tmp_path, orders_source(order_id='"order"'))
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", records(4))
    code, doc, _ = check_json(tmp_path)
    assert code == 4
    src = one(doc)
    assert src["reasons"][0]["reason"] == "invalid order id … (field 'order')"
    assert hints(src, "not_a_value") == [
        "field 'order' (order_id) is an object in 4 of 4 records (keys 'id'); did you mean "
        "'order.id'?"
    ]


@pytest.mark.parametrize(
    ("configured", "recorded", "expected"),
    [
        ("createdAt", "created_at", "the records have 'created_at'"),
        ("Created.At", "created_at", "the records have 'created_at'"),
        ("time", "ts", "fields holding times: 'ts'"),
    ],
)
def test_wrong_time_path_names_the_field_the_records_have(
    tmp_path: Path, configured: str, recorded: str, expected: str
) -> None:
    setup(tmp_path, orders_source(timestamp=f'"{configured}"'))
    (tmp_path / "in").mkdir()
    recs = records(6)
    for r in recs:
        r[recorded] = r.pop("ts")
    write_jsonl(tmp_path / "in" / "a.jsonl", recs)
    code, doc, _ = check_json(tmp_path)
    assert code == 4
    src = one(doc)
    assert src["reasons"][0]["reason"] == f"missing timestamp (field '{configured}')"
    assert hints(src, "missing_field") == [
        f"no field '{configured}' (timestamp) in 6 of 6 records; {expected}"
    ]


def test_naive_times_without_a_timezone(tmp_path: Path) -> None:
    setup(tmp_path, orders_source())
    (tmp_path / "in").mkdir()
    recs = records(12)
    for i, r in enumerate(recs):
        r["ts"] = f"2025-03-01T12:{i:02d}:00"
    write_jsonl(tmp_path / "in" / "a.jsonl", recs)
    code, doc, _ = check_json(tmp_path)
    assert code == 0  # stored, but read as UTC: a hint, not a failure
    src = one(doc)
    assert src["stored"] == 12
    (msg,) = hints(src, "naive_times")
    assert msg.startswith(
        "12 of 12 timestamps (field 'ts') have no zone; the source has no `timezone`"
    )
    # with a zone in the records, or a timezone on the source, nothing to say
    setup(tmp_path, orders_source(timezone='"Europe/Berlin"'))
    assert hints(one(check_json(tmp_path)[1]), "naive_times") == []
    setup(tmp_path, orders_source(timezone='"UTC"'))  # chosen, not defaulted
    assert hints(one(check_json(tmp_path)[1]), "naive_times") == []
    for r in recs:
        r["ts"] += "+01:00"
    write_jsonl(tmp_path / "in" / "a.jsonl", recs)
    setup(tmp_path, orders_source())
    assert hints(one(check_json(tmp_path)[1]), "naive_times") == []


@pytest.mark.parametrize(("sep", "name"), [(";", "';'"), ("\t", "tab")])
def test_wrong_delimiter(tmp_path: Path, sep: str, name: str) -> None:
    setup(
        tmp_path,
        '\n[[sources]]\nname = "wh"\nkind = "file"\npath = "wh.csv"\nhop = "payment"\n'
        'order_id = "order"\ntimestamp = "at"\n',
    )
    lines = [sep.join(["order", "at"])] + [
        sep.join([f"o-{i}", f"2025-03-01T12:0{i}:00Z"]) for i in range(5)
    ]
    (tmp_path / "wh.csv").write_text("\n".join(lines) + "\n")
    code, doc, _ = check_json(tmp_path)
    assert code == 4
    src = one(doc)
    assert src["quarantined"] == 5
    (h,) = src["hints"]  # nothing else is judged while every record is one wrong column
    assert h["kind"] == "delimiter"
    assert h["message"].startswith(f"looks like {name}-separated CSV: the header of 'wh.csv'")
    shown = "\\t" if sep == "\t" else sep
    assert h["suggestion"] == f'delimiter = "{shown}"'


def test_a_glob_matching_no_file(tmp_path: Path) -> None:
    setup(tmp_path, orders_source(path='"data/*.jsonl"'))
    code, doc, err = check_json(tmp_path)
    assert code == 4
    assert err.strip() == "Error: orders: path matches no file"
    src = one(doc)
    assert src["files"] == 0 and src["sampled"] == 0
    assert hints(src, "no_file") == [
        f"path 'data/*.jsonl' matches no file (relative to {tmp_path.resolve()}); "
        "the folder 'data' does not exist"
    ]
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "a.json", records(2))
    assert hints(one(check_json(tmp_path)[1]), "no_file") == [
        f"path 'data/*.jsonl' matches no file (relative to {tmp_path.resolve()}); "
        "the folder 'data' has 'a.json'"
    ]


def csv_source(extra: str = "") -> str:
    return (
        '\n[[sources]]\nname = "wh"\nkind = "file"\npath = "wh.csv"\nhop = "payment"\n'
        f'order_id = "order"\ntimestamp = "at"\ntimezone = "Europe/Berlin"\n{extra}'
    )


def test_a_date_format_that_needs_timestamp_format(tmp_path: Path) -> None:
    setup(tmp_path, csv_source())
    write_csv(
        tmp_path / "wh.csv",
        ["order", "at"],
        [["o-1", "31.12.2025 14:05"], ["o-2", "01.12.2025 09:30"]],
    )
    code, doc, _ = check_json(tmp_path)
    assert code == 4
    src = one(doc)
    assert src["reasons"][0]["reason"] == (
        "unparseable timestamp … (field 'at'; tried ISO-8601, epoch)"
    )
    (h,) = [h for h in src["hints"] if h["kind"] == "timestamp_format"]
    assert h["message"] == (
        "timestamps like '31.12.2025 14:05' (field 'at') are not ISO-8601 or epoch; "
        'set timestamp_format = "%d.%m.%Y %H:%M"'
    )
    assert h["suggestion"] == 'timestamp_format = "%d.%m.%Y %H:%M"'
    # with the format set, the source is clean
    setup(tmp_path, csv_source('timestamp_format = "%d.%m.%Y %H:%M"\n'))
    code, doc, _ = check_json(tmp_path)
    assert code == 0 and one(doc)["stored"] == 2 and one(doc)["hints"] == []


def test_a_date_format_ambiguous_between_day_and_month_first(tmp_path: Path) -> None:
    setup(tmp_path, csv_source())
    write_csv(
        tmp_path / "wh.csv",
        ["order", "at"],
        [["o-1", "03/04/2025 14:05"], ["o-2", "05/04/2025 09:30"]],
    )
    src = one(check_json(tmp_path)[1])
    (h,) = hints(src, "ambiguous_date")
    assert "read both day-first ('%d/%m/%Y %H:%M') and month-first ('%m/%d/%Y %H:%M')" in h
    # a configured format the sample cannot confirm
    setup(tmp_path, csv_source('timestamp_format = "%m/%d/%Y %H:%M"\n'))
    code, doc, _ = check_json(tmp_path)
    assert code == 0
    (h,) = hints(one(doc), "ambiguous_date")
    assert h == (
        "all 2 distinct timestamps read with timestamp_format '%m/%d/%Y %H:%M' also read with "
        "'%d/%m/%Y %H:%M' (no day above 12 in the sample): check that the source writes the "
        "month first"
    )


def test_a_where_that_takes_nothing_and_filter_reasons(tmp_path: Path) -> None:
    setup(tmp_path, orders_source(where='{ Type = "order" }'))
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", records(4, type="order"))
    code, doc, _ = check_json(tmp_path)
    assert code == 0  # nothing taken, nothing quarantined
    src = one(doc)
    assert (src["filtered"], src["stored"]) == (4, 0)
    assert src["filter_reasons"][0]["reason"] == 'Type not in ("order")'
    assert src["filter_reasons"][0]["field"] == "Type"
    assert hints(src, "missing_field") == [
        "where path 'Type' is in none of the 4 records; the records have 'type'"
    ]
    setup(tmp_path, orders_source(where='{ type = "order" }'))
    write_jsonl(tmp_path / "in" / "a.jsonl", records(3, type="order") + records(2, type="ping"))
    src = one(check_json(tmp_path)[1])
    assert (src["filtered"], src["stored"]) == (2, 3)
    assert src["filter_reasons"][0]["count"] == 2


def test_hop_values_close_to_declared_hops(tmp_path: Path) -> None:
    setup(tmp_path, orders_source())
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", records(4, stage="Checkout"))
    src = one(check_json(tmp_path)[1])
    assert hints(src, "unknown_hop") == [
        "4 record(s) have hop 'Checkout' (field 'stage'), not a declared hop; map it: "
        'hop_map = { "Checkout" = "checkout" }'
    ]


def test_otlp_sources_cannot_be_sampled_and_unknown_sources_exit_2(tmp_path: Path) -> None:
    setup(tmp_path, '\n[[sources]]\nname = "spans"\nkind = "otlp"\n')
    code, doc, _ = check_json(tmp_path)
    assert code == 0
    src = one(doc)
    assert src["sampleable"] is False and "cannot be sampled" in src["note"]
    r = invoke(tmp_path, "check", "nope")
    assert r.exit_code == 2 and "unknown source 'nope'" in r.stderr


def test_example_records_never_reach_the_terminal_raw(tmp_path: Path) -> None:
    setup(tmp_path, orders_source())
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(b'{"order": "\x1b[2J\xe2\x80\xaeevil"\n')
    r = invoke(tmp_path, "check")
    assert r.exit_code == 4
    assert "\x1b" not in r.stdout and "\u202e" not in r.stdout
    assert "\\x1b[2J\\u202eevil" in r.stdout


# -- helpers -----------------------------------------------------------------------------------


def test_close_fields_ignore_case_and_separators() -> None:
    keys = ["order.id", "customer.email", "data.order_id", "created_at", "ORDER-REF"]
    assert close_fields("orderId", keys)[0] == "order.id"
    assert "data.order_id" in close_fields("orderId", keys)
    assert close_fields("createdAt", keys) == ["created_at"]
    assert close_fields("order_ref", keys)[0] == "ORDER-REF"
    assert close_fields("zzz", keys) == []


def test_formats_and_reason_keys() -> None:
    assert "%d.%m.%Y %H:%M" in fitting_formats(["31.12.2026 14:05"])
    assert "%m.%d.%Y %H:%M" not in fitting_formats(["31.12.2026 14:05"])
    assert reason_key("unknown hop 'x' (field 'stage'; not declared)") == (
        "unknown hop … (field 'stage'; not declared)"
    )
    assert reason_key("malformed JSON: unexpected character: line 1 column 2 (char 1)") == (
        "malformed JSON"
    )


# -- Kafka: read-only --------------------------------------------------------------------------


@pytest.mark.kafka
def test_check_on_kafka_commits_nothing(kafka: dict[str, Any], tmp_path: Path) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient

    from tests.test_kafka import make_topic, produce

    bs = str(kafka["bootstrap"])
    topic = make_topic(bs, 3)
    produce(bs, topic, 40, bad_every=10)  # 4 malformed of 40
    group = f"g-check-{uuid.uuid4().hex[:8]}"
    (tmp_path / "ordertrail.toml").write_text(f"""
[pipeline]
name = "k"
[[hops]]
name = "payment"
[[sources]]
name = "payments"
kind = "kafka"
topic = "{topic}"
bootstrap_servers = "{bs}"
group_id = "{group}"
hop = "payment"
order_id = "orderId"
timestamp = "ts"
event_id = "id"
""")
    code, doc, err = check_json(tmp_path, "--sample", "25")
    assert code == 4, err
    src = one(doc)
    assert src["sampled"] == 25
    assert src["stored"] == 0 and src["quarantined"] == 25
    assert "the records have 'order.id'" in " ".join(hints(src, "missing_field"))
    assert {r["example"]["source_ref"].rsplit(":", 2)[0] for r in src["reasons"]} == {topic}
    # nothing committed: no such group exists, and it has no offsets
    admin = KafkaAdminClient(bootstrap_servers=bs)
    try:  # kafka-python 3.x: list_groups() -> dicts; 2.x: list_consumer_groups() -> tuples
        lister = getattr(admin, "list_groups", None) or admin.list_consumer_groups
        groups = {g["group_id"] if isinstance(g, dict) else g[0] for g in lister()}
    finally:
        admin.close()
    assert group not in groups
    c = KafkaConsumer(bootstrap_servers=bs, group_id=group, enable_auto_commit=False)
    try:
        parts = sorted(c.partitions_for_topic(topic) or ())
        assert len(parts) == 3
        for p in parts:
            assert c.committed(TopicPartition(topic, p)) is None
    finally:
        c.close(autocommit=False)
    # fixed, the whole topic samples clean (the malformed ones stay quarantined: 10%)
    cfg = (tmp_path / "ordertrail.toml").read_text().replace('"orderId"', '"order.id"')
    (tmp_path / "ordertrail.toml").write_text(cfg)
    code, doc, err = check_json(tmp_path)
    assert code == 0, err
    src = one(doc)
    assert (src["sampled"], src["stored"], src["quarantined"]) == (40, 36, 4)
