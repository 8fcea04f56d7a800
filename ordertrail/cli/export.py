"""``ordertrail export --parquet DIR``: the reconciliation window as Parquet files, for
``reconcile --engine spark --parquet DIR`` (or any tool that reads Parquet)."""

from __future__ import annotations

import click

from ordertrail.cli.main import cli, parse_time_option
from ordertrail.cli.render import fmt_int, progress_bar, stdout_console, visible
from ordertrail.cli.state import AppState


@cli.command()
@click.option(
    "--parquet",
    "directory",
    required=True,
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Folder to write (empty, or holding an earlier export, which is replaced).",
)
@click.option(
    "--as-of",
    "as_of",
    metavar="TIME",
    help="The window's end (ISO-8601 or epoch; default now).",
)
@click.pass_obj
def export(state: AppState, directory: str, as_of: str | None) -> None:
    """Write the lookback window ending at --as-of as Parquet: its events, the objects they
    name, the links and the attributes the rules compare, with a manifest (as_of, window
    start, config fingerprint, watermarks). Memory stays flat whatever the window's size."""
    from ordertrail.reconcile.parquet import export_window

    cfg = state.config()
    when = parse_time_option(as_of, "--as-of", cfg.pipeline.timezone)
    store = state.store()
    with progress_bar("export", 100, unit="%") as bar:

        def on_progress(stage: str, done: int, total: int) -> None:
            bar.set(100 * done / max(total, 1), stage)

        m = export_window(store, cfg, directory, as_of=when, progress=on_progress)
    stdout_console().print(
        f"exported the window {_iso(m.lo)} .. {_iso(m.as_of)}: {fmt_int(m.rows['ev'])} events, "
        f"{fmt_int(m.rows['me'])} object mentions, {fmt_int(m.rows['li'])} links -> "
        f"{visible(directory)}",
        markup=False,
    )


def _iso(us: int) -> str:
    from ordertrail.schemas.event import us_to_iso

    return str(us_to_iso(us))
