"""``ordertrail backup FILE``, ``ordertrail restore FILE`` and the ``status --verify`` report.

The library (``ordertrail.store.backup``) does the work; these commands resolve the store the
way every command does (--db, $ORDERTRAIL_DB_URL, the config's store, ./ordertrail.db) without
opening it through ``Store`` — that would migrate it, and a backup or a check must not change
the store it reads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ordertrail.cli.main import CliError, cli
from ordertrail.cli.render import (
    fmt_int,
    print_json,
    stderr_console,
    stdout_console,
    table,
)
from ordertrail.cli.state import AppState

logger = logging.getLogger(__name__)

_STAGES = {
    "copy": "copying the store",
    "check": "checking integrity",
    "checksum": "checksum",
    "archive": "writing the archive",
    "read": "reading the backup",
    "migrate": "migrating the copy",
    "replace": "replacing the store",
}


def store_url(state: AppState) -> str:
    """The store URL every command uses, without opening (and migrating) the store."""
    cfg = state.maybe_config()
    from ordertrail.store.engine import resolve_url

    return resolve_url(state.db_url, cfg.store_url if cfg else None)


@contextmanager
def stage_progress() -> Iterator[Any]:
    """A progress callback: one line per stage, a percentage where the amount is known;
    nothing in pipes and batch jobs."""
    console = stderr_console()
    enabled = console.is_terminal and not os.environ.get("CI")
    cols = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
    ]
    with Progress(*cols, console=console, disable=not enabled, transient=False) as p:
        tasks: dict[str, Any] = {}
        current: list[str] = []

        def report(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                if current:  # the stage before is over
                    t = tasks[current[-1]]
                    p.update(t, total=p.tasks[t].total or 1, completed=p.tasks[t].total or 1)
                tasks[stage] = p.add_task(_STAGES.get(stage, stage), total=total)
                current.append(stage)
            p.update(tasks[stage], completed=done, total=total)

        yield report
        if current:
            t = tasks[current[-1]]
            p.update(t, total=p.tasks[t].total or 1, completed=p.tasks[t].total or 1)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite FILE when it exists.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.pass_obj
def backup(state: AppState, file: Path, force: bool, fmt: str) -> None:
    """Write a consistent copy of the SQLite store into FILE while it stays in use.

    FILE is one tar archive (gzip-compressed when it ends in .gz or .tgz): a manifest (schema
    revision, row counts, max ingest_seq, SHA-256 of the database) and the database. A
    PostgreSQL store is backed up with pg_dump."""
    from ordertrail.store.backup import backup_sqlite, sqlite_store_path

    path = sqlite_store_path(store_url(state), "backup", str(file))
    with stage_progress() as report:
        result = backup_sqlite(path, file, force=force, progress=report)
    if fmt == "json":
        print_json(result.as_dict())
        return
    m = result.manifest
    click.echo(
        f"Backed up {path} to {file} ({_size(result.bytes)}, {result.seconds:.1f} s): "
        f"{m.facts.summary()}, {fmt_int(m.facts.quarantine)} quarantined, "
        f"{fmt_int(m.tables.get('runs', 0))} reconcile runs; schema {m.schema_revision}"
    )
    click.echo(f"SHA-256 of the database: {m.sha256}")


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--force",
    is_flag=True,
    help="Replace a store that is newer than the backup, or that cannot be read.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.pass_obj
def restore(state: AppState, file: Path, force: bool, fmt: str) -> None:
    """Replace the SQLite store with a backup, after verifying the backup completely.

    Checks the checksum, SQLite's integrity_check, the schema revision (an older one is
    migrated) and the row counts against the manifest; refuses a store that is newer than the
    backup (unless --force) or that another process has open. A PostgreSQL store is restored
    with pg_restore."""
    from ordertrail.store.backup import restore_sqlite, sqlite_store_path

    path = sqlite_store_path(store_url(state), "restore", str(file))
    with stage_progress() as report:
        result = restore_sqlite(file, path, force=force, progress=report)
    if fmt == "json":
        print_json(result.as_dict())
        return
    m = result.manifest
    was = (
        f"it replaced a store with {result.replaced.summary()}"
        if result.replaced
        else "there was no store before"
    )
    if result.forced:
        was = "it replaced (--force) a store: " + "; ".join(result.forced)
    migrated = (
        f"; schema migrated {result.migrated_from} -> {result.revision}"
        if result.migrated_from
        else ""
    )
    click.echo(
        f"Restored {file} (taken {m.as_dict()['created_at']}: {m.facts.summary()}) into "
        f"{path}; {was}{migrated}"
    )


def verify_status(state: AppState, fmt: str) -> None:
    """``status --verify``: check the store, list what was checked, exit 3 on a problem."""
    from ordertrail.store.backup import verify_store

    v = verify_store(store_url(state))
    if fmt == "json":
        print_json(v.as_dict())
    else:
        console = stdout_console()
        click.echo(f"Store check of {v.url}")
        if v.checks:
            console.print(table(None, ["check", "result"], list(v.checks.items())))
        for note in v.notes:
            click.echo(f"note: {note}")
        if v.problems:
            click.echo(f"{len(v.problems)} problem(s):")
            for p in v.problems:
                click.echo(f"  - {p}")
        else:
            click.echo("The store is sound.")
    if v.problems:
        more = f" (and {len(v.problems) - 1} more)" if len(v.problems) > 1 else ""
        raise CliError(f"store check failed: {v.problems[0]}{more}", 3)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n:,} bytes"
