"""An incremental run equals a full run: on generated pipelines and event sets, a store that ran
in full, took more events (some late, some from before the window, some from the future) and
ran incrementally later must report exactly what the same store reports with a full second
run — findings with their status, evidence and detail, the run's counts, the in-flight orders.
On SQLite and on PostgreSQL. ``ORDERTRAIL_INCREMENTAL_EXAMPLES`` sets the cases per store (default 100; 300 is the thorough
run, see the README)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from ordertrail.reconcile import reconcile
from ordertrail.reconcile.incremental import cache_path
from ordertrail.schemas.event import OrderEvent
from ordertrail.store import Checkpoint, Store
from tests.oracle_cases import CASES
from tests.pipeline_strategies import GRID, cases
from tests.test_engine_vs_oracle import TABLES, engine_config, shared_store  # noqa: F401

EXAMPLES = int(os.environ.get("ORDERTRAIL_INCREMENTAL_EXAMPLES", "100"))
PHASES = (
    [Phase.explicit, Phase.reuse, Phase.generate]
    if os.environ.get("ORDERTRAIL_ORACLE_NOSHRINK")
    else list(Phase)
)


def _events(events: list[dict[str, Any]], first: int) -> list[OrderEvent]:
    return [
        OrderEvent(
            event_id=e["event_id"], order_id=e.get("order_id") or "", hop=e["hop"],
            occurred_at=int(e["occurred_at"]), source=e["source"],
            phase=e.get("phase", "completed"), attributes=dict(e.get("attributes") or {}),
            objects={k: list(v) for k, v in (e.get("objects") or {}).items() if v},
            source_ref=f"case:{first + k}",
        )
        for k, e in enumerate(events)
    ]  # fmt: skip


def _reset(store: Store) -> None:
    with store.engine.begin() as conn:
        for t in TABLES:
            conn.exec_driver_sql(f"DELETE FROM {t}")
    path = cache_path(store)
    if path is not None:
        for p in (path, Path(f"{path}.tmp")):
            p.unlink(missing_ok=True)


def _observable(store: Store, result: Any) -> dict[str, Any]:
    run = {k: v for k, v in result.run.items() if k not in ("id", "seconds", "mode", "incremental")}
    with store.engine.connect() as conn:
        pending = sorted(
            tuple(r) for r in conn.execute(text("SELECT order_id, due FROM pending_orders"))
        )
    return {
        "run": run,
        "summary": result.summary,
        "findings": result.findings,
        "incidents": result.incidents,
        "states": result.states,
        "pending": pending,
    }


def history(store: Store, case: dict[str, Any], split: list[bool], steps: list[int],
            incremental: bool) -> list[dict[str, Any]]:  # fmt: skip
    """Run 1 in full on the events marked False, then store the others and run again at each
    later step (in full, or incrementally); the observable outcome of every run."""
    _reset(store)
    cfg = engine_config(case["config"])
    evs = case["events"]
    first = [e for e, later in zip(evs, split, strict=True) if not later]
    rest = [e for e, later in zip(evs, split, strict=True) if later]
    cps = [Checkpoint(s, "", {}, wm) for s, wm in (case.get("watermarks") or {}).items()
           if wm is not None]  # fmt: skip
    store.write_batch(events=_events(first, 0), checkpoints=cps)
    as_of = int(case["as_of"])
    out = []
    r = reconcile(store, cfg, as_of=as_of - steps[0] * GRID, incremental=incremental)
    out.append(_observable(store, r))
    # the rest arrive in as many batches as there are later runs
    chunks = [rest[i :: len(steps) - 1] for i in range(len(steps) - 1)] if len(steps) > 1 else []
    for k, step in enumerate(steps[1:]):
        store.write_batch(events=_events(chunks[k], len(first) + 1000 * (k + 1)), checkpoints=[])
        r = reconcile(store, cfg, as_of=as_of - step * GRID, incremental=incremental)
        if incremental and "incremental" in r.run:
            assert r.run["incremental"]["cache"], r.run
        out.append(_observable(store, r))
    return out


def _compare(store: Store, case: dict[str, Any], split: list[bool], steps: list[int]) -> None:
    full = history(store, case, split, steps, incremental=False)
    inc = history(store, case, split, steps, incremental=True)
    for k, (a, b) in enumerate(zip(full, inc, strict=True)):
        for key in a:
            assert a[key] == b[key], (k, key, a[key], b[key])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_incremental_equals_full_on_hand_written_cases(
    shared_store: Store,  # noqa: F811
    case: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    n = len(case["events"])
    # the second half of the events arrives after the first run, which is an hour earlier
    _compare(shared_store, case, [i >= n // 2 for i in range(n)], [12, 0])


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
    print_blob=True,
    phases=PHASES,
)
@given(case=cases(), data=st.data())
def test_incremental_equals_full_on_generated_cases(
    shared_store: Store,  # noqa: F811
    case: dict[str, Any],
    data: st.DataObject,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    n = len(case["events"])
    split = data.draw(st.lists(st.booleans(), min_size=n, max_size=n), label="later")
    steps = sorted(data.draw(st.lists(st.integers(0, 40), min_size=2, max_size=4)), reverse=True)
    _compare(shared_store, case, split, steps)


def test_a_batch_that_commits_late_is_never_missed_on_postgresql(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL numbers events before their batch commits: a batch holding a lower ingest_seq
    can commit after one holding a higher. An incremental run waits for open batches before it
    takes its high-water mark, so the late batch is neither missed now nor skipped later."""
    import threading
    import time

    from ordertrail.schemas.config import parse_config
    from ordertrail.store.writer import insert_events

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cfg = parse_config(
        {
            "pipeline": {"lookback": "30d"},
            "hops": [{"name": "a", "next": ["b"], "within": "1h"}, {"name": "b"}],
            "sources": [{"name": "s", "kind": "file", "path": "x", "hop_field": "h",
                         "order_id": "o", "timestamp": "t"}],
        }
    )  # fmt: skip
    t0 = 1_767_225_600_000_000
    hour = 3_600_000_000

    def ev(order: str, hop: str, at: int) -> OrderEvent:
        return OrderEvent(event_id=f"{order}-{hop}", order_id=order, hop=hop, occurred_at=at,
                          source="s", source_ref=f"{order}:{hop}")  # fmt: skip

    with Store(pg_url) as store:
        as_of = t0 + 10 * hour
        store.write_batch(
            events=[ev("o1", "a", t0), ev("o1", "b", t0 + 60_000_000)],
            checkpoints=[Checkpoint("s", "", {}, as_of + 10)],
        )
        reconcile(store, cfg, as_of=as_of, incremental=True)
        # the late batch takes its number first and stays open; a later one commits at once
        late = store.engine.connect()
        tx = late.begin()
        insert_events(late, [ev("late", "a", t0)])
        store.write_batch(events=[ev("early", "a", t0)])
        done: dict[str, Any] = {}
        th = threading.Thread(
            target=lambda: done.update(r=reconcile(store, cfg, as_of=as_of + 1, incremental=True))
        )
        th.start()
        time.sleep(1.0)
        assert th.is_alive(), "the run took its high-water mark while a batch was still open"
        tx.commit()
        late.close()
        th.join(60)
        got = {(f["order_id"], f["kind"]) for f in done["r"].findings}
        assert {("late", "stalled"), ("early", "stalled")} <= got, done["r"].findings
        assert done["r"].run["incremental"]["cache"]
        # and the next incremental run equals a full one
        inc = reconcile(store, cfg, as_of=as_of + 2, incremental=True)
        full = reconcile(store, cfg, as_of=as_of + 3)
        assert {(f["order_id"], f["kind"], f["status"]) for f in inc.findings} == {
            (f["order_id"], f["kind"], f["status"]) for f in full.findings
        }
