"""The file source end to end on SQLite and PostgreSQL: resumable, idempotent, nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from ordertrail.collectors import file_sources, ingest_file_source
from ordertrail.schemas.config import load_config
from ordertrail.store import Store
from tests.helpers import rec, write_csv, write_jsonl


def ingest_all(workdir: Path, url: str) -> dict[str, object]:
    cfg = load_config(workdir / "ordertrail.toml")
    with Store(url) as s:
        reps = [ingest_file_source(s, cfg, src, batch_size=7) for src in file_sources(cfg)]
    return {r.source: r for r in reps}


def test_ingest_twice_stores_once(workdir: Path, store_url: str) -> None:
    write_jsonl(workdir / "in" / "a.jsonl", [rec(i) for i in range(50)])
    write_jsonl(workdir / "in" / "b.jsonl.gz", [rec(i, "payment") for i in range(30)], gz=True)
    write_csv(
        workdir / "ship.csv",
        ["order", "at"],
        [[f"o-{i}", "2026-03-01T13:00:00+01:00"] for i in range(20)],
    )
    r1 = ingest_all(workdir, store_url)
    assert (r1["orders"].stored, r1["ship"].stored) == (80, 20)  # type: ignore[attr-defined]
    r2 = ingest_all(workdir, store_url)
    assert r2["orders"].records == 0 and r2["ship"].records == 0  # type: ignore[attr-defined]
    with Store(store_url) as s:
        assert s.count_events() == 100
        assert s.watermarks()["orders"] is not None
        [e] = [e for e in s.order_events("o-3") if e.hop == "shipping"]
        assert e.source_ref == "ship.csv:5"
        assert e.occurred_at == 1_772_366_400_000_000


def test_grown_file_resumes_from_checkpoint(workdir: Path, store_url: str) -> None:
    f = workdir / "in" / "a.jsonl"
    write_jsonl(f, [rec(i) for i in range(10)])
    ingest_all(workdir, store_url)
    write_jsonl(f, [rec(i) for i in range(10, 25)], mode="ab")
    r = ingest_all(workdir, store_url)
    assert (r["orders"].records, r["orders"].stored) == (15, 15)  # type: ignore[attr-defined]
    with Store(store_url) as s:
        assert s.count_events() == 25
        [e] = s.order_events("o-24")
        assert e.source_ref == "in/a.jsonl:25"


def test_replaced_file_is_read_again_without_duplicates(workdir: Path, sqlite_url: str) -> None:
    f = workdir / "in" / "a.jsonl"
    write_jsonl(f, [rec(i) for i in range(10)])
    ingest_all(workdir, sqlite_url)
    f.unlink()
    write_jsonl(f, [rec(i) for i in range(5)])  # rotated: a new, shorter file
    r = ingest_all(workdir, sqlite_url)
    assert (r["orders"].records, r["orders"].redelivered) == (5, 5)  # type: ignore[attr-defined]


def test_bad_records_go_to_quarantine_with_file_and_line(workdir: Path, store_url: str) -> None:
    lines = [
        orjson.dumps(rec(0)),
        b'{"order": {"id": "x"}, "ts": ',
        orjson.dumps(rec(2, order={"id": ""})),
        orjson.dumps(rec(3, ts="not a time")),
        orjson.dumps(rec(4, stage="teleport")),
        b"",
        orjson.dumps(rec(5)),
    ]
    write_jsonl(workdir / "in" / "a.jsonl", lines)
    write_csv(
        workdir / "ship.csv",
        ["order", "at"],
        [["o-1", "2026-03-01T13:00:00Z"], ["o-2"], ["", "1772366400"]],
    )
    r = ingest_all(workdir, store_url)
    assert r["orders"].stored == 2 and r["orders"].quarantined == 4  # type: ignore[attr-defined]
    assert r["ship"].stored == 1 and r["ship"].quarantined == 2  # type: ignore[attr-defined]
    with Store(store_url) as s:
        q = {
            (x["source_ref"], x["reason"].split(":")[0].split(" (")[0]) for x in s.quarantine_rows()
        }
    assert q == {
        ("in/a.jsonl:2", "malformed JSON"),
        ("in/a.jsonl:3", "empty order id"),
        ("in/a.jsonl:4", "unparseable timestamp 'not a time'"),
        ("in/a.jsonl:5", "unknown hop 'teleport'"),
        ("ship.csv:3", "CSV row has 1 fields, header has 2"),
        ("ship.csv:4", "empty order id"),
    }


def test_unfinished_last_line_waits_for_the_next_run(workdir: Path, sqlite_url: str) -> None:
    f = workdir / "in" / "a.jsonl"
    f.write_bytes(orjson.dumps(rec(0)) + b"\n" + orjson.dumps(rec(1))[:20])
    r = ingest_all(workdir, sqlite_url)
    assert (r["orders"].stored, r["orders"].quarantined, r["orders"].pending_lines) == (1, 0, 1)  # type: ignore[attr-defined]
    with f.open("ab") as fh:
        fh.write(orjson.dumps(rec(1))[20:] + b"\n")
    r = ingest_all(workdir, sqlite_url)
    assert (r["orders"].stored, r["orders"].quarantined) == (1, 0)  # type: ignore[attr-defined]


def test_csv_quoted_newlines_and_offsets(workdir: Path, sqlite_url: str) -> None:
    (workdir / "ship.csv").write_text(
        'order,at\n"o-1\nsecond line",2026-03-01T12:00:00Z\no-2,1772366400\n'
    )
    r = ingest_all(workdir, sqlite_url)
    assert r["ship"].stored == 2  # type: ignore[attr-defined]
    with Store(sqlite_url) as s:
        assert [e.source_ref for e in s.order_events("o-2")] == ["ship.csv:4"]
        assert len(s.order_events("o-1\nsecond line")) == 1


def _count(url: str) -> int:
    try:  # the killed ingest may be creating the store right now
        with Store(url, create=False) as s:
            return s.count_events()
    except Exception:
        return 0


def test_sigkill_mid_ingest_loses_and_duplicates_nothing(workdir: Path, store_url: str) -> None:
    n = 60_000
    bad_every = 997
    lines = [b'{"broken": ' if i % bad_every == 0 else orjson.dumps(rec(i)) for i in range(n)]
    write_jsonl(workdir / "in" / "big.jsonl", lines)
    n_bad = sum(1 for i in range(n) if i % bad_every == 0)
    cmd = [
        sys.executable,
        "-m",
        "ordertrail",
        "--db",
        store_url,
        "--config",
        str(workdir / "ordertrail.toml"),
        "ingest",
        "orders",
        "--batch-size",
        "500",
    ]
    kills = 0
    for attempt in range(3):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        target = (attempt + 1) * n // 5
        while time.monotonic() < deadline and p.poll() is None and _count(store_url) < target:
            time.sleep(0.02)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills >= 1, "ingest finished before it could be killed; make the file bigger"
    assert 0 < _count(store_url) < n
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with Store(store_url) as s:
        assert s.count_events() == n - n_bad
        assert s.count_quarantine() == n_bad
        assert s.count_orders() == n - n_bad


def test_no_matching_file_marks_the_source_complete_and_empty(
    workdir: Path, sqlite_url: str
) -> None:
    import time as _time

    before = _time.time_ns() // 1000
    r = ingest_all(workdir, sqlite_url)
    assert r["ship"].files == 0  # type: ignore[attr-defined]
    with Store(sqlite_url) as s:
        wm = s.watermarks()["ship"]
    assert wm is not None and wm >= before
