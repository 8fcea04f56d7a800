"""Small builders shared by tests."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path
from typing import Any

import orjson

T0 = 1_772_366_400_000_000  # 2026-03-01T12:00:00Z in µs
MIN = 60_000_000


def write_jsonl(path: Path, records: list[Any], *, gz: bool = False, mode: str = "wb") -> None:
    data = b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in records)
    if gz:
        with gzip.open(path, mode) as fh:
            fh.write(data)
    else:
        with path.open(mode) as fh:
            fh.write(data)


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def rec(i: int, stage: str = "checkout", **kw: Any) -> dict[str, Any]:
    """A record for SMALL_CONFIG's 'orders' source."""
    r = {
        "id": f"ev-{stage}-{i}",
        "order": {"id": f"o-{i}"},
        "stage": stage,
        "ts": (T0 + i * 1_000_000) // 1000,
        "amount": 10 + i % 7,
    }
    r.update(kw)
    return r


def invoke(root: Path, *args: str) -> Any:
    """Run the CLI in ``root`` (as a user would from that folder) and return the click Result."""
    import os

    from click.testing import CliRunner

    from ordertrail.cli import cli

    old = os.getcwd()
    os.chdir(root)
    try:
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)
