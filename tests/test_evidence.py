"""The cross-order evidence of vanished vs stalled against a brute force over every point."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ordertrail.reconcile.evidence import EdgeProgress
from ordertrail.reconcile.rules import iso, isos

times = st.integers(0, 40).map(float) | st.just(float("nan"))


@settings(max_examples=300, deadline=None)
@given(
    points=st.lists(st.tuples(times, times), max_size=70),
    queries=st.lists(st.tuples(st.integers(-1, 41).map(float), st.integers(-1, 41).map(float)),
                     max_size=30),
)  # fmt: skip
def test_moved_on_and_count_later_match_brute_force(
    points: list[tuple[float, float]], queries: list[tuple[float, float]]
) -> None:
    a = np.array([p[0] for p in points], dtype=float)
    b = np.array([p[1] for p in points], dtype=float)
    x = np.array([q[0] for q in queries], dtype=float)
    d = np.array([q[1] for q in queries], dtype=float)
    ep = EdgeProgress(a, b)
    kept = [(pa, pb) for pa, pb in points if not (np.isnan(pa) or np.isnan(pb))]
    want = [sum(1 for pa, pb in kept if pa > qx and pb > qd) for qx, qd in queries]
    assert ep.count_later(x, d).tolist() == want
    assert ep.moved_on(x, d).tolist() == [n > 0 for n in want]


def test_count_later_on_many_points_with_ties() -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(0, 300, 5000).astype(float)
    b = a + rng.integers(0, 200, 5000)
    x = rng.integers(0, 300, 400).astype(float)
    d = x + rng.integers(0, 300, 400)
    got = EdgeProgress(a, b).count_later(x, d)
    want = [int(((a > qx) & (b > qd)).sum()) for qx, qd in zip(x, d, strict=True)]
    assert got.tolist() == want


@settings(max_examples=500, deadline=None)
@given(
    xs=st.lists(
        st.integers(-62_135_596_800_000_000, 253_402_300_799_999_999)  # years 1..9999
        | st.integers(-(10**12), 10**12)
        | st.integers(0, 2_000_000_000).map(lambda s: s * 1_000_000),  # whole seconds
        max_size=20,
    ),
    floats=st.booleans(),
    nan=st.booleans(),
)
def test_evidence_times_formatted_as_a_column_match_one_by_one(
    xs: list[int], floats: bool, nan: bool
) -> None:
    if floats:  # the rules' times are float µs: exact only up to 2**53
        a = np.array(
            [x for x in xs if abs(x) < 2**53] + ([float("nan")] if nan else []), dtype=np.float64
        )
    else:
        a = np.array(xs, dtype=np.int64)
    got = isos(a)
    assert got == [iso(x) for x in a]
    assert all(x is None or type(x) is str for x in got)


def test_evidence_times_out_of_numpys_range_fail_as_one_by_one() -> None:
    with pytest.raises(ValueError, match="out of range"):
        isos(np.array([0, 253_402_300_800_000_000]))
