"""Hostile and broken input, outside the file reader and the OTLP receiver: overflowing and
non-UTF-8 configs, corrupt stores and full disks, racing migrations, poison records on
PostgreSQL, hop names and attribute keys that look like syntax, redaction of every output."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from ordertrail.cli.main import cli
from ordertrail.reconcile import reconcile
from ordertrail.schemas.config import parse_config
from ordertrail.schemas.event import OrderEvent
from ordertrail.store import Checkpoint, Store

T0 = 1_767_225_600_000_000
MIN = 60_000_000
EXE = str(Path(sys.executable).parent / "ordertrail")


def invoke(cwd: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--config", str(cwd / "ordertrail.toml"), *args])


@pytest.mark.parametrize(
    ("snippet", "key"),
    [
        ("[pipeline]\nclock_skew = inf\n", "pipeline.clock_skew"),
        ("[pipeline]\nlookback = nan\n", "pipeline.lookback"),
        ('[pipeline]\nlookback = "99999999999999d"\n', "pipeline.lookback"),
        ('[pipeline]\nlookback = "' + "9" * 400 + 'm"\n', "pipeline.lookback"),
        ("[pipeline]\nlookback = 1e400\n", "pipeline.lookback"),
    ],
)
def test_overflowing_config_values_are_one_line_errors(
    tmp_path: Path, snippet: str, key: str
) -> None:
    (tmp_path / "ordertrail.toml").write_text(snippet + '[[hops]]\nname = "a"\n')
    r = invoke(tmp_path, "status")
    assert r.exit_code == 2 and key in r.stderr and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_config_that_is_not_utf8_and_a_chain_of_2000_hops(tmp_path: Path) -> None:
    (tmp_path / "ordertrail.toml").write_bytes(b'[[hops]]\nname = "caf\xe9"\n')
    r = invoke(tmp_path, "status")
    assert r.exit_code == 2 and "not UTF-8" in r.stderr
    n = 2000
    hops = [{"name": f"h{i}", **({"next": [f"h{i + 1}"], "within": "1m"} if i < n - 1 else {})}
            for i in range(n)]  # fmt: skip
    cfg = parse_config({"hops": hops})
    with Store(f"sqlite:///{tmp_path / 's.db'}") as s:
        s.write_batch(events=[OrderEvent("e", "O", "h0", T0, "x")])
        r2 = reconcile(s, cfg, as_of=T0 + 10 * MIN)
    assert [f["kind"] for f in r2.active()] == ["vanished"] or r2.active()[0]["kind"] == "stalled"


def test_a_corrupt_or_foreign_store_is_one_line_and_left_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "ordertrail.toml").write_text(
        '[[hops]]\nname = "a"\n[[sources]]\nname = "f"\nkind = "file"\npath = "in/*"\n'
        'hop = "a"\norder_id = "o"\ntimestamp = "t"\n'
    )
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 200)
    before = bad.read_bytes()
    for cmd in (["status"], ["reconcile"], ["trace", "X"], ["ingest"]):
        r = invoke(tmp_path, "--db", f"sqlite:///{bad}", *cmd)
        assert r.exit_code == 3, (cmd, r.output)
        assert "not a database" in r.stderr and "Traceback" not in r.output
    assert bad.read_bytes() == before


def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_during_reconcile_is_exit_3_and_the_store_intact(tmp_path: Path) -> None:
    (tmp_path / "ordertrail.toml").write_text(
        '[[hops]]\nname = "a"\nnext = ["b"]\nwithin = "1m"\n[[hops]]\nname = "b"\n'
    )
    db = tmp_path / "s.db"
    with Store(f"sqlite:///{db}") as s:
        s.write_batch(events=[OrderEvent(f"e{i}", f"O{i:06d}", "a", T0 + i, "x")
                              for i in range(20_000)])  # fmt: skip
        s.engine.dispose()
    with Store(f"sqlite:///{db}") as s:
        s.engine.connect().exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").close()
    before = db.read_bytes()
    size = db.stat().st_size
    p = subprocess.run(
        [EXE, "--config", str(tmp_path / "ordertrail.toml"), "--db", f"sqlite:///{db}",
         "reconcile", "--as-of", "2026-01-02T00:00:00Z"],
        capture_output=True, text=True, preexec_fn=lambda: _limit_file_size(size + 4096),
    )  # fmt: skip
    assert p.returncode == 3, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    with Store(f"sqlite:///{db}") as s:  # a later run (with room) works on the same store
        assert s.count_events() == 20_000
        assert s.engine.connect().exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    assert len(before) == size


def test_two_ingests_on_a_brand_new_store_both_succeed(tmp_path: Path, store_url: str) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"o": "A", "t": 1767225600}\n')
    (tmp_path / "ordertrail.toml").write_text(
        '[[hops]]\nname = "a"\n[[sources]]\nname = "f"\nkind = "file"\npath = "in/*.jsonl"\n'
        'hop = "a"\norder_id = "o"\ntimestamp = "t"\n'
    )
    cmd = [EXE, "--config", str(tmp_path / "ordertrail.toml"), "--db", store_url, "ingest"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]  # fmt: skip
    outs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1] for o in outs]
    with Store(store_url) as s:
        assert s.count_events() == 1


def test_nul_characters_are_quarantined_and_never_block_a_store(
    tmp_path: Path, store_url: str
) -> None:
    (tmp_path / "in").mkdir()
    lines = [
        {"o": "A\u0000B", "t": 1767225600},  # an id with NUL: quarantined, never altered
        {"o": "C", "t": 1767225600, "note": "x\u0000y"},  # an attribute with NUL
        {"o": "D", "t": 1767225600, "note": "fine"},
    ]
    # and a record nested past any parser's limit
    deep = b'{"o": "E", "t": 1767225600, "deep": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    body = b"\n".join([*(orjson.dumps(x) for x in lines), deep]) + b"\n"
    (tmp_path / "in" / "a.jsonl").write_bytes(body)
    (tmp_path / "ordertrail.toml").write_text(
        '[pipeline]\nsearchable = ["note"]\n[[hops]]\nname = "a"\n[[sources]]\nname = "f"\n'
        'kind = "file"\npath = "in/*.jsonl"\nhop = "a"\norder_id = "o"\ntimestamp = "t"\n'
        'attributes = ["note"]\n'
    )
    r = invoke(tmp_path, "--db", store_url, "ingest", "--format", "json")
    assert r.exit_code in (0, 4), r.output
    with Store(store_url) as s:
        assert {e.order_id for e in s.order_events("D")} == {"D"}
        reasons = sorted(q["reason"] for q in s.quarantine_rows())
    assert any("NUL" in x and "order id" in x for x in reasons)
    assert any("NUL" in x and "note" in x for x in reasons)
    assert len(reasons) == 3 and any("JSON" in x for x in reasons)
    # later commands work on the store
    assert invoke(tmp_path, "--db", store_url, "reconcile").exit_code == 0
    assert invoke(tmp_path, "--db", store_url, "search", "--attr", "note=fine").exit_code == 0


def test_raw_nul_bytes_in_quarantined_records_never_block_a_source(
    tmp_path: Path, store_url: str
) -> None:
    """A line holding a raw NUL byte is quarantined (kept with U+FFFD: PostgreSQL's text cannot
    hold NUL) and the source's later ingests still work."""
    (tmp_path / "in").mkdir()
    body = b'{"o": "A\x00", "t": 1767225600}\nB,\x00\n{"o": "C", "t": 1767225600}\n'
    (tmp_path / "in" / "a.jsonl").write_bytes(body)
    (tmp_path / "ordertrail.toml").write_text(
        '[[hops]]\nname = "a"\n[[sources]]\nname = "f"\nkind = "file"\npath = "in/*.jsonl"\n'
        'hop = "a"\norder_id = "o"\ntimestamp = "t"\nmax_quarantine = 1.0\n'
    )
    r = invoke(tmp_path, "--db", store_url, "ingest", "--format", "json")
    assert r.exit_code == 0, r.output
    with (tmp_path / "in" / "a.jsonl").open("ab") as f:
        f.write(b'{"o": "D", "t": 1767225600}\n\x00\x00\n')
    r = invoke(tmp_path, "--db", store_url, "ingest", "--format", "json")
    assert r.exit_code == 0, r.output
    with Store(store_url) as s:
        assert {e.order_id for e in s.order_events("C")} == {"C"}
        assert {e.order_id for e in s.order_events("D")} == {"D"}
        raws = [q["raw"] for q in s.quarantine_rows()]
    assert len(raws) == 3 and all("\x00" not in x and "\ufffd" in x for x in raws)
    assert invoke(tmp_path, "--db", store_url, "quarantine", "list").exit_code == 0


def test_hop_names_and_attribute_keys_that_look_like_syntax(tmp_path: Path) -> None:
    """Hops named pay:lo / pay:hi give the findings the same hops named lo / hi give."""

    def run(a: str, b: str, key: str) -> list[tuple[Any, ...]]:
        cfg = parse_config(
            {
                "pipeline": {"searchable": [key]},
                "hops": [{"name": "c", "next": [a, b], "within": "5m"}, {"name": a}, {"name": b}],
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
        url = f"sqlite:///{tmp_path / (a.replace(':', '_') + '.db')}"
        with Store(url) as s:
            s.write_batch(
                events=[
                    OrderEvent("1", "O1", "c", T0, "s", attributes={key: "v1"}),
                    OrderEvent("2", "O1", a, T0 + MIN, "s"),
                    OrderEvent("3", "O2", "c", T0, "s"),
                    OrderEvent("4", "O2", b, T0 + MIN, "s"),
                ],
                checkpoints=[Checkpoint("s", "", {}, T0 + 60 * MIN)],
            )
            out = reconcile(s, cfg, as_of=T0 + 60 * MIN)
            from ordertrail.report.search import search_orders

            found = search_orders(s, cfg, attrs=[(key, "v1")])
        assert [o["order_id"] for o in found] == ["O1"]
        names = {a: "A", b: "B"}
        return sorted(
            (f["order_id"], f["kind"], names.get(f["hop"], f["hop"])) for f in out.active()
        )

    assert run("pay:lo", "pay:hi", "meta:key") == run("lo", "hi", "metakey")


PERSONAL_EMAIL = "mary.sethwamy@example.com"
PERSONAL_NAME = "Mary Sethwamy-Smithson"


def test_redact_leaves_no_personal_value_in_any_output(tmp_path: Path) -> None:
    """Every command's output with --redact, swept for the personal values."""
    (tmp_path / "in").mkdir()
    rows = [
        {"o": "O1", "h": "checkout", "t": 1767225600,
         "customer": {"email": PERSONAL_EMAIL, "name": PERSONAL_NAME}, "contact": PERSONAL_EMAIL},
        {"o": "O1", "h": "payment", "t": 1767225660, "contact": "other@example.org"},
    ]  # fmt: skip
    (tmp_path / "in" / "a.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    (tmp_path / "ordertrail.toml").write_text(
        '[pipeline]\npersonal = ["customer", "contact"]\nsearchable = ["contact"]\n'
        '[[hops]]\nname = "checkout"\nnext = ["payment"]\nwithin = "5m"\n'
        '[[hops]]\nname = "payment"\nnext = ["shipped"]\nwithin = "5m"\n[[hops]]\nname = "shipped"\n'
        '[[checks]]\nfield = "contact"\nhops = ["checkout", "payment"]\n'
        '[[sources]]\nname = "f"\nkind = "file"\npath = "in/*.jsonl"\nhop_field = "h"\n'
        'order_id = "o"\ntimestamp = "t"\nattributes = ["customer", "contact"]\n'
    )
    assert invoke(tmp_path, "ingest").exit_code == 0
    at = ["--as-of", "2026-01-02T00:00:00Z"]
    outputs = []
    for args in (
        ["reconcile", *at, "--redact"],
        ["reconcile", *at, "--redact", "--format", "json"],
        ["reconcile", *at, "--redact", "--format", "csv"],
        ["findings", "--redact"],
        ["findings", "--redact", "--format", "json"],
        ["findings", "--redact", "--format", "csv"],
        ["trace", "O1", *at, "--redact"],
        ["trace", "O1", *at, "--redact", "--format", "json"],
        ["search", "--attr", f"contact={PERSONAL_EMAIL}", "--redact", "--format", "json"],
        ["search", "--attr", f"contact={PERSONAL_EMAIL}", "--redact"],
        ["report", *at, "--redact", "--format", "json"],
        ["report", *at, "--redact", "--html", str(tmp_path / "r.html")],
    ):
        r = invoke(tmp_path, *args)
        assert r.exit_code in (0, 1), (args, r.output)
        outputs.append(r.output)
    outputs.append((tmp_path / "r.html").read_text())
    everything = "\n".join(outputs)
    assert "mismatch" in everything  # the check on a personal field did fire
    for secret in (PERSONAL_EMAIL, PERSONAL_NAME, "other@example.org", "mary.sethwamy"):
        assert secret not in everything, secret
    assert "m***@example.com" in everything


def test_creating_a_store_keeps_sqlites_own_locks(tmp_path: Path) -> None:
    """The migration lock must not drop the POSIX locks SQLite holds: after this process
    creates a store and keeps it open, another process opening and closing it must not take
    itself for the last connection and delete our -wal."""
    db = tmp_path / "s.db"
    with Store(f"sqlite:///{db}") as s:
        s.write_batch(events=[OrderEvent("e1", "O1", "a", T0, "x")])
        with s.engine.connect() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM events").fetchall()
            assert Path(f"{db}-wal").exists()
            subprocess.run(
                [sys.executable, "-c",
                 f"import sqlite3; c = sqlite3.connect({str(db)!r}); "
                 "c.execute('select count(*) from events').fetchall(); c.close()"],
                check=True,
            )  # fmt: skip
            assert Path(f"{db}-wal").exists()
            s.write_batch(events=[OrderEvent("e2", "O2", "a", T0, "x")])
        assert s.count_events() == 2
