"""``ordertrail prune``: remove what is older than ``[store] retention`` (see
``ordertrail.store.retention``), and the summary ``ingest`` prints when it prunes too."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import click

from ordertrail.cli.main import CliError, cli
from ordertrail.cli.render import fmt_int, fmt_time, print_json, progress_bar, stdout_console, table
from ordertrail.cli.state import AppState
from ordertrail.errors import ConfigError


def resolve_cut(before: str | None, retention: int | None, lookback: int, now: int, tz: str) -> int:
    """The time before which prune removes: --before (a time, or a duration ago such as
    ``120d``), else now - retention; never inside the lookback window. Errors are one line,
    exit 2."""
    from ordertrail.collectors.timestamps import TimestampError, parse_timestamp, zone
    from ordertrail.schemas.durations import format_duration, parse_duration

    if before is None:
        if retention is None:
            raise ConfigError(
                'not set: set it (e.g. retention = "90d" under [store]) or pass --before',
                key="store.retention",
            )
        cut = now - retention
    else:
        try:
            cut = now - parse_duration(before)
        except ValueError:
            try:
                cut = now if before == "now" else parse_timestamp(before, zone(tz))
            except TimestampError:
                raise CliError(
                    f"--before: not a time: {before!r} (use ISO-8601, epoch seconds or a "
                    "duration ago such as 120d)",
                    2,
                ) from None
    if cut > now - lookback:
        raise CliError(
            f"--before: {fmt_time(cut)} UTC is inside the lookback window "
            f"({format_duration(lookback)}, from {fmt_time(now - lookback)} UTC): prune never "
            "removes what reconcile reads",
            2,
        )
    return cut


def _warn_if_the_last_run_read(store: Any, cut: int, lookback: int) -> None:
    """The window guard is measured from now; a run as of an earlier time read a window that
    may reach below the cut: say so (its findings there expire at the next such run)."""
    from ordertrail.reconcile.runs import last_run

    with store.engine.connect() as conn:
        run = last_run(conn, None)
    if run is not None and cut > run["as_of"] - lookback:
        click.echo(
            f"warning: this removes events the latest run ({run['id']}, as of "
            f"{fmt_time(run['as_of'])} UTC) judged, back to {fmt_time(run['as_of'] - lookback)} "
            "UTC: a run as of that time would see them gone and expire its findings on them",
            err=True,
        )


@contextmanager
def prune_progress() -> Iterator[Callable[[int, int, str], None]]:
    """A progress bar with a percentage on a terminal, opened once the total is known; quiet
    in pipes and batch jobs."""
    with ExitStack() as stack:
        bar: list[Any] = []

        def report(done: int, total: int, stage: str) -> None:
            if not bar:
                bar.append((stack.enter_context(progress_bar("prune", total or None)), total))
            b, fixed = bar[0]
            b.set(min(done, fixed) if fixed else done, stage)

        yield report


def print_prune(res: Any, retention: str | None = None) -> None:
    """What a prune removed, per table (a dry run: what it would remove)."""
    console = stdout_console()
    why = f" (retention {retention})" if retention else ""
    if res.dry_run:
        head = f"Dry run: would remove what is older than {fmt_time(res.before)} UTC{why}"
    else:
        head = f"Removed what was older than {fmt_time(res.before)} UTC{why} in {res.seconds:.1f}s"
    console.print(head + ":", markup=False)
    notes = {
        "links": f"{fmt_int(res.links_moved)} more kept: a later stored event shows them",
        "findings": "resolved or expired",
    }
    if res.partitions:
        notes["events"] = f"{len(res.partitions)} monthly partition(s) dropped whole"
    rows = [(t, fmt_int(n), notes.get(t, "")) for t, n in res.removed.items()]
    col = "would remove" if res.dry_run else "removed"
    console.print(table(None, ["table", col, "note"], rows))
    if res.partitions:
        verb = "would drop" if res.dry_run else "dropped"
        console.print(f"PostgreSQL partitions {verb}: {', '.join(res.partitions)}", markup=False)


@cli.command()
@click.option(
    "--before",
    metavar="TIME",
    help="Remove what is older than this time (ISO-8601, epoch seconds, or a duration ago such "
    "as 120d); default: now - [store] retention.",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be removed.")
@click.option(
    "--batch-size",
    default=50_000,
    show_default=True,
    type=click.IntRange(100),
    help="Rows per transaction.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.pass_obj
def prune(state: AppState, before: str | None, dry_run: bool, batch_size: int, fmt: str) -> None:
    """Remove events, links and quarantine rows older than [store] retention.

    Events older than the cut go with their object rows; a link goes when no stored event shows
    it any more (else it keeps the earliest that does); quarantine rows go by the time they were
    received; findings no longer active (resolved, expired) go by their ``since``. Nothing inside
    the lookback window is ever removed. Works in batches, one transaction each: a prune that is
    stopped or killed leaves the store whole, and the next one carries on. On PostgreSQL whole
    months of events are dropped as partitions. Prints what it removed per table; --dry-run
    only counts. A second prune on the same store exits 3 (after up to 5 s)."""
    from ordertrail.schemas.durations import format_duration
    from ordertrail.store.retention import prune as run_prune
    from ordertrail.store.writer import now_us

    cfg = state.maybe_config()
    if cfg is None:
        # without the pipeline's lookback a default one could cut into the store's real window
        raise ConfigError(
            "prune needs the pipeline's config (its lookback window is never pruned): pass "
            "--config PATH or run it where ordertrail.toml is"
        )
    settings = cfg.pipeline
    retention = cfg.retention
    now = now_us()
    cut = resolve_cut(before, retention, settings.lookback, now, settings.timezone)
    store = state.existing_store("prune")
    _warn_if_the_last_run_read(store, cut, settings.lookback)
    with prune_progress() as report:
        res = run_prune(
            store.engine,
            cut,
            keep_after=now - settings.lookback,
            dry_run=dry_run,
            batch_size=batch_size,
            progress=report,
        )
    if fmt == "json":
        print_json(res.as_dict())
        return
    print_prune(res, format_duration(retention) if retention and before is None else None)


class AfterIngest:
    """What ``ingest`` shows of the prune it ran (``[store] prune_after_ingest``), if any."""

    def __init__(self, res: Any, retention: int | None):
        self.res, self.retention = res, retention

    def json(self) -> dict[str, Any]:
        return {"pruned": self.res.as_dict()} if self.res else {}

    def print(self) -> None:
        if self.res:
            from ordertrail.schemas.durations import format_duration

            print_prune(self.res, format_duration(self.retention) if self.retention else None)


def after_ingest(store: Any, cfg: Any) -> AfterIngest:
    from ordertrail.collectors.runner import prune_after_ingest

    with prune_progress() as report:
        res = prune_after_ingest(store, cfg, report)
    return AfterIngest(res, cfg.retention)
