"""Property: every record ends as an event, in quarantine, or as a counted redelivery."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ordertrail.collectors import file_sources, ingest_file_source
from ordertrail.schemas.config import load_config
from ordertrail.store import Store
from tests.conftest import SMALL_CONFIG

_counter = itertools.count()

ids = st.one_of(st.text(min_size=0, max_size=40), st.integers(), st.none(), st.just("x" * 300))
times = st.one_of(
    st.integers(min_value=0, max_value=4_102_444_800_000),
    st.sampled_from(["2026-03-01T12:00:00Z", "2026-03-01T12:00:00+05:30", "garbage", ""]),
    st.none(),
    st.floats(allow_nan=True),
)
good = st.fixed_dictionaries(
    {
        "order": st.fixed_dictionaries({"id": ids}),
        "ts": times,
        "stage": st.sampled_from(["checkout", "payment", "shipping", "nowhere"]),
        "phase": st.sampled_from(["completed", "started", "failed", "FAILED", "weird"]),
        "amount": st.one_of(st.floats(allow_nan=False), st.text(max_size=5)),
    }
)
line = st.one_of(
    good.map(lambda d: json.dumps(d).encode()),  # stdlib: also ints beyond 64 bits
    st.binary(max_size=30).filter(lambda b: b"\n" not in b and b"\r" not in b and b.strip()),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    records=st.lists(line, min_size=1, max_size=40), repeat=st.lists(st.integers(0, 39), max_size=8)
)
def test_counts_add_up(tmp_path: Path, records: list[bytes], repeat: list[int]) -> None:
    d = tmp_path / f"case{next(_counter)}"
    (d / "in").mkdir(parents=True)
    (d / "ordertrail.toml").write_text(SMALL_CONFIG)
    # some records delivered twice (a producer retry)
    records = records + [records[i] for i in repeat if i < len(records)]
    (d / "in" / "a.jsonl").write_bytes(b"".join(r + b"\n" for r in records))
    cfg = load_config(d / "ordertrail.toml")
    with Store(f"sqlite:///{d / 's.db'}") as s:
        [src] = [x for x in file_sources(cfg) if x.name == "orders"]
        r = ingest_file_source(s, cfg, src, batch_size=5)
        assert r.records == len(records)
        assert r.stored + r.quarantined + r.redelivered == r.records
        assert s.count_events() == r.stored
        assert s.count_quarantine() == r.quarantined


def test_huge_integer_ids_stay_exact(tmp_path: Path) -> None:
    d = tmp_path
    (d / "in").mkdir()
    (d / "ordertrail.toml").write_text(SMALL_CONFIG)
    big = 123456789012345678901234567890
    (d / "in" / "a.jsonl").write_text(
        json.dumps({"order": {"id": big}, "stage": "checkout", "ts": 1}) + "\n"
    )
    cfg = load_config(d / "ordertrail.toml")
    with Store(f"sqlite:///{d / 's.db'}") as s:
        [src] = [x for x in file_sources(cfg) if x.name == "orders"]
        ingest_file_source(s, cfg, src)
        assert [e.order_id for e in s.order_events(str(big))] == [str(big)]
