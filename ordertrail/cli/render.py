"""Rendering for the CLI: rich on a terminal, plain and 100 columns wide in a pipe."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC
from typing import Any

import orjson
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ordertrail.schemas.event import us_to_datetime, us_to_iso

PIPE_WIDTH = 100


def stdout_console() -> Console:
    """A console for results: colour only on a terminal; 100 columns when piped."""
    term = sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
    if term:
        return Console(highlight=False)
    return Console(
        file=sys.stdout,
        width=PIPE_WIDTH,
        no_color=True,
        color_system=None,
        highlight=False,
        force_terminal=False,
        soft_wrap=False,
    )


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


@contextmanager
def progress_bar(description: str, total: int | None, unit: str = "") -> Iterator[Any]:
    """A rich progress bar on a terminal (stderr); a no-op in pipes and batch jobs."""
    console = stderr_console()
    enabled = console.is_terminal and not os.environ.get("CI")
    cols: list[Any] = [TextColumn("[bold]{task.description}"), BarColumn()]
    cols.append(MofNCompleteColumn() if unit != "bytes" else TextColumn("{task.percentage:>5.1f}%"))
    cols += [TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*cols, console=console, disable=not enabled, transient=False) as p:
        task = p.add_task(description, total=total)

        def advance(n: int) -> None:
            p.advance(task, n)

        yield advance


def fmt_time(us: int | None, tz: Any = UTC) -> str:
    if us is None:
        return "-"
    return us_to_datetime(us).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def iso(us: int | None) -> str | None:
    return us_to_iso(us)


def fmt_int(n: int | float | None) -> str:
    return "-" if n is None else f"{n:,}"


def table(
    title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], **kw: Any
) -> Table:
    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False, **kw)
    for c in columns:
        if c.lower() in _NUMERIC:
            t.add_column(c, justify="right", overflow="fold")
        else:
            t.add_column(c, justify="left", overflow="fold")
    for r in rows:
        t.add_row(*(str(x) for x in r))
    return t


_NUMERIC = {
    "events",
    "quarantined",
    "records",
    "stored",
    "redelivered",
    "orders",
    "lag",
    "count",
    "injected",
    "caught",
    "missed",
    "extra",
    "seconds",
    "files",
    "filtered",
}


def print_json(obj: Any) -> None:
    import click

    click.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
