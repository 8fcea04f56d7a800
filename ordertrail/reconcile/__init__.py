"""The reconciliation engine: window -> per-order state (through objects and links) -> one
rule per finding kind -> findings, incidents, runs."""

from __future__ import annotations

from ordertrail.reconcile.engine import RunResult, fail_matches, judge_times, parse_shard, reconcile
from ordertrail.reconcile.rules import INFORMATIONAL, KINDS

__all__ = [
    "INFORMATIONAL",
    "KINDS",
    "RunResult",
    "fail_matches",
    "judge_times",
    "parse_shard",
    "reconcile",
]
