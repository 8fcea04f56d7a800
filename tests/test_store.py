"""The store on SQLite and PostgreSQL: idempotent writes, checkpoints, migrations."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, select

from ordertrail.errors import ConfigError, StoreError
from ordertrail.schemas.event import OrderEvent, QuarantineRecord
from ordertrail.store import Checkpoint, Store, tables
from ordertrail.store.engine import current_revision, make_engine, migrate
from tests.helpers import T0


def ev(i: int, **kw: object) -> OrderEvent:
    base: dict[str, object] = {
        "event_id": f"e{i}",
        "order_id": f"o{i}",
        "hop": "checkout",
        "occurred_at": T0 + i,
        "source": "s",
        "source_ref": f"f:{i}",
    }
    base.update(kw)
    return OrderEvent(**base)  # type: ignore[arg-type]


def test_redelivery_is_a_counted_no_op(store: Store) -> None:
    r1 = store.write_batch([ev(1), ev(2), ev(2)])
    assert (r1.stored, r1.redelivered) == (2, 1)
    r2 = store.write_batch([ev(1), ev(3)])
    assert (r2.stored, r2.redelivered) == (1, 1)
    assert store.count_events() == 3
    # the same id from another source is another event
    assert store.write_batch([ev(1, source="other")]).stored == 1


def test_unicode_and_long_ids_round_trip(store: Store) -> None:
    ids = ["Mary Sethwamy-Smithson", "李小龍", "z" * 300, "Ünïcödé 😀"]
    store.write_batch(
        [ev(i, order_id=o, attributes={"customer.name": o}) for i, o in enumerate(ids)]
    )
    for o in ids:
        [e] = store.order_events(o)
        assert e.order_id == o and e.attributes == {"customer.name": o}


def test_ingest_seq_is_monotonic(store: Store) -> None:
    store.write_batch([ev(i) for i in range(5)])
    store.write_batch([ev(i) for i in range(5, 9)])
    with store.engine.connect() as c:
        rows = c.execute(
            select(tables.events.c.event_id).order_by(tables.events.c.ingest_seq)
        ).all()
    assert [r[0] for r in rows] == [f"e{i}" for i in range(9)]


def test_quarantine_is_idempotent(store: Store) -> None:
    q = QuarantineRecord("s", "f:3", "malformed JSON", '{"x":')
    assert store.write_batch(quarantined=[q]).quarantined == 1
    assert store.write_batch(quarantined=[q]).quarantined == 0
    assert store.count_quarantine() == 1
    [row] = store.quarantine_rows()
    assert (row["source_ref"], row["reason"], row["raw"]) == ("f:3", "malformed JSON", '{"x":')


def test_checkpoints_upsert_and_keep_watermark(store: Store) -> None:
    store.write_batch(checkpoints=[Checkpoint("s", "", {"a": 1}, 100)])
    store.write_batch(checkpoints=[Checkpoint("s", "", {"a": 2})])
    cp = store.checkpoints("s")[""]
    assert cp.position == {"a": 2} and cp.watermark == 100
    assert store.watermarks() == {"s": 100}


def test_batch_is_atomic(store: Store) -> None:
    bad = ev(1, hop=None)  # NOT NULL violation inside the batch
    with pytest.raises(StoreError):
        store.write_batch([ev(2), bad], checkpoints=[Checkpoint("s", "f", {"offset": 9})])
    assert store.count_events() == 0
    assert store.checkpoints("s") == {}


def test_schema_indexes(store: Store) -> None:
    idx = {i["name"] for i in inspect(store.engine).get_indexes("events")}
    assert {"ix_events_occurred", "ix_events_trace"} <= idx
    assert current_revision(store.engine) is not None


def test_old_store_upgrades_in_place(store_url: str) -> None:
    engine = make_engine(store_url)
    migrate(engine, "0001")
    assert current_revision(engine) == "0001"
    with engine.begin() as c:
        c.execute(
            tables.events.insert().values(
                event_id="old",
                source="s",
                order_id="o-old",
                order_bucket=1,
                hop="checkout",
                phase="completed",
                occurred_at=T0,
                source_ref="x:1",
                attributes="{}",
                ingested_at=T0,
            )
        )
    engine.dispose()
    s = Store(store_url)  # opening migrates to head
    from alembic.script import ScriptDirectory

    from ordertrail.store.engine import alembic_config

    head = ScriptDirectory.from_config(alembic_config(s.engine)).get_current_head()
    assert current_revision(s.engine) == head
    assert [e.event_id for e in s.order_events("o-old")] == ["old"]
    s.close()


def test_unreachable_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot reach store"):
        Store("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(ConfigError, match="not a database URL"):
        Store("not a url")
    with pytest.raises(ConfigError, match="folder of the SQLite store does not exist"):
        Store(f"sqlite:///{tmp_path}/missing/dir/x.db")


def test_head_revision_constant_matches_the_migrations() -> None:
    from alembic.script import ScriptDirectory

    from ordertrail.store.engine import HEAD_REVISION, alembic_config, make_engine

    head = ScriptDirectory.from_config(alembic_config(make_engine("sqlite://"))).get_current_head()
    assert head == HEAD_REVISION
