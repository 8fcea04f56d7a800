"""The oracle runs on generated cases, is deterministic, and ignores event order and redeliveries."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.oracle import oracle_findings
from tests.pipeline_strategies import cases

KINDS = {
    "vanished",
    "stalled",
    "confirmed_unfulfilled",
    "duplicate",
    "skipped",
    "orphan",
    "failed",
    "mismatch",
    "out_of_order",
    "late",
}


def run(case: dict[str, Any], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return oracle_findings(case["config"], events, case["as_of"], case["watermarks"])


def no_nulls(value: Any) -> bool:
    """TOML has no null: a generated config must not hold None anywhere."""
    if isinstance(value, dict):
        return all(no_nulls(v) for v in value.values())
    if isinstance(value, list):
        return all(no_nulls(v) for v in value)
    return value is not None


def sort_key(f: dict[str, Any]) -> tuple[Any, ...]:
    return (
        f["order_id"] or "",
        f["kind"],
        f["hop"],
        f["from_hop"] or "",
        f["field"] or "",
        f["objects"],
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), data=st.data())
def test_oracle_selfcheck(case: dict[str, Any], data: st.DataObject) -> None:
    assert no_nulls(case["config"])
    original = copy.deepcopy(case)
    got = run(case, case["events"])
    assert case == original, "the oracle must not modify its inputs"

    # well-formed and sorted
    assert got == sorted(got, key=sort_key)
    for f in got:
        assert set(f) == {"order_id", "kind", "hop", "from_hop", "since", "objects", "field"}
        assert f["kind"] in KINDS
        assert isinstance(f["since"], int)
        assert f["objects"] == sorted(set(f["objects"]))
        assert (f["field"] is not None) == (f["kind"] == "mismatch")
        if f["order_id"] is None:
            assert f["kind"] == "orphan" and len(f["objects"]) == 1

    # deterministic
    assert run(case, copy.deepcopy(case["events"])) == got

    # invariant under shuffling and redelivering events
    events = case["events"]
    shuffled = data.draw(st.permutations(events), label="shuffled")
    if events:
        extra = data.draw(st.lists(st.integers(0, len(events) - 1), max_size=6), label="redeliver")
        shuffled = shuffled + [copy.deepcopy(events[i]) for i in extra]
    assert run(case, shuffled) == got
