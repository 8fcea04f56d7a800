"""The engine against the oracle: on the hand-written cases and on generated pipelines and event
sets, the engine's findings must equal the oracle's exactly — on SQLite and on PostgreSQL.

The oracle (tests/oracle.py) is a plain, one-order-at-a-time reading of DESIGN.md written apart
from the engine. ``ORDERTRAIL_ORACLE_EXAMPLES`` sets the generated cases per store (default
2,000; ``bench/oracle.py`` runs a larger profile)."""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ordertrail.reconcile import reconcile
from ordertrail.schemas.config import parse_config
from ordertrail.schemas.event import OrderEvent
from ordertrail.store import Checkpoint, Store
from tests.oracle import oracle_findings
from tests.oracle_cases import CASES
from tests.pipeline_strategies import cases

EXAMPLES = int(os.environ.get("ORDERTRAIL_ORACLE_EXAMPLES", "2000"))
# shrinking a failure of these big strategies can take many minutes; skip it when iterating
PHASES = (
    [Phase.explicit, Phase.reuse, Phase.generate]
    if os.environ.get("ORDERTRAIL_ORACLE_NOSHRINK")
    else list(Phase)
)
TABLES = (
    "events", "event_objects", "links", "quarantine", "checkpoints", "runs", "findings",
    "pending_orders", "incidents",
)  # fmt: skip


def engine_config(raw: dict[str, Any], part_orders: int | None = None) -> Any:
    """The oracle's config with the mapping keys our parser requires (events are written
    directly, so the mapping itself is never used); ``part_orders`` splits the orders into hash
    parts that small, so the cross-part step is exercised."""
    doc = copy.deepcopy(raw)
    if part_orders:
        doc["engine"] = {"part_orders": part_orders}
    for i, s in enumerate(doc.get("sources", [])):
        s.setdefault("kind", "file")
        s.setdefault("path", f"never/{i}/*.jsonl")
        s.setdefault("order_id", "order")
        s.setdefault("timestamp", "t")
    return parse_config(doc)


def _iso_us(s: str) -> int:
    dt = datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC)
    d = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def normalize(findings: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    out = []
    for f in findings:
        since = f["since"] if isinstance(f["since"], int) else _iso_us(f["since"])
        out.append(
            (
                f["order_id"] or "",
                f["kind"],
                f["hop"],
                f["from_hop"] or "",
                f.get("field") or "",
                tuple(sorted(f.get("objects") or ())),
                since,
            )
        )
    return sorted(out)


def run_engine(
    store: Store, case: dict[str, Any], part_orders: int | None = None
) -> list[tuple[Any, ...]]:
    cfg = engine_config(case["config"], part_orders)
    with store.engine.begin() as conn:
        for t in TABLES:
            conn.exec_driver_sql(f"DELETE FROM {t}")
    evs = [
        OrderEvent(
            event_id=e["event_id"], order_id=e.get("order_id") or "", hop=e["hop"],
            occurred_at=int(e["occurred_at"]), source=e["source"], phase=e.get("phase", "completed"),
            attributes=dict(e.get("attributes") or {}), objects={k: list(v) for k, v in (e.get("objects") or {}).items() if v},
            source_ref=f"case:{k}",
        )
        for k, e in enumerate(case["events"])
    ]  # fmt: skip
    cps = [
        Checkpoint(s, "", {}, wm)
        for s, wm in (case.get("watermarks") or {}).items()
        if wm is not None
    ]
    store.write_batch(events=evs, checkpoints=cps)
    result = reconcile(store, cfg, as_of=int(case["as_of"]))
    return normalize(result.active())


def run_oracle(case: dict[str, Any]) -> list[tuple[Any, ...]]:
    return normalize(
        oracle_findings(
            case["config"], case["events"], int(case["as_of"]), case.get("watermarks") or {}
        )
    )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """One store per module and kind, emptied before each case (migrating per case is slow)."""
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path_factory.mktemp('oracle') / 'store.db'}")
        yield s
        s.close()
        return
    from sqlalchemy import create_engine, text

    from tests.conftest import _pg_problem, require_service

    base = str(require_service(request.getfixturevalue("pg_server"), _pg_problem, "PostgreSQL"))
    name = f"ot_oracle_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    s = Store(base.rsplit("/", 1)[0] + f"/{name}")
    yield s
    s.close()
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.mark.parametrize("part_orders", [None, 1], ids=["one-part", "an-order-a-part"])
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_engine_equals_oracle_on_hand_written_cases(
    shared_store: Store, case: dict[str, Any], part_orders: int | None
) -> None:
    assert run_engine(shared_store, case, part_orders) == run_oracle(case)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
    derandomize=False,
    print_blob=True,
    phases=PHASES,
)
@given(case=cases(), part_orders=st.sampled_from([None, None, 1, 2, 3]))
def test_engine_equals_oracle_on_generated_cases(
    shared_store: Store, case: dict[str, Any], part_orders: int | None
) -> None:
    got = run_engine(shared_store, case, part_orders)
    want = run_oracle(case)
    assert got == want, {
        "engine only": sorted(set(got) - set(want)),
        "oracle only": sorted(set(want) - set(got)),
    }
