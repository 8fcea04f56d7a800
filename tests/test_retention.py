"""Retention: ``ordertrail prune`` (and ``[store] prune_after_ingest``) on both stores, and
PostgreSQL's monthly partitions of events (migration 0006, identity in ``event_ids``)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import create_engine, text

from ordertrail.reconcile import reconcile
from ordertrail.schemas.config import parse_config
from ordertrail.schemas.event import OrderEvent, QuarantineRecord, us_to_iso
from ordertrail.store import Store, tables
from ordertrail.store.engine import make_engine, migrate
from ordertrail.store.retention import (
    _PRUNE_LOCK,
    PruneBusy,
    events_partitioned,
    month_of,
    month_range,
    partition_name,
    partitions,
    prune,
)
from ordertrail.store.writer import EVENT_COLUMNS, link_rows, now_us
from tests.helpers import invoke, write_jsonl

D = 86_400_000_000
H = 3_600_000_000
NOW = now_us()
CUT = NOW - 90 * D  # retention 90d
KEEP = NOW - 30 * D  # lookback 30d

PIPELINE = """
[store]
retention = "90d"

[pipeline]
name = "t"
lookback = "30d"

[[objects]]
name = "item"
[[objects]]
name = "parcel"
via = "item"

[[hops]]
name = "checkout"
next = ["payment"]
within = "1h"

[[hops]]
name = "payment"
next = ["shipped"]
within = "2d"

[[hops]]
name = "shipped"
each = "item"
"""


def ev(eid: str, order: str, hop: str, at: int, **objects: list[str]) -> OrderEvent:
    return OrderEvent(eid, order, hop, at, "s", source_ref=f"f:{eid}", objects=objects)


def q(sql: str, url: str, **params: Any) -> list[tuple[Any, ...]]:
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            return [tuple(r) for r in c.execute(text(sql), params).all()]
    finally:
        eng.dispose()


def one(sql: str, url: str, **params: Any) -> Any:
    return q(sql, url, **params)[0][0]


def expected_state(url: str) -> tuple[set[Any], set[Any]]:
    """The links and event_objects rows an ingest of exactly the stored events would write."""
    cols = ", ".join(EVENT_COLUMNS)
    rows = q(f"SELECT {cols} FROM events", url)
    links, mentions = link_rows(rows)
    return {tuple(x) for x in links}, set(mentions)


def assert_consistent(url: str) -> None:
    """Links and object rows are exactly those of the stored events; on PostgreSQL every stored
    event has its identity and no identity outlives its event."""
    links, mentions = expected_state(url)
    assert set(q("SELECT kind, object_id, link_kind, link_id, occurred_at, source, event_id "
                 "FROM links", url)) == links  # fmt: skip
    assert set(q("SELECT kind, object_id, source, event_id FROM event_objects", url)) == mentions
    if url.startswith("postgresql"):
        assert set(q("SELECT source, event_id FROM event_ids", url)) == set(
            q("SELECT source, event_id FROM events", url)
        )


def linked_store(url: str) -> Store:
    """Orders wholly before the cut, one straddling it, and orders inside the window."""
    s = Store(url)
    s.write_batch(
        [
            # O1: wholly old; its item, parcel and their links go
            ev("a1", "O1", "checkout", NOW - 200 * D, item=["I1"]),
            ev("a2", "O1", "shipped", NOW - 199 * D, item=["I1"], parcel=["P1"]),
            # O2: an old event showed I2 -> O2 and I2 <-> P2; a new one shows I2 -> O2 again
            ev("b1", "O2", "checkout", NOW - 120 * D, item=["I2"], parcel=["P2"]),
            ev("b2", "O2", "shipped", NOW - 10 * D, item=["I2"]),
            # O3: just before the cut (row by row on PostgreSQL: the month that straddles it)
            ev("c1", "O3", "checkout", CUT - H),
            ev("c2", "O3", "payment", CUT + H),
            # O4: inside the window, never touched
            ev("d1", "O4", "checkout", NOW - 5 * D, item=["I4"]),
            ev("d2", "O4", "payment", NOW - 5 * D + H, item=["I4"], parcel=["P4"]),
        ]
    )
    return s


def test_prune_removes_what_is_older_and_nothing_inside_the_window(store_url: str) -> None:
    s = linked_store(store_url)
    s.write_batch([ev(f"x{i}", f"X{i}", "checkout", CUT - (i + 1) * H, item=[f"XI{i}"])
                   for i in range(300)])  # fmt: skip
    dry = prune(s.engine, CUT, keep_after=KEEP, dry_run=True)
    assert s.count_events() == 308  # a dry run only counts
    res = prune(s.engine, CUT, keep_after=KEEP, batch_size=100)
    assert dry.removed == res.removed and dry.links_moved == res.links_moved
    assert res.events == 304  # a1, a2, b1, c1 and the 300
    assert res.event_objects == 1 + 2 + 2 + 300  # a1: I1; a2: I1, P1; b1: I2, P2
    # I1 -> O1, P1 -> O1, P1 <-> I1 (both ways), I2 <-> P2 (both ways), P2 -> O2, XI -> X
    assert res.links == 1 + 1 + 2 + 2 + 1 + 300
    assert res.links_moved == 1  # I2 -> O2: now shown by b2
    assert sorted(r[0] for r in q("SELECT event_id FROM events", store_url)) == [
        "b2", "c2", "d1", "d2",
    ]  # fmt: skip
    assert q("SELECT occurred_at, event_id FROM links WHERE object_id = 'I2'", store_url) == [
        (NOW - 10 * D, "b2")
    ]
    assert_consistent(store_url)
    again = prune(s.engine, CUT, keep_after=KEEP)
    assert again.removed == dict.fromkeys(res.removed, 0) and again.links_moved == 0
    with pytest.raises(ValueError, match="inside the lookback window"):
        prune(s.engine, NOW - 10 * D, keep_after=KEEP)
    s.close()


def test_a_link_moved_batch_after_batch_counts_once(store_url: str) -> None:
    """I7 -> O7 shown by three old events and a new one: pruned an event a batch, the link
    moves three times, and it is one link kept, as the dry run says."""
    s = Store(store_url)
    s.write_batch([
        *(ev(f"m{i}", "O7", "checkout", NOW - (300 - i) * D, item=["I7"]) for i in range(3)),
        ev("m9", "O7", "shipped", NOW - 5 * D, item=["I7"]),
    ])  # fmt: skip
    dry = prune(s.engine, CUT, keep_after=KEEP, dry_run=True)
    res = prune(s.engine, CUT, keep_after=KEEP, batch_size=1)
    assert res.events == 3 and res.links == 0 and res.links_moved == dry.links_moved == 1
    assert q("SELECT event_id FROM links WHERE object_id = 'I7'", store_url) == [("m9",)]
    assert_consistent(store_url)
    s.close()


def test_a_link_stays_while_an_event_shows_it(store_url: str) -> None:
    s = Store(store_url)
    # P5 <-> I5 shown first by an old event, then by two new ones: it moves to the earliest
    s.write_batch([
        ev("p1", "O5", "shipped", NOW - 300 * D, item=["I5"], parcel=["P5"]),
        ev("p2", "O5", "shipped", NOW - 6 * D, item=["I5"], parcel=["P5"]),
        ev("p3", "", "shipped", NOW - 7 * D, item=["I5"], parcel=["P5"]),  # no order of its own
        ev("p4", "O6", "checkout", NOW - 250 * D, item=["I6"]),
    ])  # fmt: skip
    res = prune(s.engine, CUT, keep_after=KEEP)
    assert res.events == 2 and res.links == 1 and res.links_moved == 4  # I6 -> O6 goes
    assert set(q("SELECT kind, link_kind, event_id FROM links", store_url)) == {
        ("item", "", "p2"),  # I5 -> O5: p3 names no order
        ("item", "parcel", "p3"),  # I5 <-> P5: p3 is earlier than p2
        ("parcel", "item", "p3"),
        ("parcel", "", "p2"),
    }
    assert_consistent(store_url)
    s.close()


def test_quarantine_and_inactive_findings_older_than_the_cut(store_url: str) -> None:
    s = Store(store_url)
    s.write_batch(quarantined=[
        QuarantineRecord("s", "f:1", "bad", "{", received_at=NOW - 100 * D),
        QuarantineRecord("s", "f:2", "bad", "{{", received_at=NOW - 80 * D),
        QuarantineRecord("s", "f:3", "bad", "{{{", received_at=NOW - 1 * D),
    ])  # fmt: skip
    with s.engine.begin() as c:
        for i, (status, since) in enumerate([("expired", CUT - D), ("resolved", CUT - D),
                                             ("open", CUT - D), ("expired", CUT + D)]):  # fmt: skip
            c.execute(tables.findings.insert().values(
                order_id=f"o{i}", kind="vanished", hop="payment", from_hop="checkout",
                since=since, status=status, first_run=1, last_run=1,
            ))  # fmt: skip
    res = prune(s.engine, CUT, keep_after=KEEP)
    assert (res.quarantine, res.findings) == (1, 2)
    assert sorted(r[0] for r in q("SELECT source_ref FROM quarantine", store_url)) == ["f:2", "f:3"]
    assert sorted(q("SELECT order_id, status FROM findings", store_url)) == [
        ("o2", "open"), ("o3", "expired"),
    ]  # fmt: skip
    s.close()


def test_reconcile_finds_the_same_before_and_after_a_prune(store_url: str) -> None:
    cfg = parse_config(__import__("tomllib").loads(PIPELINE))
    s = Store(store_url)
    old, new = NOW - 200 * D, NOW - 12 * D
    events = []
    for i in range(6):  # complete orders, long ago and inside the window
        for base, tag in ((old, "old"), (new, "new")):
            t = base + i * H
            o = f"{tag}-{i}"
            events += [ev(f"{o}-c", o, "checkout", t, item=[f"{o}-i"]),
                       ev(f"{o}-p", o, "payment", t + 600_000_000),
                       ev(f"{o}-s", o, "shipped", t + H, item=[f"{o}-i"], parcel=[f"{o}-p"])]  # fmt: skip
    # lost orders, long ago and now: vanished between payment and shipped; and an item missing
    events += [ev("old-x-c", "old-x", "checkout", old, item=["old-x-i"]),
               ev("old-x-p", "old-x", "payment", old + 60_000_000),
               ev("new-x-c", "new-x", "checkout", new, item=["new-x-i", "new-x-j"]),
               ev("new-x-p", "new-x", "payment", new + 60_000_000),
               ev("new-x-s", "new-x", "shipped", new + H, item=["new-x-i"])]  # fmt: skip
    s.write_batch(events)
    reconcile(s, cfg, as_of=old + 20 * D)  # findings of the old orders, expired by the next run

    def key(r: Any) -> set[tuple[Any, ...]]:
        return {(f["order_id"], f["kind"], f["hop"], f["from_hop"], tuple(f["objects"]))
                for f in r.active()}  # fmt: skip

    before = reconcile(s, cfg, as_of=NOW)
    assert {f[0] for f in key(before)} == {"new-x"}
    res = prune(s.engine, CUT, keep_after=KEEP)
    assert res.events == 3 * 6 + 2 and res.findings >= 1  # the old orders' expired findings
    after = reconcile(s, cfg, as_of=NOW)
    assert key(after) == key(before)
    assert after.summary == before.summary
    assert after.run["events"] == before.run["events"]
    s.close()


def test_a_prune_killed_midway_loses_nothing_and_the_next_one_finishes(
    store_url: str, tmp_path: Path
) -> None:
    s = Store(store_url)
    n = 6000
    batch = [ev(f"k{i}", f"K{i % 2000}", "checkout", NOW - 200 * D + i * 60_000_000,
                item=[f"KI{i % 2000}"], parcel=[f"KP{i % 500}"]) for i in range(n)]  # fmt: skip
    batch += [ev(f"n{i}", f"K{i}", "shipped", NOW - 3 * D + i, item=[f"KI{i}"]) for i in range(300)]
    s.write_batch(batch)
    keep_events = set(
        q(f"SELECT source, event_id FROM events WHERE occurred_at >= {CUT}", store_url)
    )
    full = one("SELECT count(*) FROM event_objects", store_url)
    (tmp_path / "ordertrail.toml").write_text(PIPELINE)
    cmd = [sys.executable, "-m", "ordertrail", "--config", str(tmp_path / "ordertrail.toml"),
           "--db", store_url, "prune", "--before", str(us_to_iso(CUT)), "--batch-size", "100"]  # fmt: skip
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and p.poll() is None:
        if one("SELECT count(*) FROM event_objects", store_url) < full * 3 // 4:
            break
        time.sleep(0.01)
    killed = p.poll() is None
    if killed:
        os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert killed, "prune finished before it could be killed; make the store bigger"
    # nothing that stays was lost
    assert keep_events <= set(q("SELECT source, event_id FROM events", store_url))
    assert 0 < one("SELECT count(*) FROM event_objects", store_url) < full
    if store_url.startswith("sqlite"):  # every transaction left the store whole
        assert_consistent(store_url)
    done = subprocess.run([*cmd, "--format", "json"], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert set(q("SELECT source, event_id FROM events", store_url)) == keep_events
    assert_consistent(store_url)
    assert one("SELECT count(*) FROM links WHERE link_kind = ''", store_url) == 300
    s.close()


# -- PostgreSQL: partitions, migration, identity --------------------------------------------


def test_months() -> None:
    jan = 1_767_225_600_000_000  # 2026-01-01
    assert month_of(jan) == 672 and month_of(jan - 1) == 671
    assert month_range(672) == (jan, jan + 31 * D)
    assert partition_name(672) == "events_2026_01" and partition_name(-1) == "events_1969_12"
    assert partition_name(-12 * 1971 - 1) == "events_n0002_12"


def test_prune_drops_whole_months_on_postgresql(pg_url: str) -> None:
    s = Store(pg_url)
    old1, old2 = month_of(NOW - 200 * D), month_of(NOW - 150 * D)
    s.write_batch([ev(f"m{i}", f"M{i}", "checkout", t, item=[f"MI{i}"])
                   for i, t in enumerate([NOW - 200 * D, NOW - 200 * D + H, NOW - 150 * D,
                                          CUT - H, NOW - D])])  # fmt: skip
    with s.engine.connect() as c:
        assert events_partitioned(c)
        names = [p.name for p in partitions(c)]
    assert partition_name(old1) in names and partition_name(old2) in names
    dry = prune(s.engine, CUT, keep_after=KEEP, dry_run=True)
    assert dry.partitions == [partition_name(m) for m in range(old1, month_of(CUT))
                              if partition_name(m) in names]  # fmt: skip
    res = prune(s.engine, CUT, keep_after=KEEP)
    assert res.partitions == dry.partitions and res.events == 4 and res.links == 4
    with s.engine.connect() as c:
        left = [p for p in partitions(c)]
    assert all(p.hi > CUT for p in left)
    for name in res.partitions:  # dropped, not left detached
        assert one("SELECT to_regclass(:n)::text", pg_url, n=name) is None
    assert [r[0] for r in q("SELECT event_id FROM events", pg_url)] == ["m4"]
    assert_consistent(pg_url)
    # the pruned identities are forgotten: a redelivered old record is stored anew (and its
    # month made again); a kept one is still a no-op
    r = s.write_batch([ev("m0", "M0", "checkout", NOW - 200 * D, item=["MI0"]),
                       ev("m4", "M4", "checkout", NOW - D, item=["MI4"])])  # fmt: skip
    assert (r.stored, r.redelivered) == (1, 1)
    assert_consistent(pg_url)
    s.close()


def test_a_month_left_detached_by_a_dead_prune_is_finished(pg_url: str) -> None:
    s = Store(pg_url)
    s.write_batch([ev("a", "A", "checkout", NOW - 200 * D, item=["IA"]),
                   ev("b", "B", "checkout", NOW - D, item=["IA"])])  # fmt: skip
    name = partition_name(month_of(NOW - 200 * D))
    lo, hi = month_range(month_of(NOW - 200 * D))
    with s.engine.begin() as c:  # as a prune leaves it when killed right after the detach
        c.execute(text(f"COMMENT ON TABLE {name} IS "
                       f"'ordertrail events partition: pruning [{lo}, {hi}) done to -1'"))  # fmt: skip
        c.execute(text(f"ALTER TABLE events DETACH PARTITION {name}"))
    res = prune(s.engine, CUT, keep_after=KEEP)
    assert res.partitions == [name] and res.events == 1 and res.links_moved == 0
    assert one("SELECT to_regclass(:n)::text", pg_url, n=name) is None
    assert_consistent(pg_url)
    s.close()


def test_migration_partitions_an_existing_store_and_keeps_identities(pg_url: str) -> None:
    engine = make_engine(pg_url)
    migrate(engine, "0005")
    engine.dispose()
    old = Store(pg_url, create=False)  # a store made before 0006: a plain events table
    first = [ev(f"e{i}", f"O{i % 7}", "checkout", NOW - i * 20 * D, item=[f"I{i % 5}"])
             for i in range(12)]  # fmt: skip
    assert old.write_batch(first).stored == 12
    with old.engine.connect() as c:
        assert not events_partitioned(c)
    seq = old.max_ingest_seq()
    old.close()
    s = Store(pg_url)  # opening migrates
    with s.engine.connect() as c:
        assert events_partitioned(c)
        months = {month_of(p.lo) for p in partitions(c)}
    assert {month_of(e.occurred_at) for e in first} <= months
    assert s.count_events() == 12 and s.max_ingest_seq() == seq
    assert_consistent(pg_url)
    r = s.write_batch([*first, ev("new", "O1", "payment", NOW - D)])  # redelivered after it
    assert (r.stored, r.redelivered) == (1, 12)
    assert s.max_ingest_seq() > seq and s.count_events() == 13
    # renamed (ingest --replace) and deleted events take their identities along (triggers)
    with s.engine.begin() as c:
        c.execute(text("UPDATE events SET event_id = 'renamed' WHERE event_id = 'e3'"))
        c.execute(text("DELETE FROM events WHERE event_id = 'e4'"))
    assert set(q("SELECT source, event_id FROM event_ids", pg_url)) == set(
        q("SELECT source, event_id FROM events", pg_url)
    )
    assert s.write_batch(first[3:5]).stored == 2
    s.close()


def test_status_verify_passes_on_a_partitioned_store(pg_url: str, tmp_path: Path) -> None:
    s = linked_store(pg_url)
    prune(s.engine, CUT, keep_after=KEEP)
    s.close()
    r = invoke(tmp_path, "--db", pg_url, "status", "--verify", "--format", "json")
    out = orjson.loads(r.stdout)
    assert r.exit_code == 0 and out["ok"] and out["problems"] == [], out


# -- the command --------------------------------------------------------------------------------


def test_cli_prune_dry_run_json_and_errors(store_url: str, tmp_path: Path) -> None:
    (tmp_path / "ordertrail.toml").write_text(PIPELINE)
    linked_store(store_url).close()
    r = invoke(tmp_path, "--db", store_url, "prune", "--dry-run", "--format", "json")
    assert r.exit_code == 0, r.stderr
    out = orjson.loads(r.stdout)
    assert out["dry_run"] and out["removed"]["events"] == 4 and out["before"].startswith("20")
    assert one("SELECT count(*) FROM events", store_url) == 8
    r = invoke(tmp_path, "--db", store_url, "prune")
    assert r.exit_code == 0, r.stderr
    assert "Removed what was older than" in r.stdout and "(retention 90d)" in r.stdout
    assert "events" in r.stdout and "quarantine" in r.stdout
    assert one("SELECT count(*) FROM events", store_url) == 4
    # inside the lookback window: refused, one line, exit 2
    r = invoke(tmp_path, "--db", store_url, "prune", "--before", "10d")
    assert r.exit_code == 2 and "inside the lookback window (30d" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = invoke(tmp_path, "--db", store_url, "prune", "--before", "yesterday-ish")
    assert r.exit_code == 2 and "--before: not a time: 'yesterday-ish'" in r.stderr
    assert r.stderr.count("\n") == 1
    bare = tmp_path / "bare"
    bare.mkdir()
    r = invoke(bare, "--db", store_url, "prune")
    assert r.exit_code == 2 and r.stderr.startswith("Error: prune needs the pipeline's config")
    # without a config the lookback is unknown: a default one could cut into the real window
    r = invoke(bare, "--db", store_url, "prune", "--before", "40d", "--format", "json")
    assert r.exit_code == 2 and "prune needs the pipeline's config" in r.stderr
    assert r.stderr.count("\n") == 1 and one("SELECT count(*) FROM events", store_url) == 4
    # a store that is not there (a typo) is an error, and none is created, not even by a dry run
    typo = tmp_path / "typo.db"
    r = invoke(tmp_path, "--db", f"sqlite:///{typo}", "prune", "--before", "120d", "--dry-run")
    assert r.exit_code == 2 and f"no store at {typo}" in r.stderr
    assert r.stderr.count("\n") == 1 and not list(tmp_path.glob("typo.db*"))


def test_prune_warns_when_it_cuts_into_the_latest_runs_window(
    store_url: str, tmp_path: Path
) -> None:
    """The guard is measured from now; a run as of an earlier time read a window reaching
    below the cut: a warning says so (an adversarial probe saw every active finding expire)."""
    (tmp_path / "ordertrail.toml").write_text(PIPELINE)
    linked_store(store_url).close()
    r = invoke(tmp_path, "--db", store_url, "prune", "--dry-run")
    assert r.exit_code == 0 and r.stderr == ""  # no run yet: nothing to warn about
    old = us_to_iso(NOW - 70 * D)  # its window reaches back to now - 100d, below the cut
    assert invoke(tmp_path, "--db", store_url, "reconcile", "--as-of", old).exit_code == 0
    r = invoke(tmp_path, "--db", store_url, "prune", "--dry-run")
    assert r.exit_code == 0
    assert r.stderr.startswith("warning: this removes events the latest run (1, as of ")
    assert r.stderr.count("\n") == 1
    assert invoke(tmp_path, "--db", store_url, "reconcile").exit_code == 0  # as of now
    r = invoke(tmp_path, "--db", store_url, "prune", "--dry-run")
    assert r.exit_code == 0 and r.stderr == ""


def test_retention_shorter_than_the_lookback_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "ordertrail.toml").write_text(PIPELINE.replace('"90d"', '"7d"'))
    r = invoke(tmp_path, "--db", f"sqlite:///{tmp_path / 's.db'}", "prune")
    assert r.exit_code == 2
    assert r.stderr.strip().endswith(
        "store.retention: must be at least the pipeline's lookback (30d), not 7d"
    ), r.stderr
    assert r.stderr.count("\n") == 1


def test_a_second_prune_is_told_at_once(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ordertrail.store.retention as retention

    monkeypatch.setattr(retention, "LOCK_WAIT", 0.3)
    s = Store(store_url)
    if store_url.startswith("sqlite"):
        fd = os.open(str(tmp_path / "store.db") + "-prune.lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        release = lambda: os.close(fd)  # noqa: E731
    else:
        holder = create_engine(store_url, isolation_level="AUTOCOMMIT").connect()
        holder.execute(text(f"SELECT pg_advisory_lock({_PRUNE_LOCK})"))

        def release() -> None:
            holder.execute(text(f"SELECT pg_advisory_unlock({_PRUNE_LOCK})"))
            holder.invalidate()

    (tmp_path / "ordertrail.toml").write_text(PIPELINE)
    try:
        with pytest.raises(PruneBusy, match="another ordertrail prune is running"):
            prune(s.engine, CUT, keep_after=KEEP)
        r = invoke(tmp_path, "--db", store_url, "prune", "--before", "100d")
        assert r.exit_code == 3 and r.stderr.startswith("Error: another ordertrail prune")
    finally:
        release()
    assert prune(s.engine, CUT, keep_after=KEEP).events == 0
    s.close()


def test_ingest_prunes_after_itself_when_configured(store_url: str, tmp_path: Path) -> None:
    cfg = PIPELINE.replace('retention = "90d"', 'retention = "90d"\nprune_after_ingest = true')
    cfg += """
[[sources]]
name = "orders"
kind = "file"
path = "in/*.jsonl"
hop_field = "stage"
order_id = "order"
event_id = "id"
timestamp = "ts"
"""
    (tmp_path / "ordertrail.toml").write_text(cfg)
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", [
        {"id": "old", "order": "o1", "stage": "checkout", "ts": (NOW - 120 * D) // 1_000_000},
        {"id": "new", "order": "o2", "stage": "checkout", "ts": (NOW - 2 * D) // 1_000_000},
    ])  # fmt: skip
    r = invoke(tmp_path, "--db", store_url, "ingest", "--format", "json")
    assert r.exit_code == 0, r.stderr
    out = orjson.loads(r.stdout)
    assert out["sources"][0]["stored"] == 2 and out["pruned"]["removed"]["events"] == 1
    assert [x[0] for x in q("SELECT event_id FROM events", store_url)] == ["new"]
    r = invoke(tmp_path, "--db", store_url, "ingest")
    assert r.exit_code == 0 and "Removed what was older than" in r.stdout
