"""Click commands. No business logic here: parse options, call the library, render."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from ordertrail import __version__
from ordertrail.cli.render import (
    fmt_int,
    fmt_time,
    print_json,
    progress_bar,
    stdout_console,
    table,
)
from ordertrail.cli.state import AppState
from ordertrail.errors import ConfigError, OrdertrailError

logger = logging.getLogger("ordertrail")


class CliError(click.ClickException):
    """A domain error shown as one line, with the exit code DESIGN.md gives its kind."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]


class OrdertrailGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OrdertrailError as e:
            state = ctx.obj
            if isinstance(state, AppState) and state.debug:
                raise
            raise CliError(str(e), e.exit_code) from None


@click.group(cls=OrdertrailGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    envvar="ORDERTRAIL_CONFIG",
    help="Config file (default: ./ordertrail.toml).",
)
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    envvar="ORDERTRAIL_DB_URL",
    help="Store URL, e.g. sqlite:///ordertrail.db or postgresql+psycopg://…",
)
@click.option("--debug", is_flag=True, help="Log verbosely and show tracebacks.")
@click.version_option(__version__, prog_name="ordertrail")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, db_url: str | None, debug: bool) -> None:
    """ordertrail finds lost orders: it collects the events of every hop of an order
    pipeline into one store and says which orders stalled, vanished or were confirmed
    without being fulfilled — and where."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ctx.obj = AppState(config_path=config_path, db_url=db_url, debug=debug)


# -- init ------------------------------------------------------------------------------------


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing ordertrail.toml.")
def init(directory: str, force: bool) -> None:
    """Write an example ordertrail.toml into DIRECTORY."""
    from ordertrail.schemas.example import EXAMPLE_CONFIG

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    target = d / "ordertrail.toml"
    if target.exists() and not force:
        raise click.UsageError(f"{target} exists; use --force to overwrite it")
    target.write_text(EXAMPLE_CONFIG, encoding="utf-8")
    click.echo(f"wrote {target}")


# -- ingest ----------------------------------------------------------------------------------


@cli.command()
@click.argument("sources", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Ingest every file source (the default).")
@click.option(
    "--batch-size",
    default=20_000,
    show_default=True,
    type=click.IntRange(1),
    help="Records per store transaction.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.pass_obj
def ingest(
    state: AppState, sources: tuple[str, ...], all_: bool, batch_size: int, fmt: str
) -> None:
    """Read file sources once, from their checkpoints to the end (resumable)."""
    from ordertrail.collectors import file_sources

    if sources and all_:
        raise click.UsageError("name sources or use --all, not both")
    cfg = state.config()
    chosen = file_sources(cfg, sources)
    if not chosen:
        raise ConfigError("no file sources in the config", path=cfg.path)
    store = state.store()
    reports = [_ingest_one(store, cfg, s, batch_size) for s in chosen]
    if fmt == "json":
        print_json({"sources": [r.as_dict() for r in reports]})
        return
    print_ingest_summary(reports)


def _ingest_one(store: Any, cfg: Any, source: Any, batch_size: int) -> Any:
    from ordertrail.collectors import FileSource, ingest_file_source

    total = FileSource(source).total_bytes(store.checkpoints(source.name))
    with progress_bar(f"ingest {source.name}", total or None, unit="bytes") as advance:
        return ingest_file_source(store, cfg, source, batch_size=batch_size, on_progress=advance)


def print_ingest_summary(reports: list[Any]) -> None:
    console = stdout_console()
    rows: list[tuple[str, ...]] = [
        (
            r.source,
            fmt_int(r.files),
            fmt_int(r.records),
            fmt_int(r.stored),
            fmt_int(r.redelivered),
            fmt_int(r.quarantined),
            f"{r.seconds:.2f}",
        )
        for r in reports
    ]
    tot = [
        sum(getattr(r, k) for r in reports)
        for k in ("files", "records", "stored", "redelivered", "quarantined")
    ]
    rows.append(("total", *(fmt_int(x) for x in tot), f"{sum(r.seconds for r in reports):.2f}"))
    cols = ["source", "files", "records", "stored", "redelivered", "quarantined", "seconds"]
    console.print(table("Ingest", cols, rows))
    for r in reports:
        if r.pending_lines:
            console.print(
                f"{r.source}: {r.pending_lines} unfinished last line(s) left for the next run"
            )
        for reason, n in sorted(r.reasons.items(), key=lambda x: -x[1]):
            console.print(f"{r.source}: quarantined {n:,} × {reason}")


# -- status ----------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.pass_obj
def status(state: AppState, fmt: str) -> None:
    """Show sources, watermarks, lag, event counts and quarantine."""
    from ordertrail.report import store_status

    st = store_status(state.store(), state.maybe_config())
    if fmt == "json":
        print_json(st.as_dict())
        return
    console = stdout_console()
    rows = []
    for s in st.sources:
        if "files" in s.checkpoint:
            cp = f"{s.checkpoint['files_read']}/{s.checkpoint['files']} files read"
        else:
            cp = ", ".join(f"{k} {v}" for k, v in s.checkpoint.items()) or "-"
        lag = "-" if s.lag is None else f"{s.lag:,} {s.lag_unit}".strip()
        rows.append(
            (
                s.name,
                s.kind,
                fmt_int(s.events),
                fmt_int(s.quarantined),
                fmt_time(s.watermark),
                cp,
                lag,
            )
        )
    console.print(
        table(
            "Sources",
            ["source", "kind", "events", "quarantined", "watermark (UTC)", "checkpoint", "lag"],
            rows,
        )
    )
    console.print(
        f"{st.events:,} events of {st.orders:,} orders; {st.quarantine:,} records in quarantine"
    )


# -- demo ------------------------------------------------------------------------------------


@cli.command()
@click.option("--orders", default=5000, show_default=True, type=click.IntRange(10))
@click.option("--seed", default=7, show_default=True, type=int)
@click.option(
    "--dir",
    "directory",
    default="ordertrail-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the demo writes its files and store.",
)
@click.pass_obj
def demo(state: AppState, orders: int, seed: int, directory: str) -> None:
    """Simulate a faulty pipeline, ingest it, reconcile, show what was caught."""
    from ordertrail.collectors import file_sources
    from ordertrail.schemas.config import load_config
    from ordertrail.simulation import Simulation
    from ordertrail.store import Store

    root = Path(directory)
    if (root / "data").exists():
        shutil.rmtree(root / "data")
    root.mkdir(parents=True, exist_ok=True)
    sim = Simulation(orders=orders, seed=seed)
    res = sim.run(root)
    console = stdout_console()
    console.print(
        f"Simulated {res.orders:,} orders ({res.events:,} events, {res.malformed} malformed "
        f"records) in {root}/data; faults injected: {sum(res.faults.values()):,}"
    )
    cfg = load_config(res.config_path)
    if state.db_url:
        url = state.db_url
    else:
        db = root / "ordertrail.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{db.resolve()}"
    with Store(url) as store:
        reports = [_ingest_one(store, cfg, s, 20_000) for s in file_sources(cfg)]
        print_ingest_summary(reports)
        _demo_reconcile(store, cfg, res, console)
    console.print(f"Explore it: cd {root} && ordertrail status")


def _demo_reconcile(store: Any, cfg: Any, res: Any, console: Any) -> None:
    """Reconcile the demo store and compare with the injected faults (once the engine exists)."""
    return


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="ordertrail")
