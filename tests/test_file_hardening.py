"""The file source under hostile and broken input: nothing lost, nothing stored twice.

Truncated and replaced files, CSV framing (stray quotes, blank first lines, non-UTF-8, torn
lines, tabs), corrupt gzip, garbage last lines, unreadable files, ``--from-start`` and
``--from-start --replace``; then hypothesis fuzzing of the reader against a clean read of the
same bytes.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import os
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from ordertrail.collectors import file as filemod
from ordertrail.collectors import file_sources, ingest_file_source
from ordertrail.collectors.base import RawBatch, RawRecord
from ordertrail.collectors.file import FileSource, _scan_gzip
from ordertrail.collectors.mapping import Mapper
from ordertrail.collectors.runner import IngestReport, map_batch
from ordertrail.errors import ConfigError
from ordertrail.schemas.config import Config, load_config
from ordertrail.store import Store, tables
from ordertrail.store.writer import Checkpoint
from tests.conftest import SMALL_CONFIG
from tests.helpers import T0, invoke, rec, write_jsonl

OLD = time.time() - 3600  # an mtime long past: the file has settled


def cfg_of(workdir: Path) -> Config:
    return load_config(workdir / "ordertrail.toml")


def ingest(workdir: Path, url: str, name: str = "orders", **kw: Any) -> IngestReport:
    cfg = cfg_of(workdir)
    [src] = [s for s in file_sources(cfg) if s.name == name]
    with Store(url) as s:
        return ingest_file_source(s, cfg, src, batch_size=kw.pop("batch_size", 7), **kw)


def settle(path: Path) -> None:
    os.utime(path, (OLD, OLD))


def lines(recs: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in recs)


def event_ids(url: str, source: str | None = None) -> set[str]:
    c = tables.events.c
    q = select(c.event_id)
    if source:
        q = q.where(c.source == source)
    with Store(url) as s, s.engine.connect() as conn:
        return {r[0] for r in conn.execute(q)}


def orders(url: str) -> set[str]:
    with Store(url) as s, s.engine.connect() as conn:
        return {r[0] for r in conn.execute(select(tables.events.c.order_id))}


def quarantine(url: str) -> list[dict[str, Any]]:
    with Store(url) as s:
        return s.quarantine_rows()


def watermark(url: str, source: str = "orders") -> int | None:
    with Store(url) as s:
        return s.watermarks().get(source)


CSV_CONFIG = SMALL_CONFIG.replace('path = "ship.csv"', 'path = "ship*.csv*"')


@pytest.fixture
def csvdir(workdir: Path) -> Path:
    (workdir / "ordertrail.toml").write_text(CSV_CONFIG)
    return workdir


def csv_rows(n: int, start: int = 0) -> bytes:
    return b"".join(f"o-{i},2026-03-01T12:00:{i % 60:02d}Z\n".encode() for i in range(start, n))


# -- 1. truncated and replaced files ----------------------------------------------------------


def test_truncated_in_place_and_refilled_is_read_from_the_start(
    workdir: Path, store_url: str
) -> None:
    f = workdir / "in" / "a.jsonl"
    f.write_bytes(lines([rec(i) for i in range(10)]))
    ino = f.stat().st_ino
    assert ingest(workdir, store_url).stored == 10
    # truncated in place and refilled with more (longer) records: the size passes the old
    # offset and the inode is the same — only the fingerprint tells
    with f.open("r+b") as fh:
        fh.truncate(0)
        fh.write(lines([rec(i, "payment", pad="x" * 20) for i in range(100, 112)]))
    assert f.stat().st_ino == ino and f.stat().st_size > 10 * 80
    r = ingest(workdir, store_url)
    assert (r.records, r.stored) == (12, 12)
    assert {f"o-{i}" for i in range(100, 112)} <= orders(store_url)


def test_replaced_file_with_the_same_first_bytes_but_other_bytes_before_the_offset(
    workdir: Path, sqlite_url: str
) -> None:
    f = workdir / "in" / "a.jsonl"
    head = lines([rec(i, pad="h" * 100) for i in range(60)])  # > 4 KiB of identical start
    f.write_bytes(head + lines([rec(i) for i in range(60, 100)]))
    ingest(workdir, sqlite_url)
    f.unlink()
    f.write_bytes(head + lines([rec(i, "payment") for i in range(60, 100)]))  # same length
    r = ingest(workdir, sqlite_url)
    assert (r.records, r.redelivered, r.stored) == (100, 60, 40)


def test_a_new_copy_is_read_again(workdir: Path, sqlite_url: str) -> None:
    f = workdir / "in" / "a.jsonl"
    body = lines([rec(i) for i in range(50)])
    f.write_bytes(body)
    ingest(workdir, sqlite_url)
    tmp = workdir / "in" / "a.tmp"
    tmp.write_bytes(body + lines([rec(i) for i in range(50, 55)]))
    os.replace(tmp, f)  # an editor's or rsync's save: a new inode, the same bytes and more
    r = ingest(workdir, sqlite_url)
    assert (r.records, r.stored, r.redelivered) == (55, 5, 50)


def test_a_change_between_the_fingerprint_windows_is_not_seen(
    workdir: Path, sqlite_url: str
) -> None:
    """The decision documented in the module: files are appended to, not rewritten in the
    middle; --from-start reads such a file again."""
    f = workdir / "in" / "a.jsonl"
    recs = [rec(i, pad="p" * 100) for i in range(200)]
    f.write_bytes(lines(recs))
    ingest(workdir, sqlite_url)
    recs[100] = rec(100, "payment", pad="q" * 102)  # the same length: nothing moves
    f.write_bytes(lines(recs))
    assert ingest(workdir, sqlite_url).records == 0
    r = ingest(workdir, sqlite_url, from_start=True)
    assert (r.records, r.stored) == (200, 1)


def test_gzip_replaced_is_read_again_and_grown_gzip_resumes(workdir: Path, sqlite_url: str) -> None:
    f = workdir / "in" / "a.jsonl.gz"
    write_jsonl(f, [rec(i) for i in range(20)], gz=True)
    assert ingest(workdir, sqlite_url).stored == 20
    assert ingest(workdir, sqlite_url).records == 0  # complete once read
    write_jsonl(f, [rec(i) for i in range(20, 30)], gz=True, mode="ab")  # a second member
    r = ingest(workdir, sqlite_url)
    assert (r.records, r.stored) == (10, 10)  # the verified prefix is the same: resumed
    write_jsonl(f, [rec(i, "payment") for i in range(5)], gz=True)  # another file altogether
    r = ingest(workdir, sqlite_url)
    assert (r.records, r.stored) == (5, 5)


# -- 2. CSV framing ---------------------------------------------------------------------------


def test_a_stray_quote_sends_one_line_to_quarantine_not_the_rows_after_it(
    csvdir: Path, store_url: str
) -> None:
    rows = csv_rows(300).splitlines(keepends=True)
    rows[3] = b'o-3,"2026-03-01T12:00:03Z\n'  # a quote that never closes
    (csvdir / "ship.csv").write_bytes(b"order,at\n" + b"".join(rows))
    r = ingest(csvdir, store_url, "ship")
    assert (r.stored, r.quarantined) == (299, 1)
    [q] = quarantine(store_url)
    assert q["source_ref"] == "ship.csv:5" and q["raw"] == 'o-3,"2026-03-01T12:00:03Z'
    assert "does not close within 100 lines" in q["reason"]


def test_a_stray_quote_near_the_end_waits_until_the_file_settles(
    csvdir: Path, sqlite_url: str
) -> None:
    rows = csv_rows(40).splitlines(keepends=True)
    rows[30] = b'o-30,"2026-03-01T12:00:30Z\n'
    (csvdir / "ship.csv").write_bytes(b"order,at\n" + b"".join(rows))
    r = ingest(csvdir, sqlite_url, "ship")  # the quoted field may still be being written
    assert (r.stored, r.quarantined, r.pending_lines) == (30, 0, 10)
    r = ingest(csvdir, sqlite_url, "ship")  # it stopped growing: only that line is bad
    assert (r.stored, r.quarantined, r.pending_lines) == (9, 1, 0)
    assert "not closed by the end of the file" in quarantine(sqlite_url)[0]["reason"]


def test_a_stray_quote_that_closes_later_does_not_swallow_rows(
    csvdir: Path, sqlite_url: str
) -> None:
    (csvdir / "ordertrail.toml").write_text(
        CSV_CONFIG.replace('timestamp = "at"', 'timestamp = "at"\nattributes = ["note"]')
    )
    body = (
        b"order,at,note\n"
        b"o-1,2026-03-01T12:00:00Z,fine\n"
        b'o-2,2026-03-01T12:00:00Z,"unclosed note\n'
        b"o-3,2026-03-01T12:00:00Z,fine\n"
        b"o-4,2026-03-01T12:00:00Z,fine\n"
        b'o-5,2026-03-01T12:00:00Z,a 12"\n'  # closes the stray quote: 3 fields in all
        b"o-6,2026-03-01T12:00:00Z,fine\n"
    )
    (csvdir / "ship.csv").write_bytes(body)
    r = ingest(csvdir, sqlite_url, "ship")
    assert (r.stored, r.quarantined) == (5, 1)
    assert orders(sqlite_url) == {"o-1", "o-3", "o-4", "o-5", "o-6"}
    with Store(sqlite_url) as s:
        assert s.order_events("o-5")[0].attributes == {"note": 'a 12"'}


def test_multi_line_records_are_kept_whole_and_bounded(csvdir: Path, sqlite_url: str) -> None:
    long = "\n".join(f"line {i}" for i in range(filemod.CSV_MAX_RECORD_LINES + 5))
    body = (
        'order,at\r\n"o-1\r\nsecond line",2026-03-01T12:00:00Z\r\n'
        f'"{long}",2026-03-01T12:00:00Z\r\n'
        "o-2,2026-03-01T12:00:00Z\r\n"
    ).encode()
    (csvdir / "ship.csv").write_bytes(body)
    r = ingest(csvdir, sqlite_url, "ship", batch_size=1000)
    assert orders(sqlite_url) >= {"o-1\r\nsecond line", "o-2"}
    reasons = [q["reason"] for q in quarantine(sqlite_url)]
    assert f"does not close within {filemod.CSV_MAX_RECORD_LINES} lines" in reasons[0]
    # the over-long record's first line went to quarantine; its other lines were framed again
    # (each a one-field row, quarantined): every physical line is accounted for
    # header + o-1's two lines + the long record's lines + o-2, less the header and o-1's
    # second line: one record per line
    assert r.records == body.count(b"\n") - 2


def test_a_field_beyond_the_field_limit_is_quarantined(csvdir: Path, sqlite_url: str) -> None:
    big = "x" * 200_000
    (csvdir / "ship.csv").write_text(
        f'order,at\n{big},2026-03-01T12:00:00Z\n"{big}",2026-03-01T12:00:00Z\no-1,1772366400\n'
    )
    r = ingest(csvdir, sqlite_url, "ship")
    assert (r.stored, r.quarantined) == (1, 2)
    assert all("field limit" in q["reason"] for q in quarantine(sqlite_url))


def test_blank_first_lines_and_blank_rows_are_counted(csvdir: Path, sqlite_url: str) -> None:
    (csvdir / "ship.csv").write_bytes(b"\n  \r\norder,at\n" + csv_rows(5) + b"\n" + csv_rows(8, 5))
    r = ingest(csvdir, sqlite_url, "ship")
    assert (r.stored, r.quarantined, r.blank_lines) == (8, 0, 3)


def test_a_header_that_is_not_utf8_quarantines_every_line(csvdir: Path, store_url: str) -> None:
    (csvdir / "ship.csv").write_bytes(b"ord\xe9r,at\n" + csv_rows(6))
    r = ingest(csvdir, store_url, "ship")
    assert (r.records, r.stored, r.quarantined) == (7, 0, 7)
    qs = quarantine(store_url)
    assert qs[0]["reason"].startswith("unreadable CSV header: invalid UTF-8")
    assert all(q["reason"].startswith("no usable CSV header") for q in qs[1:])
    # appended rows keep being quarantined, once each
    with (csvdir / "ship.csv").open("ab") as fh:
        fh.write(csv_rows(8, 6))
    r = ingest(csvdir, store_url, "ship")
    assert (r.records, r.quarantined) == (2, 2)


def test_invalid_utf8_is_quarantined_never_replaced(csvdir: Path, store_url: str) -> None:
    # two different ids that U+FFFD would merge into one order "o-\ufffd"
    (csvdir / "ship.csv").write_bytes(
        b"order,at\no-\xff,2026-03-01T12:00:00Z\no-\xfe,2026-03-01T12:00:00Z\n" + csv_rows(3)
    )
    r = ingest(csvdir, store_url, "ship")
    assert (r.stored, r.quarantined) == (3, 2)
    assert not any("\ufffd" in o for o in orders(store_url))
    assert {q["source_ref"] for q in quarantine(store_url)} == {"ship.csv:2", "ship.csv:3"}
    assert all("invalid UTF-8" in q["reason"] for q in quarantine(store_url))


def test_a_torn_last_line_is_not_taken_though_its_field_count_matches(
    csvdir: Path, store_url: str
) -> None:
    f = csvdir / "ship.csv"
    f.write_bytes(b"order,at\no-1,2026-03-01T12:00:00Z\no-2,2026-03-01T12:0")
    r = ingest(csvdir, store_url, "ship")
    assert (r.stored, r.quarantined, r.pending_lines) == (1, 0, 1)
    with f.open("ab") as fh:
        fh.write(b"0:05Z\n")
    r = ingest(csvdir, store_url, "ship")
    assert (r.stored, r.quarantined) == (1, 0)
    with Store(store_url) as s:
        assert s.order_events("o-2")[0].occurred_at == T0 + 5_000_000


@pytest.mark.parametrize(
    ("toml_value", "d"),
    [('"\\t"', "\t"), ("'\t'", "\t"), ("'\\t'", "\t"), ('";"', ";"), ('"|"', "|"), ('" "', " ")],
)
def test_any_single_character_delimiter(
    csvdir: Path, sqlite_url: str, toml_value: str, d: str
) -> None:
    (csvdir / "ordertrail.toml").write_text(
        CSV_CONFIG.replace('timestamp = "at"', f'timestamp = "at"\ndelimiter = {toml_value}')
    )
    (csvdir / "ship.csv").write_text(
        f'order{d}at\no-1{d}2026-03-01T12:00:00Z\n"o{d}2"{d}2026-03-01T12:00:00Z\n'
    )
    assert cfg_of(csvdir).source("ship").delimiter == d
    r = ingest(csvdir, sqlite_url, "ship")
    assert r.stored == 2 and orders(sqlite_url) == {"o-1", f"o{d}2"}


@pytest.mark.parametrize("bad", ['""', '"\\""', '"ab"', '"\\n"', "1"])
def test_a_delimiter_that_cannot_work_is_a_config_error(csvdir: Path, bad: str) -> None:
    (csvdir / "ordertrail.toml").write_text(
        CSV_CONFIG.replace('timestamp = "at"', f'timestamp = "at"\ndelimiter = {bad}')
    )
    with pytest.raises(ConfigError, match="delimiter: must be one character other than"):
        cfg_of(csvdir)


# -- 3. corrupt gzip --------------------------------------------------------------------------


def gz_member(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def corrupt_crc(member: bytes) -> bytes:
    crc = bytearray(member)
    crc[-8] ^= 0xFF  # the trailer's CRC-32: every byte decodes, the check fails at the end
    return bytes(crc)


def test_corrupt_gzip_keeps_verified_members_and_quarantines_the_rest(
    workdir: Path, store_url: str
) -> None:
    good = gz_member(lines([rec(i) for i in range(10)]))
    bad = corrupt_crc(gz_member(lines([rec(i) for i in range(10, 500)])))
    after = gz_member(lines([rec(i) for i in range(500, 510)]))
    (workdir / "in" / "a.jsonl.gz").write_bytes(good + bad + after)
    r = ingest(workdir, store_url)
    # not one record of the member that failed its check, nor of any member after it
    assert (r.stored, r.quarantined) == (10, 1)
    assert orders(store_url) == {f"o-{i}" for i in range(10)}
    [q] = quarantine(store_url)
    assert q["source_ref"] == "in/a.jsonl.gz:11" and q["raw"] == ""
    assert "corrupt gzip file: CRC check failed (gzip member 2" in q["reason"]
    assert watermark(store_url) is not None  # read to its (corrupt) end
    r = ingest(workdir, store_url)
    assert r.records == 0  # nothing twice


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: m[:40] + bytes([m[40] ^ 0x55]) + m[41:],  # a stream error in the deflate data
        corrupt_crc,
        lambda m: m + b"garbage after the member",
        lambda m: b"not gzip at all" + m,
    ],
)
def test_every_kind_of_gzip_damage(workdir: Path, sqlite_url: str, damage: Any) -> None:
    m = gz_member(lines([rec(i, pad="z" * 50) for i in range(200)]))
    (workdir / "in" / "a.jsonl.gz").write_bytes(damage(m))
    r = ingest(workdir, sqlite_url)
    assert r.quarantined == 1
    assert "corrupt gzip file" in quarantine(sqlite_url)[0]["reason"]
    if damage(m).startswith(m):  # garbage after a complete member: the member is good
        assert r.stored == 200
    else:
        assert r.stored == 0


def test_a_line_cut_by_a_member_boundary_before_corruption_goes_with_the_rest(
    workdir: Path, sqlite_url: str
) -> None:
    text = lines([rec(i) for i in range(6)])
    cut = text.index(b"\n", len(text) // 2) - 5  # inside line 4
    data = gz_member(text[:cut]) + corrupt_crc(gz_member(text[cut:]))
    (workdir / "in" / "a.jsonl.gz").write_bytes(data)
    r = ingest(workdir, sqlite_url)
    n = text[:cut].count(b"\n")
    assert (r.stored, r.quarantined) == (n, 1)
    assert quarantine(sqlite_url)[0]["source_ref"] == f"in/a.jsonl.gz:{n + 1}"


def test_csv_gzip_with_a_corrupt_member(csvdir: Path, sqlite_url: str) -> None:
    data = gz_member(b"order,at\n" + csv_rows(5)) + corrupt_crc(gz_member(csv_rows(9, 5)))
    (csvdir / "ship.csv.gz").write_bytes(data)
    r = ingest(csvdir, sqlite_url, "ship")
    assert (r.stored, r.quarantined) == (5, 1)
    assert quarantine(sqlite_url)[0]["source_ref"] == "ship.csv.gz:7"


def test_truncated_gzip_waits_then_is_quarantined_then_resumes_when_complete(
    workdir: Path, sqlite_url: str
) -> None:
    f = workdir / "in" / "a.jsonl.gz"
    m1 = gz_member(lines([rec(i) for i in range(10)]))
    m2 = gz_member(lines([rec(i) for i in range(10, 20)]))
    f.write_bytes(m1 + m2[: len(m2) // 2])  # still being written
    r = ingest(workdir, sqlite_url)
    assert (r.stored, r.quarantined, r.pending_lines) == (10, 0, 1)
    assert watermark(sqlite_url) is None
    r = ingest(workdir, sqlite_url)  # unchanged since: it stopped growing
    assert (r.stored, r.quarantined) == (0, 1)
    assert "truncated" in quarantine(sqlite_url)[0]["reason"]
    assert watermark(sqlite_url) is not None
    f.write_bytes(m1 + m2)  # completed after all: the rest is read, its quarantine row goes
    r = ingest(workdir, sqlite_url)
    assert (r.records, r.stored, r.withdrawn) == (10, 10, 1)
    assert quarantine(sqlite_url) == []


def test_gzip_progress_counts_compressed_bytes(workdir: Path, sqlite_url: str) -> None:
    f = workdir / "in" / "a.jsonl.gz"
    write_jsonl(f, [rec(i, pad=os.urandom(150).hex()) for i in range(3000)], gz=True)
    cfg = cfg_of(workdir)
    src = cfg.source("orders")
    with Store(sqlite_url) as s:
        fsrc = FileSource(src, batch_size=100)
        total = fsrc.total_bytes(s.checkpoints("orders"))
        seen: list[int] = []
        ingest_file_source(s, cfg, src, on_progress=seen.append, fsrc=fsrc)
        assert total == f.stat().st_size
        assert sum(seen) == f.stat().st_size and len(seen) > 2
        assert FileSource(src).total_bytes(s.checkpoints("orders")) == 0


def test_gzip_verification_pass_memory_is_bounded(tmp_path: Path) -> None:
    """A gzip bomb (512 MiB of zeros in ~0.5 MiB) is verified in constant memory."""
    f = tmp_path / "bomb.gz"
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    with f.open("wb") as fh:
        chunk = bytes(1 << 20)
        for _ in range(512):
            fh.write(co.compress(chunk))
        fh.write(co.flush())
    tracemalloc.start()
    with f.open("rb") as fh:
        scan = _scan_gzip(fh, 0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert scan.verified == 512 << 20 and scan.error is None
    assert peak < 8 << 20


# -- 4. garbage last line ---------------------------------------------------------------------


def test_a_garbage_last_line_is_quarantined_once_the_file_stops_growing(
    workdir: Path, store_url: str
) -> None:
    f = workdir / "in" / "a.jsonl"
    partial = orjson.dumps(rec(9))[:-8]
    f.write_bytes(lines([rec(i) for i in range(3)]) + partial)
    r = ingest(workdir, store_url)
    assert (r.stored, r.quarantined, r.pending_lines) == (3, 0, 1)
    assert watermark(store_url) is None  # the file may still be being written
    r = ingest(workdir, store_url)  # no growth since the last ingest: it has settled
    assert (r.stored, r.quarantined, r.pending_lines) == (0, 1, 0)
    [q] = quarantine(store_url)
    assert q["source_ref"] == "in/a.jsonl:4" and q["reason"].startswith("unterminated last line")
    assert watermark(store_url) is not None
    r = ingest(workdir, store_url)  # nothing new: nothing counted again
    assert (r.records, r.quarantined, r.redelivered) == (0, 0, 0)
    with f.open("ab") as fh:  # the writer was only slow: the line is completed after all
        fh.write(orjson.dumps(rec(9))[-8:] + b"\n" + lines([rec(10)]))
    r = ingest(workdir, store_url)
    assert (r.stored, r.withdrawn) == (2, 1)
    assert quarantine(store_url) == []
    with Store(store_url) as s:
        assert [e.source_ref for e in s.order_events("o-10")] == ["in/a.jsonl:5"]


def test_a_garbage_last_line_of_an_old_file_is_quarantined_at_once(
    workdir: Path, sqlite_url: str
) -> None:
    f = workdir / "in" / "a.jsonl"
    f.write_bytes(lines([rec(0)]) + b"\x00\x01 not json")
    settle(f)
    r = ingest(workdir, sqlite_url)
    assert (r.stored, r.quarantined) == (1, 1)
    assert watermark(sqlite_url) is not None


def test_a_complete_json_last_line_without_newline_is_taken(workdir: Path, sqlite_url: str) -> None:
    f = workdir / "in" / "a.jsonl"
    f.write_bytes(lines([rec(0)]) + orjson.dumps(rec(1)))
    assert ingest(workdir, sqlite_url).stored == 2
    with f.open("ab") as fh:
        fh.write(b"\n" + lines([rec(2)]))
    r = ingest(workdir, sqlite_url)
    assert (r.records, r.stored) == (1, 1)
    with Store(sqlite_url) as s:  # line numbers stay right after the newline arrives
        assert [e.source_ref for e in s.order_events("o-2")] == ["in/a.jsonl:3"]


def test_csv_unterminated_last_line_is_quarantined_when_settled(
    csvdir: Path, sqlite_url: str
) -> None:
    f = csvdir / "ship.csv"
    f.write_bytes(b"order,at\n" + csv_rows(2) + b"o-2,2026-03-01T12:00:02Z")
    settle(f)
    r = ingest(csvdir, sqlite_url, "ship")
    assert (r.stored, r.quarantined) == (2, 1)
    assert "possibly torn" in quarantine(sqlite_url)[0]["reason"]
    assert watermark(sqlite_url, "ship") is not None
    with f.open("ab") as fh:  # ending the file with its newline takes the row after all
        fh.write(b"\n")
    r = ingest(csvdir, sqlite_url, "ship")
    assert (r.stored, r.withdrawn) == (1, 1) and quarantine(sqlite_url) == []


def test_an_over_long_line_is_quarantined_without_being_held(
    workdir: Path, csvdir: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filemod, "READ_CHUNK", 256)
    monkeypatch.setattr(filemod, "MAX_LINE_BYTES", 1000)
    f = workdir / "in" / "a.jsonl"
    huge = orjson.dumps(rec(1, pad="x" * 5000))
    f.write_bytes(lines([rec(0)]) + huge + b"\n" + lines([rec(2)]) + huge)
    settle(f)
    r = ingest(workdir, sqlite_url)
    assert (r.stored, r.quarantined) == (2, 2)
    qs = quarantine(sqlite_url)
    assert [q["source_ref"] for q in qs] == ["in/a.jsonl:2", "in/a.jsonl:4"]
    assert "longer than the limit" in qs[0]["reason"]
    assert huge.decode().startswith(qs[0]["raw"]) and 0 < len(qs[0]["raw"]) <= 4096
    (csvdir / "ship.csv").write_bytes(b"order,at\n" + b"o-" + b"9" * 3000 + b",1\n" + csv_rows(2))
    r = ingest(csvdir, sqlite_url, "ship")
    assert (r.stored, r.quarantined) == (2, 1)


def test_a_checkpoint_from_before_fingerprints_resumes(workdir: Path, sqlite_url: str) -> None:
    """A store written by an older ordertrail: the checkpoint has inode and offset only."""
    f = workdir / "in" / "a.jsonl"
    first = lines([rec(i) for i in range(5)])
    f.write_bytes(first + lines([rec(i) for i in range(5, 8)]))
    old = {"offset": len(first), "line": 5, "size": len(first), "mtime": 0,
           "inode": f.stat().st_ino, "done": True, "filtered": 0}  # fmt: skip
    with Store(sqlite_url) as s:
        s.write_batch(checkpoints=[Checkpoint("orders", "in/a.jsonl", old)])
    r = ingest(workdir, sqlite_url)
    assert (r.records, r.stored) == (3, 3)
    with Store(sqlite_url) as s:
        assert "head" in s.checkpoints("orders")["in/a.jsonl"].position


# -- 5. unreadable files ----------------------------------------------------------------------


def test_dangling_symlink_is_skipped_and_the_rest_ingested(workdir: Path, store_url: str) -> None:
    write_jsonl(workdir / "in" / "a.jsonl", [rec(i) for i in range(5)])
    (workdir / "in" / "b.jsonl").symlink_to(workdir / "nowhere.jsonl")
    r = ingest(workdir, store_url)
    assert r.stored == 5
    assert r.unreadable == [("in/b.jsonl", "No such file or directory")]
    assert watermark(store_url) is None  # not known complete


def test_ingest_exits_3_naming_the_unreadable_file(workdir: Path, sqlite_url: str) -> None:
    write_jsonl(workdir / "in" / "a.jsonl", [rec(i) for i in range(5)])
    (workdir / "in" / "b.jsonl").symlink_to(workdir / "nowhere.jsonl")
    res = invoke(workdir, "--db", sqlite_url, "ingest", "orders", "--format", "json")
    assert res.exit_code == 3
    err = res.stderr.strip().splitlines()
    assert err[-1] == (
        "Error: source orders: could not read in/b.jsonl: No such file or directory; "
        "everything else was ingested"
    )
    out = orjson.loads(res.stdout)["sources"][0]
    assert out["stored"] == 5
    assert out["unreadable"] == [{"path": "in/b.jsonl", "reason": "No such file or directory"}]


def test_a_file_that_vanishes_between_glob_and_open(
    workdir: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_jsonl(workdir / "in" / "a.jsonl", [rec(i) for i in range(5)])
    real = FileSource.paths
    monkeypatch.setattr(FileSource, "paths", lambda self: [*real(self), "in/gone.jsonl"])
    r = ingest(workdir, sqlite_url)
    assert r.stored == 5 and [p for p, _ in r.unreadable] == ["in/gone.jsonl"]


def test_directories_and_fifos(workdir: Path, sqlite_url: str) -> None:
    write_jsonl(workdir / "in" / "a.jsonl", [rec(i) for i in range(5)])
    (workdir / "in" / "dir.jsonl").mkdir()  # a glob may match folders: skipped quietly
    os.mkfifo(workdir / "in" / "pipe.jsonl")  # never opened for reading: no hang
    r = ingest(workdir, sqlite_url)
    assert r.stored == 5
    assert r.unreadable == [("in/pipe.jsonl", "not a regular file")]


def test_a_read_error_mid_file_keeps_what_was_stored(
    workdir: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = workdir / "in" / "a.jsonl"
    f.write_bytes(lines([rec(i) for i in range(400)]))
    monkeypatch.setattr(filemod, "READ_CHUNK", 4096)
    real = filemod._PlainStream.read
    calls = itertools.count()

    def flaky(self: Any, n: int) -> bytes:
        if next(calls) == 5:
            raise OSError(5, "Input/output error")
        return real(self, n)

    monkeypatch.setattr(filemod._PlainStream, "read", flaky)
    r = ingest(workdir, sqlite_url)
    assert r.unreadable == [("in/a.jsonl", "Input/output error")]
    assert 0 < r.stored < 400
    monkeypatch.setattr(filemod._PlainStream, "read", real)
    r2 = ingest(workdir, sqlite_url)
    assert r.stored + r2.stored == 400 and r2.redelivered == 0


def test_permission_denied(workdir: Path, sqlite_url: str) -> None:
    """chmod 000 for real. Tests run as root, whom file modes do not stop: the command then
    runs without the capabilities that override them (setpriv)."""
    import shutil

    write_jsonl(workdir / "in" / "a.jsonl", [rec(i) for i in range(5)])
    write_jsonl(workdir / "in" / "b.jsonl", [rec(i, "payment") for i in range(5)])
    (workdir / "in" / "b.jsonl").chmod(0)
    cmd = [sys.executable, "-m", "ordertrail", "--db", sqlite_url, "ingest"]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if not setpriv:
            pytest.skip("running as root without setpriv: chmod 000 cannot be enforced")
        caps = "-dac_override,-dac_read_search"
        cmd = [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}", *cmd]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "Error: source orders: could not read in/b.jsonl: Permission denied; "
        "everything else was ingested"
    )
    assert "WARNING" in proc.stderr and "Traceback" not in proc.stderr
    with Store(sqlite_url) as s:
        assert s.count_events() == 5
        assert s.watermarks().get("orders") is None


# -- 6. --from-start and --from-start --replace -----------------------------------------------


def test_from_start_stores_nothing_twice_and_fixed_records_leave_quarantine(
    workdir: Path, store_url: str
) -> None:
    write_jsonl(workdir / "in" / "a.jsonl", [rec(i) for i in range(30)])
    toml = workdir / "ordertrail.toml"
    toml.write_text(SMALL_CONFIG.replace('timestamp = "ts"', 'timestamp = "time"'))  # wrong
    r = ingest(workdir, store_url)
    assert (r.stored, r.quarantined) == (0, 30)
    toml.write_text(SMALL_CONFIG)  # fixed
    assert ingest(workdir, store_url).records == 0  # the checkpoint is at the end
    r = ingest(workdir, store_url, from_start=True)
    assert (r.records, r.stored, r.withdrawn) == (30, 30, 30)
    assert quarantine(store_url) == []
    r = ingest(workdir, store_url, from_start=True)
    assert (r.records, r.stored, r.redelivered, r.withdrawn) == (30, 0, 30, 0)
    with Store(store_url) as s:
        assert s.count_events() == 30


def snapshot(url: str) -> dict[str, Any]:
    """What a store holds, without ingest times and sequence numbers."""
    e = tables.events.c
    with Store(url) as s, s.engine.connect() as conn:
        events = sorted(
            tuple(r)
            for r in conn.execute(
                select(e.source, e.event_id, e.order_id, e.hop, e.phase, e.occurred_at,
                       e.source_ref, e.attributes, e.objects)
            )
        )  # fmt: skip
        links = sorted(tuple(r) for r in conn.execute(select(tables.links)))
        eo = sorted(tuple(r) for r in conn.execute(select(tables.event_objects)))
        q = sorted(
            (r["source"], r["source_ref"], r["reason"], r["raw"]) for r in s.quarantine_rows()
        )
        cps = {
            k: {x: v for x, v in cp.position.items() if x in ("filtered", "offset", "done")}
            for k, cp in s.checkpoints("orders").items()
            if k
        }
    return {"events": events, "links": links, "event_objects": eo, "quarantine": q, "cps": cps}


REPLACE_OLD = SMALL_CONFIG.replace(
    '[[hops]]\nname = "checkout"',
    '[[objects]]\nname = "item"\n\n[[hops]]\nname = "checkout"',
).replace(
    'attributes = ["amount", "customer.name"]',
    'attributes = ["amount"]\nobjects = { item = "sku" }',
)
REPLACE_NEW = (
    REPLACE_OLD.replace('objects = { item = "sku" }', 'objects = { item = "line.sku" }')
    .replace('attributes = ["amount"]', 'attributes = ["amount", "note"]')
    .replace('name = "orders"', 'name = "orders"\nwhere = { keep = true }')
)


def replace_records(n: int) -> list[dict[str, Any]]:
    return [
        rec(i, "checkout" if i % 3 else "payment", sku=f"S-{i % 7}", line={"sku": f"L-{i % 5}"},
            note=f"n{i}", keep=i % 4 != 0)
        for i in range(n)
    ]  # fmt: skip


def test_replace_gives_what_a_clean_ingest_with_the_new_mapping_gives(
    workdir: Path, store_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    write_jsonl(workdir / "in" / "a.jsonl", replace_records(40))
    write_jsonl(workdir / "in" / "b.jsonl.gz", replace_records(60)[40:], gz=True)
    toml = workdir / "ordertrail.toml"
    toml.write_text(REPLACE_OLD)
    assert ingest(workdir, store_url).stored == 60
    toml.write_text(REPLACE_NEW)
    r = ingest(workdir, store_url, from_start=True)
    assert r.stored == 0  # --from-start alone keeps what is stored: same ids
    r = ingest(workdir, store_url, replace=True)
    assert (r.replaced, r.removed, r.filtered) == (45, 15, 15)
    clean_dir = tmp_path_factory.mktemp("clean")
    clean = f"sqlite:///{clean_dir / 'clean.db'}"
    ingest(workdir, clean)
    got, want = snapshot(store_url), snapshot(clean)
    assert got["events"] == want["events"]
    assert got["event_objects"] == want["event_objects"]
    assert got["links"] == want["links"]
    assert got["cps"] == want["cps"]


def test_replace_is_crash_safe_and_the_next_ingest_finishes_it(
    workdir: Path, store_url: str, monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:  # fmt: skip
    write_jsonl(workdir / "in" / "a.jsonl", replace_records(50))
    write_jsonl(workdir / "in" / "b.jsonl", replace_records(90)[50:])
    toml = workdir / "ordertrail.toml"
    toml.write_text(REPLACE_OLD)
    ingest(workdir, store_url)
    before = orders(store_url)
    toml.write_text(REPLACE_NEW)
    real = Store.write_batch
    calls = itertools.count()

    def crash(self: Store, *a: Any, **kw: Any) -> Any:
        if next(calls) == 4:
            raise RuntimeError("killed")
        return real(self, *a, **kw)

    monkeypatch.setattr(Store, "write_batch", crash)
    with pytest.raises(RuntimeError):
        ingest(workdir, store_url, replace=True)
    monkeypatch.setattr(Store, "write_batch", real)
    assert orders(store_url) == before  # nothing deleted that was not stored anew
    ingest(workdir, store_url)  # a plain ingest carries the replacement on
    clean_dir = tmp_path_factory.mktemp("clean")
    clean = f"sqlite:///{clean_dir / 'clean.db'}"
    ingest(workdir, clean)
    got, want = snapshot(store_url), snapshot(clean)
    for k in ("events", "event_objects", "links", "cps"):
        assert got[k] == want[k], k


def test_replace_keeps_links_other_events_still_show(workdir: Path, store_url: str) -> None:
    (workdir / "ordertrail.toml").write_text(
        REPLACE_OLD.replace('path = "ship.csv"', 'path = "ship.csv"\nobjects = { item = "sku" }')
    )
    write_jsonl(workdir / "in" / "a.jsonl", [rec(1, sku="S-1", ts=T0 // 1000 + 5000)])
    (workdir / "ship.csv").write_text("order,at,sku\no-1,2026-03-01T12:00:00Z,S-1\n")
    ingest(workdir, store_url)
    ingest(workdir, store_url, "ship")

    def links() -> list[tuple[Any, ...]]:
        with Store(store_url) as s, s.engine.connect() as conn:
            return sorted(tuple(r) for r in conn.execute(select(tables.links)))

    [(kind, oid, lk, lid, _, src, _)] = links()
    assert (kind, oid, lk, lid, src) == ("item", "S-1", "", "o-1", "ship")  # the earliest
    toml = (workdir / "ordertrail.toml").read_text()
    toml = toml.replace('path = "ship.csv"\nobjects = { item = "sku" }', 'path = "ship.csv"')
    (workdir / "ordertrail.toml").write_text(toml)
    r = ingest(workdir, store_url, "ship", replace=True)
    assert r.replaced == 1
    [(kind, oid, lk, lid, _, src, _)] = links()  # still shown by the orders event
    assert (kind, oid, lid, src) == ("item", "S-1", "o-1", "orders")


def test_replace_keeps_the_events_of_files_that_are_gone(workdir: Path, sqlite_url: str) -> None:
    write_jsonl(workdir / "in" / "a.jsonl", [rec(i) for i in range(5)])
    write_jsonl(workdir / "in" / "old.jsonl", [rec(i) for i in range(5, 9)])
    ingest(workdir, sqlite_url)
    (workdir / "in" / "old.jsonl").unlink()  # rotated away
    r = ingest(workdir, sqlite_url, replace=True)
    assert (r.replaced, r.removed) == (5, 0)
    assert orders(sqlite_url) == {f"o-{i}" for i in range(9)}


def test_ingest_cli_from_start_and_replace_options(workdir: Path, sqlite_url: str) -> None:
    write_jsonl(workdir / "in" / "a.jsonl", [rec(i) for i in range(5)])
    res = invoke(workdir, "--db", sqlite_url, "ingest", "--replace")
    assert res.exit_code == 2 and "--from-start" in res.stderr
    res = invoke(workdir, "--db", sqlite_url, "ingest", "--from-start", "--replace")
    assert res.exit_code == 2 and "name the sources" in res.stderr
    assert invoke(workdir, "--db", sqlite_url, "ingest", "orders").exit_code == 0
    res = invoke(
        workdir, "--db", sqlite_url, "ingest", "orders", "--from-start", "--format", "json"
    )
    assert res.exit_code == 0
    [o] = orjson.loads(res.stdout)["sources"]
    assert (o["records"], o["redelivered"]) == (5, 5)
    res = invoke(
        workdir, "--db", sqlite_url, "ingest", "orders", "--from-start", "--replace",
        "--format", "json",
    )  # fmt: skip
    assert res.exit_code == 0 and orjson.loads(res.stdout)["sources"][0]["replaced"] == 5


# -- 7. fuzzing --------------------------------------------------------------------------------

FUZZ_CONFIG = """
[pipeline]
name = "fuzz"
[[hops]]
name = "checkout"
next = ["payment"]
within = "15m"
[[hops]]
name = "payment"
"""
FUZZ_JSONL = """
[[sources]]
name = "{name}"
kind = "file"
path = "{name}.jsonl"
hop_field = "stage"
order_id = "order"
timestamp = "ts"
where = {{ skip = false }}
"""
FUZZ_CSV = """
[[sources]]
name = "{name}"
kind = "file"
path = "{name}.csv"
hop = "checkout"
order_id = "order"
timestamp = "ts"
attributes = ["note"]
"""

_names = itertools.count()


class Recording(FileSource):
    """A file source that keeps every record it yields (for accounting)."""

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self.records: list[RawRecord] = []

    def batches(self, checkpoints: dict[str, Checkpoint]) -> Iterator[RawBatch]:
        for b in super().batches(checkpoints):
            self.records.extend(b.records)
            yield b


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Path]]:
    d = tmp_path_factory.mktemp("fuzz")
    s = Store(f"sqlite:///{d / 'fuzz.db'}")  # one store; each example has its own source
    yield s, d
    s.close()


def fuzz_source(d: Path, fmt: str, ext: str = "") -> tuple[Config, Any, Path]:
    name = f"s{next(_names)}"
    path = d / f"{name}.{fmt}{ext}"
    toml = d / f"{name}.toml"
    text = (FUZZ_JSONL if fmt == "jsonl" else FUZZ_CSV).format(name=name)
    toml.write_text(FUZZ_CONFIG + text.replace(f".{fmt}", f".{fmt}{ext}"))
    cfg = load_config(toml)
    return cfg, cfg.source(name), path


def read_one(store: Store, cfg: Config, src: Any, settled: bool) -> tuple[IngestReport, Recording]:
    f = Path(FileSource(src).full(src.path or ""))
    if settled:
        settle(f)
    else:
        now = time.time()
        os.utime(f, (now, now))
    fsrc = Recording(src, batch_size=5)
    rep = ingest_file_source(store, cfg, src, fsrc=fsrc)
    # every physical line taken this run is in exactly one record, or blank, or the header
    spans = [r.raw.count(b"\n") + 1 for r in fsrc.records]
    firsts = [int(r.source_ref.rsplit(":", 1)[1]) for r in fsrc.records]
    assert firsts == sorted(firsts) and len(set(firsts)) == len(firsts)
    assert fsrc.lines_read == fsrc.blank_lines + fsrc.header_lines + sum(spans)
    assert rep.records == len(fsrc.records)
    assert rep.records == rep.stored + rep.redelivered + rep.quarantined + rep.filtered
    return rep, fsrc


def clean_read(cfg: Config, src: Any, content: bytes, tmp: Path) -> tuple[set[str], set[Any], int]:
    """What a fresh ingest of these bytes (settled) gives: event ids, quarantine keys, filtered."""
    f = tmp / ("clean." + ("csv" if src.file_format(src.path) == "csv" else "jsonl"))
    f.write_bytes(content)
    settle(f)
    clean_src = dataclasses.replace(src, path=str(f))
    fsrc = FileSource(clean_src, batch_size=1000)
    mapper = Mapper(clean_src, cfg.hop_names)
    ids: set[str] = set()
    keys: set[Any] = set()
    filtered = 0
    for b in fsrc.batches({}):
        rows, bad, filt = map_batch(mapper, b)
        ids.update(r[0] for r in rows)
        keys.update((q.source_ref.rsplit(":", 1)[1], q.digest, q.reason) for q in bad)
        filtered += len(filt)
    assert fsrc.pending_lines == 0
    return ids, keys, filtered


def stored(store: Store, source: str) -> tuple[set[str], set[Any], list[str]]:
    e, q = tables.events.c, tables.quarantine.c
    with store.engine.connect() as conn:
        ids = [r[0] for r in conn.execute(select(e.event_id).where(e.source == source))]
        keys = {
            (r[0].rsplit(":", 1)[1], r[1], r[2])
            for r in conn.execute(
                select(q.source_ref, q.digest, q.reason).where(q.source == source)
            )
        }
    return set(ids), keys, ids


def jsonl_line(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["good", "good", "good", "filtered", "bad", "blank", "bytes"]))
    i = draw(st.integers(0, 30))
    if kind in ("good", "filtered"):
        r = {"order": f"o-{i}", "stage": draw(st.sampled_from(["checkout", "payment", "x"])),
             "ts": T0 // 1000 + i, "skip": kind == "filtered"}  # fmt: skip
        return orjson.dumps(r)
    if kind == "bad":
        return draw(st.sampled_from([b'{"order": "o-1", "ts": ', b"[1, 2]", b'"str"', b"{}"]))
    if kind == "blank":
        return draw(st.sampled_from([b"", b"  ", b"\t\r"]))
    return draw(st.binary(max_size=20)).replace(b"\n", b"")


def csv_field(draw: Any) -> str:
    return draw(
        st.one_of(
            st.sampled_from(["o-1", "o-2", "2026-03-01T12:00:00Z", "1772366400", "", "x"]),
            st.text(alphabet='ab ,"\r\n\u00e9', max_size=8),
        )
    )


def csv_line(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["row", "row", "quoted", "raw", "blank"]))
    if kind == "row":
        return f"o-{draw(st.integers(0, 20))},2026-03-01T12:00:00Z,n".encode()
    if kind == "quoted":  # well-quoted fields, maybe holding newlines, commas, quotes
        fields = [csv_field(draw) for _ in range(draw(st.integers(1, 4)))]
        return ",".join('"' + f.replace('"', '""') + '"' for f in fields).encode()
    if kind == "blank":
        return b""
    return ",".join(csv_field(draw) for _ in range(draw(st.integers(1, 4)))).encode(
        "utf-8", "surrogatepass"
    ) + draw(st.sampled_from([b"", b"\xff", b"\xc3"]))


@st.composite
def file_bytes(draw: Any, fmt: str) -> bytes:
    make = jsonl_line if fmt == "jsonl" else csv_line
    body = b"\n".join(make(draw) for _ in range(draw(st.integers(0, 25))))
    if fmt == "csv":
        body = draw(st.sampled_from([b"order,ts,note\n", b"\norder,ts,note\r\n", b""])) + body
    return body + draw(st.sampled_from([b"\n", b"", b"\n\n"]))


def safe_split(content: bytes, cut: int, fmt: str) -> bool:
    """JSONL takes an unterminated JSON object as complete: a writer never stops right after
    one on a line that goes on (that would not be JSONL), so neither do the fuzzed writers."""
    if fmt != "jsonl" or cut >= len(content) or content[cut : cut + 1] == b"\n":
        return True
    start = content.rfind(b"\n", 0, cut) + 1
    return not filemod._is_json_object(content[start:cut].strip())


FUZZ = settings(
    max_examples=int(os.environ.get("ORDERTRAIL_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(data=st.data(), fmt=st.sampled_from(["jsonl", "csv"]))
def test_fuzz_appends_in_pieces_end_as_a_clean_read(
    fuzz_store: tuple[Store, Path], data: Any, fmt: str
) -> None:
    """Bytes appended in random pieces (torn anywhere), ingested between pieces, settled or
    not: the store ends exactly as one clean ingest of the whole file — each line stored,
    quarantined or counted once."""
    store, d = fuzz_store
    content = data.draw(file_bytes(fmt))
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(content)), max_size=6))))
    cuts = [c for c in cuts if safe_split(content, c, fmt)]
    cfg, src, path = fuzz_source(d, fmt)
    path.write_bytes(b"")
    filtered = 0
    for i, cut in enumerate([*cuts, len(content)]):
        path.write_bytes(content[:cut])
        last = i == len(cuts)
        # a settled ingest mid-way only where nothing is half-framed (see the module notes: a
        # quote still open where a settled file ends is not taken back)
        settled = last or (fmt == "jsonl" and data.draw(st.booleans()))
        rep, _ = read_one(store, cfg, src, settled)
        filtered += rep.filtered
        if data.draw(st.booleans()):  # an ingest with nothing new changes nothing
            again, _ = read_one(store, cfg, src, settled)
            assert again.stored == again.quarantined == 0
            filtered += again.filtered
    ids, keys, want_filtered = clean_read(cfg, src, content, d)
    got_ids, got_keys, all_ids = stored(store, src.name)
    assert got_ids == ids
    assert len(all_ids) == len(got_ids)
    assert got_keys == keys
    assert filtered == want_filtered


@st.composite
def edits(draw: Any, fmt: str) -> list[tuple[str, bytes, bool]]:
    ops = []
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(["append", "append", "truncate", "replace", "rewrite_head"]))
        ops.append((op, draw(file_bytes(fmt)), draw(st.booleans())))
    return ops


@FUZZ
@given(data=st.data(), fmt=st.sampled_from(["jsonl", "csv"]))
def test_fuzz_truncation_append_replace_sequences(
    fuzz_store: tuple[Store, Path], data: Any, fmt: str
) -> None:
    """Random truncations, appends and replacements between ingests: every record of the final
    file is stored or quarantined, no event is stored twice, and no event comes from bytes no
    version of the file held."""
    store, d = fuzz_store
    cfg, src, path = fuzz_source(d, fmt)
    content = data.draw(file_bytes(fmt))
    path.write_bytes(content)
    versions = [content]
    read_one(store, cfg, src, data.draw(st.booleans()))
    for op, more, settled in data.draw(edits(fmt)):
        if op == "append":
            if not safe_split(content + more, len(content), fmt):
                more = b"\n" + more  # JSONL writers end a JSON object's line
            content += more
            with path.open("ab") as fh:
                fh.write(more)
        elif op == "truncate":  # in place, same inode, then refilled
            cut = data.draw(st.integers(0, len(content)))
            if not safe_split(content[:cut] + more, cut, fmt):
                more = b"\n" + more
            content = content[:cut] + more
            with path.open("r+b") as fh:
                fh.truncate(0)
                fh.write(content)
        elif op == "replace":  # a new file under the same name
            content = more
            tmp = path.with_suffix(".new")
            tmp.write_bytes(content)
            os.replace(tmp, path)
        else:  # the same first bytes, other bytes after them
            cut = len(content) // 2
            if not safe_split(content[:cut] + more, cut, fmt):
                more = b"\n" + more
            content = content[:cut] + more
            path.write_bytes(content)
        versions.append(content)
        read_one(store, cfg, src, settled)
    read_one(store, cfg, src, True)  # settled at the end: nothing pending
    ids, keys, _ = clean_read(cfg, src, content, d)
    got_ids, got_keys, all_ids = stored(store, src.name)
    assert ids <= got_ids
    assert len(all_ids) == len(got_ids)
    assert {k[:2] for k in keys} <= {k[:2] for k in got_keys}
    # no event from bytes no version held: each came from some version's lines
    ever: set[str] = set()
    for v in versions:
        ever |= clean_read(cfg, src, v, d)[0]
    assert got_ids <= ever


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(0, 30), min_size=1, max_size=5),
    target=st.integers(0, 4),
    where=st.floats(0, 1),
    flip=st.integers(1, 255),
)
def test_fuzz_corrupt_gzip_stores_only_verified_members(
    fuzz_store: tuple[Store, Path], sizes: list[int], target: int, where: float, flip: int
) -> None:
    store, d = fuzz_store
    cfg, src, path = fuzz_source(d, "jsonl", ".gz")
    members, texts = [], []
    n = 0
    for k in sizes:
        text = b"".join(
            orjson.dumps({"order": f"o-{n + i}", "stage": "checkout", "ts": 1, "skip": False})
            + b"\n"
            for i in range(k)
        )
        n += k
        texts.append(text)
        members.append(gzip.compress(text, mtime=0))
    target %= len(members)
    m = bytearray(members[target])
    pos = 10 + int(where * (len(m) - 11))  # in the deflate data or the trailer
    m[pos] ^= flip
    members[target] = bytes(m)
    path.write_bytes(b"".join(members))
    settle(path)
    fsrc = Recording(src, batch_size=7)
    ingest_file_source(store, cfg, src, fsrc=fsrc)
    # what zlib itself says of each member, on its own
    ok = []
    for mem, text in zip(members, texts, strict=True):
        try:
            good = zlib.decompress(mem, 31) == text
        except zlib.error:
            good = False
        ok.append(good)
        if not good:
            break
    verified = b"".join(t for t, g in zip(texts, ok, strict=False) if g)
    want = {orjson.loads(x)["order"] for x in verified.splitlines()}
    assert orders_of(store, src.name) == want
    assert all(not r.error or r.raw == b"" for r in fsrc.records)


def orders_of(store: Store, source: str) -> set[str]:
    e = tables.events.c
    with store.engine.connect() as conn:
        return {r[0] for r in conn.execute(select(e.order_id).where(e.source == source))}


def test_fuzz_helpers_agree_on_a_known_case(fuzz_store: tuple[Store, Path]) -> None:
    store, d = fuzz_store
    cfg, src, path = fuzz_source(d, "csv")
    content = b'order,ts,note\no-1,2026-03-01T12:00:00Z,"a\nb"\n\no-2,x\n'
    path.write_bytes(content)
    rep, fsrc = read_one(store, cfg, src, True)
    assert (rep.stored, rep.quarantined, fsrc.blank_lines, fsrc.header_lines) == (1, 1, 1, 1)
    assert fsrc.lines_read == 5
    ids, keys, _ = clean_read(cfg, src, content, d)
    assert stored(store, src.name)[:2] == (ids, keys)
