"""ingest and collect show quarantine reasons as check does: per source the counts, the top
reasons with their field path and one example reference, in the table and in JSON; the
max_quarantine rule for small runs; status counting a settled, quarantined last line as read;
CSV files with CR line endings."""

from __future__ import annotations

import gzip
import os
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ordertrail.collectors.runner import QUARANTINE_MIN_RECORDS
from ordertrail.store import Store
from tests import test_file_hardening as hardening
from tests.conftest import SMALL_CONFIG
from tests.helpers import invoke, rec, write_jsonl
from tests.test_file_hardening import clean_read, fuzz_source, read_one, stored

MISSING_TS = "missing timestamp (field 'ts')"
UNKNOWN_HOP = "unknown hop … (field 'stage'; not declared in the pipeline — map it with hop_map)"


def settle(p: Path) -> None:
    """Make a file look finished: not modified for an hour."""
    t = time.time() - 3600
    os.utime(p, (t, t))


def flat(text: str) -> str:
    """Output with the console's line wrapping undone."""
    return " ".join(text.split())


def ingest(root: Path, url: str, *args: str) -> Any:
    return invoke(root, "--db", url, "ingest", *args)


def ingest_json(root: Path, url: str, *args: str) -> tuple[int, dict[str, Any]]:
    r = ingest(root, url, *args, "--format", "json")
    [src] = orjson.loads(r.stdout)["sources"]
    return r.exit_code, src


def no_ts(i: int, **kw: Any) -> dict[str, Any]:
    r = rec(i, **kw)
    del r["ts"]
    return r


def mixed(root: Path) -> None:
    """11 lines, 4 quarantined: 2 without a time, 1 unknown hop, 1 malformed JSON."""
    lines: list[Any] = [rec(i) for i in range(10)]
    lines[2], lines[5] = no_ts(2), no_ts(5)
    lines[7] = rec(7, stage="teleport")
    lines.insert(9, b'{"id": "x", "order": ')
    write_jsonl(root / "in" / "a.jsonl", lines)


# -- ingest: reasons in JSON and in the table ----------------------------------------------------


def test_ingest_json_and_table_show_reasons_with_field_paths(workdir: Path, store_url: str) -> None:
    mixed(workdir)
    code, src = ingest_json(workdir, store_url, "orders")
    assert code == 0
    assert (src["records"], src["stored"], src["quarantined"], src["rejected"]) == (11, 7, 4, 4)
    assert src["quarantine_share"] == round(4 / 11, 4)
    assert src["quarantine_judged_on"] == 11  # a first run: nothing before it
    assert (src["max_quarantine"], src["over_max_quarantine"]) == (0.5, False)
    assert src["other_reasons"] == 0
    reasons = src["reasons"]
    assert [(r["reason"], r["count"], r["field"]) for r in reasons] == [
        (MISSING_TS, 2, "ts"),
        ("malformed JSON", 1, None),
        (UNKNOWN_HOP, 1, "stage"),
    ]
    # one example each: where it is and its full reason — never the raw record
    assert reasons[0]["example"] == {"source_ref": "in/a.jsonl:3", "reason": MISSING_TS}
    assert reasons[1]["example"]["source_ref"] == "in/a.jsonl:10"
    assert reasons[1]["example"]["reason"].startswith("malformed JSON: ")
    assert reasons[2]["example"] == {
        "source_ref": "in/a.jsonl:8",
        "reason": "unknown hop 'teleport' (field 'stage'; not declared in the pipeline — map it "
        "with hop_map)",
    }
    # the table: read again from the start, the same records go to quarantine for the same reasons
    r = ingest(workdir, store_url, "orders", "--from-start")
    assert r.exit_code == 0, r.stderr
    out = flat(r.stdout)
    # (11 records again: judged with the run before, as the source's last 20 records)
    assert (
        "orders: 4 of 11 record(s) went to quarantine: 36% of its last 20 (max_quarantine 50%)"
        in out
    )
    assert f"orders: quarantined 2 × {MISSING_TS}, e.g. in/a.jsonl:3" in out
    assert "orders: quarantined 1 × malformed JSON, e.g. in/a.jsonl:10" in out
    assert f"orders: quarantined 1 × {UNKNOWN_HOP}, e.g. in/a.jsonl:8" in out
    assert out.index(MISSING_TS) < out.index("malformed JSON") < out.index("unknown hop")


def test_ingest_reasons_are_the_reasons_check_shows(workdir: Path, sqlite_url: str) -> None:
    mixed(workdir)
    checked = orjson.loads(invoke(workdir, "check", "orders", "--format", "json").stdout)
    _, src = ingest_json(workdir, sqlite_url, "orders")

    def shape(rs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(r["reason"], r["count"], r["field"], r["example"]["source_ref"]) for r in rs]

    assert shape(src["reasons"]) == shape(checked["sources"][0]["reasons"])
    assert src["quarantine_share"] == checked["sources"][0]["quarantine_share"]


def test_top_five_reasons_and_the_rest(workdir: Path, store_url: str) -> None:
    bad: list[Any] = [
        no_ts(1),
        rec(2, stage="teleport"),
        b'{"id": "x", ',
        b"[1, 2]",
        rec(5, stage=""),  # missing hop
        rec(6, ts="next tuesday"),  # unparseable timestamp
        {"id": "e7", "stage": "checkout", "ts": 1},  # no order id
    ]
    write_jsonl(workdir / "in" / "a.jsonl", [*bad, *(rec(i) for i in range(10, 43))])
    code, src = ingest_json(workdir, store_url, "orders")
    assert code == 0 and src["rejected"] == 7
    assert len(src["reasons"]) == 5 and src["other_reasons"] == 2
    assert sum(r["count"] for r in src["reasons"]) + src["other_reasons"] == src["rejected"]
    r = ingest(workdir, store_url, "orders", "--from-start")
    assert "orders: … and 2 more for other reasons (ordertrail quarantine list)" in flat(r.stdout)


def test_data_in_reasons_and_refs_is_shown_escaped(workdir: Path, store_url: str) -> None:
    name = "[bold]x\x1b]0;owned\x07.jsonl"  # a file name is data too
    hop = "[red]boom[/red]\x1b[2J"
    write_jsonl(workdir / "in" / name, [rec(1, stage=hop), no_ts(2)])
    r = ingest(workdir, store_url, "orders")
    assert r.exit_code == 4  # 2 of 2: every record is wrong
    for text in (r.stdout, r.stderr):
        assert "\x1b" not in text and "\x07" not in text
    out = flat(r.stdout)
    assert "e.g. in/[bold]x\\x1b]0;owned\\x07.jsonl:1" in out  # shown as text, escapes visible
    assert "boom" not in out  # the table keeps the reason, not the record's values
    assert "in/[bold]x\\x1b]0;owned\\x07.jsonl:" in r.stderr
    _, src = ingest_json(workdir, store_url, "orders", "--from-start")
    hop_reason = next(x for x in src["reasons"] if x["field"] == "stage")
    assert hop_reason["example"]["reason"].startswith(f"unknown hop {hop!r}")  # JSON: exact


# -- max_quarantine ------------------------------------------------------------------------------


def wrong_order_path(root: Path) -> None:
    (root / "ordertrail.toml").write_text(
        SMALL_CONFIG.replace('order_id = "order.id"', 'order_id = "orderId"', 1)
    )


NO_ORDER = "missing order id (field 'orderId')"


def test_a_wrong_order_id_path_on_a_small_file_exits_4_naming_the_reason(
    workdir: Path, store_url: str
) -> None:
    wrong_order_path(workdir)
    write_jsonl(workdir / "in" / "a.jsonl", [rec(i) for i in range(12)])
    r = ingest(workdir, store_url, "orders")
    assert r.exit_code == 4
    assert r.stderr.strip() == (
        f"Error: orders quarantined 100% of its records (max_quarantine 50%): {NO_ORDER}, "
        "e.g. in/a.jsonl:1"
    )
    assert f"orders: quarantined 12 × {NO_ORDER}, e.g. in/a.jsonl:1" in flat(r.stdout)
    assert "over max_quarantine 50%" in flat(r.stdout)


def test_a_lone_garbage_last_line_does_not_fail_a_source_with_a_history(
    workdir: Path, store_url: str
) -> None:
    f = workdir / "in" / "a.jsonl"
    write_jsonl(f, [rec(i) for i in range(30)])
    assert ingest(workdir, store_url, "orders").exit_code == 0
    with f.open("ab") as fh:
        fh.write(b"#garbage")  # torn, never completed
    settle(f)
    code, src = ingest_json(workdir, store_url, "orders")
    assert code == 0
    assert (src["records"], src["rejected"]) == (1, 1)
    # judged over the source's last 20 records: this one and 19 clean ones before it
    assert src["quarantine_judged_on"] == QUARANTINE_MIN_RECORDS
    assert src["quarantine_share"] == 0.05 and not src["over_max_quarantine"]
    assert src["reasons"][0]["reason"].startswith("unterminated last line")
    assert src["reasons"][0]["example"]["source_ref"] == "in/a.jsonl:31"


def test_a_first_run_whose_only_record_is_garbage_still_exits_4(
    workdir: Path, store_url: str
) -> None:
    f = workdir / "in" / "a.jsonl"
    f.write_bytes(b"garbage")
    settle(f)
    r = ingest(workdir, store_url, "orders")
    assert r.exit_code == 4  # nothing before it: every record the source has is wrong
    assert r.stderr.startswith("Error: orders quarantined 100% of its records")
    assert "e.g. in/a.jsonl:1" in r.stderr


def test_small_runs_of_a_broken_mapping_fail_once_they_are_the_recent_majority(
    workdir: Path, store_url: str
) -> None:
    f = workdir / "in" / "a.jsonl"
    write_jsonl(f, [rec(i) for i in range(100)])
    assert ingest(workdir, store_url, "orders").exit_code == 0
    wrong_order_path(workdir)  # a config change breaks the mapping; 5 new records per run
    shares = []
    for run in range(3):
        write_jsonl(f, [rec(i) for i in range(100 + 5 * run, 105 + 5 * run)], mode="ab")
        code, src = ingest_json(workdir, store_url, "orders")
        shares.append((code, src["quarantine_share"], src["quarantine_judged_on"]))
    # the last 20 records: 5 bad + 15 of the window before, pro rata
    assert shares == [(0, 0.25, 20), (0, 0.4375, 20), (4, 0.5781, 20)]
    r = ingest(workdir, store_url, "orders")  # nothing new: not judged again
    assert r.exit_code == 0


def test_a_run_of_20_records_or_more_is_judged_on_its_own(workdir: Path, store_url: str) -> None:
    f = workdir / "in" / "a.jsonl"
    write_jsonl(f, [rec(i) for i in range(200)])
    assert ingest(workdir, store_url, "orders").exit_code == 0
    write_jsonl(f, [no_ts(i) if i < 216 else rec(i) for i in range(200, 230)], mode="ab")
    r = ingest(workdir, store_url, "orders")
    assert r.exit_code == 4
    assert r.stderr.strip() == (
        f"Error: orders quarantined 53% of its records (max_quarantine 50%): {MISSING_TS}, "
        "e.g. in/a.jsonl:201"
    )


# -- status --------------------------------------------------------------------------------------


def file_status(root: Path, url: str) -> dict[str, Any]:
    st = orjson.loads(invoke(root, "--db", url, "status", "--format", "json").stdout)
    return next(s for s in st["sources"] if s["name"] == "orders")


def test_status_counts_a_file_with_a_quarantined_last_line_as_read(
    workdir: Path, store_url: str
) -> None:
    f = workdir / "in" / "a.jsonl"
    write_jsonl(f, [rec(i) for i in range(10)])
    with f.open("ab") as fh:
        fh.write(b'{"id": "torn", "order": {"id": "o-')
    settle(f)
    assert ingest(workdir, store_url, "orders").exit_code == 0
    st = file_status(workdir, store_url)
    assert st["checkpoint"] == {"files": 1, "files_read": 1}
    assert (st["lag"], st["quarantined"]) == (0, 1)
    # completed later: its bytes are unread again until the next ingest reads them
    with f.open("ab") as fh:
        fh.write(b'99"}, "stage": "checkout", "ts": 1772366400000}\n')
    st = file_status(workdir, store_url)
    assert st["checkpoint"]["files_read"] == 0 and st["lag"] > 0
    assert ingest(workdir, store_url, "orders").exit_code == 0
    st = file_status(workdir, store_url)
    assert (st["checkpoint"]["files_read"], st["lag"]) == (1, 0)
    assert (st["events"], st["quarantined"]) == (11, 0)  # its quarantine row withdrawn


# -- CR line endings -----------------------------------------------------------------------------

CR_CONFIG = """
[pipeline]
name = "cr"
[[hops]]
name = "shipping"
[[sources]]
name = "ship"
kind = "file"
path = "ship/*.csv*"
hop = "shipping"
order_id = "order"
timestamp = "at"
"""


def cr_rows(start: int, n: int) -> bytes:
    return b"".join(f"o-{i},2026-03-01T12:{i:02d}:00Z\r".encode() for i in range(start, start + n))


def refs(url: str, source: str) -> list[str]:
    from sqlalchemy import select

    from ordertrail.store import tables

    e = tables.events.c
    with Store(url) as s, s.engine.connect() as conn:
        rows = conn.execute(select(e.source_ref).where(e.source == source)).all()
    return sorted((r[0] for r in rows), key=lambda x: int(x.rsplit(":", 1)[1]))


@pytest.fixture
def crdir(tmp_path: Path) -> Path:
    (tmp_path / "ship").mkdir()
    (tmp_path / "ordertrail.toml").write_text(CR_CONFIG)
    return tmp_path


def test_a_csv_file_with_cr_line_endings_is_read(crdir: Path, store_url: str) -> None:
    f = crdir / "ship" / "mac.csv"
    f.write_bytes(b"order,at\r" + cr_rows(0, 3))
    settle(f)
    code, src = ingest_json(crdir, store_url)
    assert code == 0
    assert (src["records"], src["stored"], src["quarantined"]) == (3, 3, 0)
    assert refs(store_url, "ship") == ["ship/mac.csv:2", "ship/mac.csv:3", "ship/mac.csv:4"]
    st = orjson.loads(invoke(crdir, "--db", store_url, "status", "--format", "json").stdout)
    assert st["sources"][0]["lag"] == 0
    # appended in the same style: read on from the checkpoint
    with f.open("ab") as fh:
        fh.write(cr_rows(3, 2))
    code, src = ingest_json(crdir, store_url)
    assert (code, src["records"], src["stored"]) == (0, 2, 2)
    assert refs(store_url, "ship")[-2:] == ["ship/mac.csv:5", "ship/mac.csv:6"]
    code, src = ingest_json(crdir, store_url, "--from-start")
    assert (src["records"], src["stored"], src["redelivered"]) == (5, 0, 5)


def test_a_gzip_csv_file_with_cr_line_endings_is_read(crdir: Path, store_url: str) -> None:
    f = crdir / "ship" / "mac.csv.gz"
    f.write_bytes(gzip.compress(b"order,at\r" + cr_rows(0, 4)))
    settle(f)
    code, src = ingest_json(crdir, store_url)
    assert (code, src["stored"], src["quarantined"]) == (0, 4, 0)


def test_a_cr_file_still_being_written_waits(crdir: Path, sqlite_url: str) -> None:
    f = crdir / "ship" / "mac.csv"
    f.write_bytes(b"order,at\r" + cr_rows(0, 3))  # just written: it may yet show an LF
    code, src = ingest_json(crdir, sqlite_url)
    assert (code, src["records"], src["pending_lines"]) == (0, 0, 1)
    code, src = ingest_json(crdir, sqlite_url)  # unchanged since: settled
    assert (code, src["stored"], src["quarantined"]) == (0, 3, 0)


def test_a_cr_file_that_gains_lf_line_ends_is_read_again(crdir: Path, sqlite_url: str) -> None:
    f = crdir / "ship" / "mac.csv"
    f.write_bytes(b"order,at\r" + cr_rows(0, 2))
    settle(f)
    assert ingest_json(crdir, sqlite_url)[1]["stored"] == 2
    with f.open("ab") as fh:
        fh.write(b"o-9,2026-03-01T13:00:00Z\n")
    _, src = ingest_json(crdir, sqlite_url)
    # read again from the start with LF: one line holding CRs, which says so
    assert src["records"] == 1 and src["reasons"][0]["example"]["reason"].startswith(
        "unreadable CSV header: CR line endings: the line holds 3 CR without LF"
    )
    with Store(sqlite_url) as s:
        assert s.count_events() == 2  # nothing stored twice, nothing lost


def test_a_bare_cr_inside_an_lf_csv_file_is_named(crdir: Path, store_url: str) -> None:
    f = crdir / "ship" / "a.csv"
    f.write_bytes(b"order,at\no-1,2026-03-01T12:00:00Z\no-2\r,2026-03-01T12:00:00Z\n")
    _, src = ingest_json(crdir, store_url)
    assert (src["stored"], src["quarantined"]) == (1, 1)
    [reason] = src["reasons"]
    assert reason["example"] == {
        "source_ref": "ship/a.csv:3",
        "reason": "CR line endings: the line holds 1 CR without LF (a CSV file is read with CR "
        "line endings only when it holds no LF at all)",
    }


def test_a_jsonl_file_with_cr_line_endings_says_so(workdir: Path, store_url: str) -> None:
    f = workdir / "in" / "mac.jsonl"
    f.write_bytes(b"".join(orjson.dumps(rec(i)) + b"\r" for i in range(3)))
    settle(f)
    r = ingest(workdir, store_url, "orders")
    assert r.exit_code == 4
    assert "orders: quarantined 1 × CR line endings, e.g. in/mac.jsonl:1" in flat(r.stdout)
    with Store(store_url) as s:
        [q] = s.quarantine_rows("orders")
    assert q["reason"].startswith(
        "CR line endings: the line holds 2 CR without LF (JSONL lines must end with LF or "
        "CRLF); unterminated last line"
    )


# -- collect -------------------------------------------------------------------------------------

OTLP_CONFIG = """
[[hops]]
name = "checkout"
[[sources]]
name = "spans"
kind = "otlp"
listen = "127.0.0.1:{port}"
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def span(i: int, hop: str) -> dict[str, Any]:
    return {
        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
        "spanId": f"{i + 1:016x}",
        "endTimeUnixNano": "1772366401000000000",
        "attributes": [
            {"key": "order.id", "value": {"stringValue": f"S-{i}"}},
            {"key": "order.hop", "value": {"stringValue": hop}},
        ],
    }


def post_when_listening(port: int, body: bytes) -> threading.Thread:
    def post() -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v1/traces", body, {"Content-Type": "application/json"}
                )
                urllib.request.urlopen(req, timeout=10).read()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    th = threading.Thread(target=post, daemon=True)
    th.start()
    return th


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_collect_shows_reasons_as_ingest_does(tmp_path: Path, store_url: str, fmt: str) -> None:
    port = free_port()
    (tmp_path / "ordertrail.toml").write_text(OTLP_CONFIG.format(port=port))
    spans = [span(0, "checkout"), span(1, "teleport"), span(2, "teleport"), span(3, "checkout")]
    body = orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})
    th = post_when_listening(port, body)
    r = invoke(tmp_path, "--db", store_url, "collect", "spans", "--max-messages", "4",
               "--idle-timeout", "60", "--format", fmt)  # fmt: skip
    th.join(30)
    assert r.exit_code == 0, r.stderr
    key = "unknown hop … (field 'order.hop'; not declared in the pipeline — map it with hop_map)"
    if fmt == "table":
        out = flat(r.stdout)
        assert "spans: 2 of 4 record(s) went to quarantine: 50% (max_quarantine 50%)" in out
        assert f"spans: quarantined 2 × {key}, e.g. otlp:4bf92f3577b34da6a3ce929d0e0e4736/" in out
        return
    [src] = orjson.loads(r.stdout)["sources"]
    assert (src["stored"], src["quarantined"], src["max_quarantine"]) == (2, 2, 0.5)
    [reason] = src["reasons"]
    assert (reason["reason"], reason["count"], reason["field"]) == (key, 2, "order.hop")
    assert reason["example"]["reason"].startswith("unknown hop 'teleport' (field 'order.hop'")
    assert reason["example"]["source_ref"].startswith("otlp:4bf92f3577b34da6a3ce929d0e0e4736/")


@pytest.mark.kafka
def test_kafka_collect_shows_reasons(
    kafka: dict[str, Any], tmp_path: Path, sqlite_url: str
) -> None:
    from tests.test_kafka import make_topic, produce, write_config

    bs = str(kafka["bootstrap"])
    topic = make_topic(bs, 1)
    good = produce(bs, topic, 12, bad_every=4)  # offsets 0, 4, 8 are malformed
    write_config(tmp_path, bs, topic)
    r = invoke(tmp_path, "--db", sqlite_url, "collect", "payments", "--max-messages", "12",
               "--format", "json")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    [src] = orjson.loads(r.stdout)["sources"]
    assert (src["stored"], src["quarantined"]) == (good, 3)
    [reason] = src["reasons"]
    assert (reason["reason"], reason["count"], reason["field"]) == ("malformed JSON", 3, None)
    assert reason["example"]["source_ref"] == f"{topic}:0:0"


# -- CR line endings, fuzzed: appended in pieces, settled or not, as one clean read -------------


fuzz_store = hardening.fuzz_store  # the fixture: one store, a source per example


@st.composite
def cr_csv(draw: Any) -> bytes:
    def line() -> bytes:
        kind = draw(st.sampled_from(["row", "row", "row", "short", "blank", "bytes"]))
        if kind == "row":
            return f"o-{draw(st.integers(0, 20))},2026-03-01T12:00:00Z,n".encode()
        if kind == "short":
            return b"o-1"
        if kind == "blank":
            return b""
        return (
            draw(st.binary(max_size=12)).replace(b"\n", b"").replace(b"\r", b"").replace(b'"', b"")
        )

    body = b"\r".join(line() for _ in range(draw(st.integers(1, 25))))
    return (
        b"order,ts,note\ro-0,2026-03-01T12:00:00Z,first\r"
        + body
        + draw(st.sampled_from([b"\r", b"", b"\r\r"]))
    )


@settings(
    max_examples=int(os.environ.get("ORDERTRAIL_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzz_cr_files_appended_in_pieces_end_as_a_clean_read(
    fuzz_store: tuple[Store, Path], data: Any
) -> None:
    """A CSV file with CR line endings, appended in random pieces (torn anywhere) and ingested
    between pieces, settled or not: the store ends as one clean read of the whole file."""
    store, d = fuzz_store
    content = data.draw(cr_csv())
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(content)), max_size=6))))
    cfg, src, path = fuzz_source(d, "csv")
    filtered = 0
    for i, cut in enumerate([*cuts, len(content)]):
        path.write_bytes(content[:cut])
        rep, _ = read_one(store, cfg, src, i == len(cuts) or data.draw(st.booleans()))
        filtered += rep.filtered
    ids, keys, want_filtered = clean_read(cfg, src, content, d)
    got_ids, got_keys, all_ids = stored(store, src.name)
    assert ids and got_ids == ids  # read with CR line endings: rows became events
    assert len(all_ids) == len(got_ids)
    assert got_keys == keys
    assert filtered == want_filtered
