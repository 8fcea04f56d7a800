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
from rich.text import Text

from ordertrail.cli.visible import visible, visible_text
from ordertrail.schemas.event import us_to_datetime, us_to_iso

__all__ = ["visible", "visible_text"]

PIPE_WIDTH = 100


def text(value: object, style: str | None = None) -> Text:
    """A cell or line of data: never interpreted as rich markup, control characters escaped."""
    return visible_text(str(value), style or "")


def stdout_console() -> Console:
    """A console for results: colour only on a terminal; ``$COLUMNS`` (default 100) wide when
    piped."""
    term = sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
    if term:
        return Console(highlight=False)
    try:
        width = max(40, int(os.environ.get("COLUMNS", PIPE_WIDTH)))
    except ValueError:
        width = PIPE_WIDTH
    return Console(
        file=sys.stdout,
        width=width,
        no_color=True,
        color_system=None,
        highlight=False,
        force_terminal=False,
        soft_wrap=False,
    )


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


class Bar:
    """What a progress bar offers its work: ``bar(n)`` advances by n units, ``bar.set(done,
    stage)`` jumps to ``done`` units and names the stage."""

    def __init__(self, progress: Progress, task: Any, description: str):
        self._p, self._task, self._description = progress, task, description

    def __call__(self, n: int) -> None:
        self._p.advance(self._task, n)

    def set(self, done: float, stage: str | None = None) -> None:
        desc = f"{self._description}: {stage}" if stage else self._description
        self._p.update(self._task, completed=done, description=desc)


@contextmanager
def progress_bar(description: str, total: int | None, unit: str = "") -> Iterator[Bar]:
    """A rich progress bar with a percentage on a terminal (stderr); a no-op in pipes and batch
    jobs. ``unit`` "bytes" shows no counts; otherwise the counts follow the percentage."""
    console = stderr_console()
    enabled = console.is_terminal and not os.environ.get("CI")
    cols: list[Any] = [
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
    ]
    if unit not in ("bytes", "%") and total:
        cols.append(MofNCompleteColumn())
    cols += [TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*cols, console=console, disable=not enabled, transient=False) as p:
        task = p.add_task(description, total=total)
        yield Bar(p, task, description)


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
        t.add_row(*(x if isinstance(x, Text) else text(x) for x in r))
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
