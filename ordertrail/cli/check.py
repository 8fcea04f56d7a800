"""``ordertrail check``: map sample records of each source with the current config, store
nothing, show what would be stored, filtered or quarantined and why, with hints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.text import Text

from ordertrail.cli.main import CliError, cli
from ordertrail.cli.render import fmt_time, print_json, stdout_console
from ordertrail.cli.state import AppState
from ordertrail.cli.visible import text_table, visible_text

if TYPE_CHECKING:
    from ordertrail.collectors.check import ReasonCount, SourceCheck

# collectors.check.DEFAULT_SAMPLE (a test keeps them equal): the CLI is built without importing
# the collectors, so that --help and other commands start fast
DEFAULT_SAMPLE = 1000


@cli.command()
@click.argument("sources", nargs=-1)
@click.option(
    "--sample",
    default=DEFAULT_SAMPLE,
    show_default=True,
    type=click.IntRange(1),
    help="Records to read per source.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.pass_obj
def check(state: AppState, sources: tuple[str, ...], sample: int, fmt: str) -> None:
    """Map sample records of each source (all, or the named ones) with the current config and
    store nothing: show what would be stored, filtered or quarantined, why, and hints.

    File sources are read from the start of their files (checkpoints untouched), Kafka sources
    by a consumer with no group that commits nothing; OTLP sources cannot be sampled. Exits 4
    when a source would quarantine more than its ``max_quarantine`` share or its path matches no
    file, 3 when a source cannot be read.
    """
    from ordertrail.collectors.check import check_sources

    cfg = state.config()
    results = check_sources(cfg, sources, sample)
    if fmt == "json":
        print_json({"ok": all(r.ok for r in results), "sample": sample,
                    "sources": [r.as_dict() for r in results]})  # fmt: skip
    else:
        print_check(results, sample)
    errors = [r for r in results if r.error]
    if errors:
        raise CliError("; ".join(str(r.error) for r in errors), 3)
    failing = [_why_failing(r) for r in results if not r.ok]
    if failing:
        raise CliError("; ".join(failing), 4)


def _why_failing(r: SourceCheck) -> str:
    if r.no_files:
        return f"{r.source}: path matches no file"
    top = f": {r.reasons[0].reason}" if r.reasons else ""
    return (
        f"{r.source} would quarantine {r.quarantine_share:.0%} of its sampled records "
        f"(max_quarantine {r.max_quarantine:.0%}){top}"
    )


def _result(r: SourceCheck) -> str:
    if r.error:
        return "cannot read"
    if not r.sampleable:
        return "not sampled"
    if r.no_files:
        return "no file"
    if r.over_share:
        return "over max_quarantine"
    return "hints" if r.hints else "ok"


def print_check(results: list[SourceCheck], sample: int) -> None:
    console = stdout_console()
    cols = [
        "source",
        "kind",
        "sampled",
        "stored",
        "filtered",
        "quarantined",
        "share",
        "max",
        "result",
    ]
    rows: list[tuple[Any, ...]] = []
    for r in results:
        share = f"{r.quarantine_share:.0%}" if r.sampled - r.filtered > 0 else "-"
        rows.append((r.source, r.kind, f"{r.sampled:,}", f"{r.stored:,}", f"{r.filtered:,}",
                     f"{r.quarantined:,}", share, f"{r.max_quarantine:.0%}", _result(r)))  # fmt: skip
    nums = {"sampled", "stored", "filtered", "quarantined", "share", "max"}
    title = f"Check: up to {sample:,} records per source, mapped with the current config; nothing stored"
    console.print(text_table(title, cols, rows, numeric=nums))
    for r in results:
        _print_source(console, r)


def _line(*parts: str | Text, style: str = "") -> Text:
    out = Text(style=style)
    for p in parts:
        out.append(p if isinstance(p, Text) else visible_text(p))
    return out


def _print_source(console: Console, r: SourceCheck) -> None:
    head = f"{r.source} ({r.kind})"
    if r.files is not None:
        head += (
            f": {r.sampled:,} records from {len(r.files):,} file{'s' if len(r.files) != 1 else ''}"
        )
    elif r.sampleable and not r.error:
        head += f": {r.sampled:,} records"
    console.print()
    console.print(_line(head, style="bold"))
    if r.error:
        console.print(_line("  cannot read: ", r.error))
    if r.note:
        console.print(_line("  ", r.note))
    if r.hops:
        console.print(_line("  hops: ", ", ".join(f"{h} {n:,}" for h, n in r.hops.items())))
    if r.first is not None:
        console.print(_line(f"  times: {fmt_time(r.first)} UTC … {fmt_time(r.last)} UTC"))
    _print_reasons(console, "would be quarantined", r.quarantined, r.reasons)
    _print_reasons(console, "would be filtered by where", r.filtered, r.filter_reasons)
    if r.hints:
        console.print(_line("  hints:"))
        for h in r.hints:
            console.print(_line("  - ", h.message))


def _print_reasons(console: Console, what: str, total: int, reasons: list[ReasonCount]) -> None:
    if not reasons:
        return
    console.print(_line(f"  {what}: {total:,}"))
    for rc in reasons:
        console.print(_line(f"    {rc.count:,} × ", rc.reason))
        console.print(
            _line("      e.g. ", rc.example.source_ref, "  ", rc.example.raw or "", style="dim")
        )
    shown = sum(rc.count for rc in reasons)
    if shown < total:
        console.print(_line(f"    … and {total - shown:,} more for other reasons"))
