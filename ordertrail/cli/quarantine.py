"""``ordertrail quarantine list|show|replay``: see quarantined records and why, and re-map them
through the current config after a fix."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.text import Text

from ordertrail.cli.main import CliError, cli
from ordertrail.cli.render import fmt_time, print_json, progress_bar, stdout_console
from ordertrail.cli.state import AppState
from ordertrail.cli.visible import text_table, visible_text

if TYPE_CHECKING:
    from ordertrail.collectors.replay import ReplayReport
    from ordertrail.store.quarantine import QuarantineRow

# collectors.replay.DEFAULT_BATCH (a test keeps them equal): the CLI is built without importing
# the collectors or the store, so that --help and other commands start fast
DEFAULT_BATCH = 1000

_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)


@cli.group(invoke_without_command=True)
@click.pass_context
def quarantine(ctx: click.Context) -> None:
    """Inspect quarantined records and re-map them after a config fix.

    Without a subcommand: the same as 'quarantine list'.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_)


@quarantine.command("list")
@click.argument("source", required=False)
@click.option(
    "--reason", metavar="TEXT", help="Only records whose reason contains TEXT (any case)."
)
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1), help="Records shown."
)
@_FORMAT
@click.pass_obj
def list_(
    state: AppState, source: str | None, reason: str | None, limit: int, fmt: str = "table"
) -> None:
    """Quarantined records (oldest first) with their reasons and refs, and counts by reason."""
    from ordertrail.store.quarantine import count_rows, list_rows, reason_counts

    store = state.store()
    total = count_rows(store, source, reason)
    rows = list_rows(store, source, reason, limit=limit)
    by_reason = _by_reason(reason_counts(store, source, reason))
    if fmt == "json":
        print_json({
            "total": total,
            "shown": len(rows),
            "by_reason": [{"source": s, "reason": r, "count": n} for (s, r), n in by_reason],
            "records": [r.as_dict() for r in rows],
        })  # fmt: skip
        return
    console = stdout_console()
    if not total:
        what = " matching" if reason else ""
        console.print(Text(f"no{what} records in quarantine" + (f" of {source}" if source else "")))
        return
    console.print(
        text_table(
            "Quarantine by reason",
            ["source", "count", "reason"],
            [(s, f"{n:,}", r) for (s, r), n in by_reason[:20]],
            numeric={"count"},
        )
    )
    if len(by_reason) > 20:
        console.print(Text(f"… and {len(by_reason) - 20} more reasons"))
    console.print(
        text_table(
            "Records",
            ["id", "source", "source_ref", "received (UTC)", "reason"],
            [(str(r.id), r.source, r.source_ref, fmt_time(r.received_at), r.reason) for r in rows],
            numeric={"id"},
        )
    )
    more = f"; --limit {total} shows all" if total > len(rows) else ""
    console.print(
        Text(f"{len(rows):,} of {total:,} shown{more}; one in full: ordertrail quarantine show ID")
    )


def _by_reason(rows: list[tuple[str, str, int]]) -> list[tuple[tuple[str, str], int]]:
    """Counts per (source, reason without the record's values), most frequent first."""
    from ordertrail.collectors.reasons import reason_key

    counts: Counter[tuple[str, str]] = Counter()
    for source, reason, n in rows:
        counts[(source, reason_key(reason))] += n
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


@quarantine.command()
@click.argument("row_id", metavar="ID", type=int)
@_FORMAT
@click.pass_obj
def show(state: AppState, row_id: int, fmt: str) -> None:
    """One quarantined record in full: its reason, source, ref, when it was received, the raw
    record (control characters shown as escapes), and what the current config makes of it."""
    from ordertrail.collectors.replay import outcome_of
    from ordertrail.store.quarantine import get_row

    store = state.store()
    row = get_row(store, row_id)
    if row is None:
        raise CliError(f"no quarantined record with id {row_id}", 1)
    now = outcome_of(store, state.maybe_config(), row)
    if fmt == "json":
        print_json({**row.as_dict(), "now": now.as_dict() if now else None})
        return
    console = stdout_console()
    _print_row(console, row)
    if now is not None:
        words = {
            "stored": "would be stored: ",
            "filtered": "would be filtered: ",
            "quarantined": "would stay in quarantine: ",
            "not_replayable": "cannot be replayed: ",
        }
        console.print(_field("now", Text(words[now.kind]) + visible_text(now.detail)))


def _field(name: str, value: str | Text) -> Text:
    out = Text(f"{name + ':':<10}", style="bold")
    out.append(value if isinstance(value, Text) else visible_text(value))
    return out


def _print_row(console: Console, row: QuarantineRow) -> None:
    console.print(_field("id", str(row.id)))
    console.print(_field("source", row.source))
    console.print(_field("ref", row.source_ref))
    console.print(_field("received", f"{fmt_time(row.received_at)} UTC"))
    console.print(_field("reason", row.reason))
    console.print(Text("raw:", style="bold"))
    console.print(visible_text(row.raw), soft_wrap=False, overflow="fold")


@quarantine.command("replay")
@click.argument("source", required=False)
@click.option("--dry-run", is_flag=True, help="Say what would happen; change nothing.")
@click.option(
    "--batch-size",
    default=DEFAULT_BATCH,
    show_default=True,
    type=click.IntRange(1),
    help="Records per store transaction.",
)
@_FORMAT
@click.pass_obj
def replay_(state: AppState, source: str | None, dry_run: bool, batch_size: int, fmt: str) -> None:
    """Re-map quarantined records (of SOURCE, or all) through the current config: store what
    maps now (the same events a clean ingest stores), drop from quarantine what the source's
    `where` filters now (counted as filtered), keep the rest with their current reason. One
    transaction per batch; replaying again changes nothing."""
    from ordertrail.collectors.replay import replay
    from ordertrail.store.quarantine import count_rows

    cfg = state.config()
    store = state.store()
    if source is not None:
        cfg.source(source)  # an unknown source is a config error, before any work
    total = count_rows(store, source)
    with progress_bar("replay quarantine", total or None) as advance:
        reports = replay(
            store, cfg, source, batch_size=batch_size, dry_run=dry_run, on_progress=advance
        )
    if fmt == "json":
        print_json({"dry_run": dry_run, "sources": [r.as_dict() for r in reports]})
        return
    print_replay(reports, dry_run)


def print_replay(reports: list[ReplayReport], dry_run: bool) -> None:
    from ordertrail.collectors.reasons import reason_key

    console = stdout_console()
    if not reports:
        console.print(Text("nothing in quarantine"))
        return
    keys = ["examined", "stored", "redelivered", "filtered", "kept", "not replayable"]
    rows: list[tuple[Any, ...]] = []
    for r in reports:
        vals = (
            r.examined,
            r.stored,
            r.redelivered,
            r.filtered,
            r.kept,
            sum(r.not_replayable.values()),
        )
        rows.append((r.source, *(f"{v:,}" for v in vals)))
    title = "Replay (dry run: nothing changed)" if dry_run else "Replay"
    console.print(text_table(title, ["source", *keys], rows, numeric=set(keys)))
    would = "would be" if dry_run else "were"
    for r in reports:
        if r.filtered:
            counted = (
                ""
                if dry_run or r.filtered_counted == r.filtered
                else f" ({r.filtered - r.filtered_counted:,} not added: no count kept for their part)"
            )
            console.print(
                visible_text(
                    f"{r.source}: {r.filtered:,} record(s) now filtered by `where` {would} removed "
                    f"from quarantine and counted as filtered{counted}"
                )
            )
        if r.redelivered:
            console.print(
                visible_text(
                    f"{r.source}: {r.redelivered:,} record(s) mapped to events already stored"
                )
            )
        if r.reasons_changed:
            console.print(
                visible_text(f"{r.source}: {r.reasons_changed:,} record(s) stay with a new reason")
            )
        for why, n in sorted(r.not_replayable.items(), key=lambda x: -x[1]):
            console.print(visible_text(f"{r.source}: {n:,} not replayable: {why}"))
        kept = Counter[str]()
        for reason, n in r.kept_reasons.items():
            kept[reason_key(reason)] += n
        for reason, n in kept.most_common(5):
            console.print(visible_text(f"{r.source}: still quarantined {n:,} × {reason}"))
