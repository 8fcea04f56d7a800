"""The oracle returns exactly the hand-worked findings of every scenario in oracle_cases."""

from __future__ import annotations

from typing import Any

import pytest

from tests.oracle import oracle_findings
from tests.oracle_cases import CASES


def test_case_names_are_unique() -> None:
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_oracle_case(case: dict[str, Any]) -> None:
    got = oracle_findings(case["config"], case["events"], case["as_of"], case["watermarks"])
    assert got == case["expected"]
