"""The reconciliation engine: load -> per-order features -> classify -> findings, incidents, runs."""

from __future__ import annotations

from ordertrail.reconcile.classify import INFORMATIONAL, KINDS
from ordertrail.reconcile.engine import RunResult, fail_matches, judge_times, parse_shard, reconcile

__all__ = [
    "INFORMATIONAL",
    "KINDS",
    "RunResult",
    "fail_matches",
    "judge_times",
    "parse_shard",
    "reconcile",
]
