"""Click commands. No business logic here: parse options, call the library, render."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from ordertrail import __version__
from ordertrail.cli.render import (
    fmt_int,
    fmt_time,
    print_json,
    progress_bar,
    stdout_console,
    table,
    visible,
    visible_text,
)
from ordertrail.cli.state import AppState
from ordertrail.errors import ConfigError, OrdertrailError

logger = logging.getLogger("ordertrail")


class CliError(click.ClickException):
    """A domain error shown as one line, with the exit code DESIGN.md gives its kind."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(visible(message))  # it may quote data: never raw control characters
        self.exit_code = exit_code  # type: ignore[misc]


class OrdertrailGroup(click.Group):
    """Turns the library's errors — and a store or disk that fails under a command — into one
    line and the exit code DESIGN.md gives them (a traceback only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OrdertrailError as e:
            if _debugging(ctx):
                raise
            raise CliError(str(e), e.exit_code) from None
        except OSError as e:
            if _debugging(ctx) or e.errno is None:
                raise
            where = f": {e.filename}" if e.filename else ""
            raise CliError(f"{e.strerror or e}{where}", 3) from None
        except Exception as e:
            duckdb = sys.modules.get("duckdb")
            if duckdb is not None and isinstance(e, duckdb.OutOfMemoryException):
                if _debugging(ctx):
                    raise
                raise CliError(
                    f"DuckDB ran out of memory: {_first_line(e)}; raise [engine] memory or lower "
                    "[engine] part_orders",
                    3,
                ) from None
            # a store error: SQLAlchemy is loaded by then (not before: --help starts without it)
            exc = sys.modules.get("sqlalchemy.exc")
            if exc is None or not isinstance(e, exc.SQLAlchemyError) or _debugging(ctx):
                raise
            raise CliError(
                f"store error: {_first_line(getattr(e, 'orig', None) or e)}", 3
            ) from None


def _debugging(ctx: click.Context) -> bool:
    return isinstance(ctx.obj, AppState) and ctx.obj.debug


def _first_line(e: object) -> str:
    text_ = str(e).strip()
    return text_.splitlines()[0] if text_ else type(e).__name__


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
@click.option(
    "--from-start",
    is_flag=True,
    help="Read the files again from their start (nothing is stored twice).",
)
@click.option(
    "--replace",
    is_flag=True,
    help="With --from-start: replace the source's stored events by what its files give now "
    "(after a mapping change).",
)
@click.pass_obj
def ingest(
    state: AppState,
    sources: tuple[str, ...],
    all_: bool,
    batch_size: int,
    fmt: str,
    from_start: bool,
    replace: bool,
) -> None:
    """Read file sources once, from their checkpoints to the end (resumable).

    --from-start reads every file again; records already stored are counted as redelivered and
    quarantine rows of records that now map give way. --from-start --replace also replaces the
    source's stored events (and the links they showed) by what the current mapping makes of
    its files, batch by batch: a crash leaves each event as it was or replaced, and the next
    ingest carries on. Events from files that are gone are kept.

    Prints per source the counts, and the top quarantine reasons with their field path and
    one example (its source_ref).

    Exits 3 when a file could not be read (the others are ingested), 4 when a source sent
    more than its ``max_quarantine`` share of records to quarantine (a run of fewer than 20
    records is judged with the source's records before it).
    """
    from ordertrail.collectors import file_sources

    if sources and all_:
        raise click.UsageError("name sources or use --all, not both")
    if replace and not from_start:
        raise click.UsageError("--replace reads the files again: use it with --from-start")
    if replace and not (sources or all_):
        raise click.UsageError("--replace replaces stored events: name the sources (or --all)")
    cfg = state.config()
    chosen = file_sources(cfg, sources)
    if not chosen:
        raise ConfigError("no file sources in the config", path=cfg.path)
    store = state.store()
    reports = [
        _ingest_one(store, cfg, s, batch_size, from_start=from_start, replace=replace)
        for s in chosen
    ]
    pruned = _prune_after_ingest(store, cfg)  # [store] prune_after_ingest
    if fmt == "json":
        print_json({"sources": [r.as_dict() for r in reports], **pruned.json()})
    else:
        print_ingest_summary(reports)
        pruned.print()
    over = [over_max_quarantine(r) for r in reports if r.over_max_quarantine]
    unreadable = [(r.source, p, why) for r in reports for p, why in r.unreadable or ()]
    if unreadable:
        if over:
            click.echo(f"warning: {'; '.join(over)}", err=True)
        src, path, why = unreadable[0]
        more = f" (and {len(unreadable) - 1} more file(s))" if len(unreadable) > 1 else ""
        raise CliError(
            f"source {src}: could not read {path}: {why}{more}; everything else was ingested",
            3,
        )
    if over:
        raise CliError("; ".join(over), 4)


def _prune_after_ingest(store: Any, cfg: Any) -> Any:
    from ordertrail.cli.prune import after_ingest

    return after_ingest(store, cfg)


def _ingest_one(
    store: Any,
    cfg: Any,
    source: Any,
    batch_size: int,
    *,
    from_start: bool = False,
    replace: bool = False,
) -> Any:
    from ordertrail.collectors import FileSource, ingest_file_source

    fsrc = FileSource(source, batch_size=batch_size, from_start=from_start or replace)
    total = fsrc.total_bytes(store.checkpoints(source.name))  # gzip: compressed bytes
    with progress_bar(f"ingest {source.name}", total or None, unit="bytes") as advance:
        return ingest_file_source(
            store, cfg, source, on_progress=advance, replace=replace, fsrc=fsrc
        )


def over_max_quarantine(r: Any) -> str:
    """Why a source fails its ``max_quarantine``: the share, and the top reason with its field
    path and an example reference."""
    of = f"its last {round(r.judged_on()[0]):,} records" if r.widened() else "its records"
    msg = (
        f"{r.source} quarantined {r.judged_share():.0%} of {of} "
        f"(max_quarantine {r.max_quarantine:.0%})"
    )
    top = r.top_reasons(1)
    if top:
        msg += f": {top[0].reason}, e.g. {top[0].example.source_ref}"
    return msg


def print_ingest_summary(reports: list[Any]) -> None:
    """The counts per source, then per source what is worth a look: skipped files, pending
    lines, and the top quarantine reasons with their field path and an example reference.
    Every piece of data goes through :func:`visible_text` (never read as markup)."""
    console = stdout_console()
    keys = ("files", "records", "stored", "redelivered", "quarantined", "filtered")
    rows: list[tuple[str, ...]] = [
        (r.source, *(fmt_int(getattr(r, k)) for k in keys), f"{r.seconds:.2f}") for r in reports
    ]
    tot = [sum(getattr(r, k) for r in reports) for k in keys]
    rows.append(("total", *(fmt_int(x) for x in tot), f"{sum(r.seconds for r in reports):.2f}"))
    console.print(table("Ingest", ["source", *keys, "seconds"], rows))

    def say(line: str) -> None:
        console.print(visible_text(line))

    for r in reports:
        for path, why in r.unreadable or ():
            say(f"{r.source}: skipped {path}: {why}")
        if r.pending_lines:
            say(
                f"{r.source}: {r.pending_lines:,} line(s) at the end of a file still being "
                "written, left for the next run"
            )
        if r.blank_lines:
            say(f"{r.source}: {r.blank_lines:,} blank line(s)")
        if r.replaced or r.removed:
            say(
                f"{r.source}: replaced {r.replaced:,} stored event(s); removed {r.removed:,} "
                "that the files no longer give"
            )
        if r.withdrawn:
            say(
                f"{r.source}: {r.withdrawn:,} earlier quarantine row(s) gave way to records read "
                "again"
            )
        if r.not_order_spans:
            say(f"{r.source}: {r.not_order_spans:,} spans named no order and no object")
        _print_quarantine(say, r)


def _print_quarantine(say: Any, r: Any) -> None:
    if not r.rejected:
        return
    share = f"{r.judged_share():.0%}"
    if r.widened():
        share += f" of its last {round(r.judged_on()[0]):,}"
    if r.max_quarantine is not None:
        over = "over " if r.over_max_quarantine else ""
        share += f" ({over}max_quarantine {r.max_quarantine:.0%})"
    say(f"{r.source}: {r.rejected:,} of {r.taken:,} record(s) went to quarantine: {share}")
    top = r.top_reasons()
    for rc in top:
        say(f"{r.source}: quarantined {rc.count:,} × {rc.reason}, e.g. {rc.example.source_ref}")
    rest = r.tally.total - sum(rc.count for rc in top)
    if rest:
        say(f"{r.source}: … and {rest:,} more for other reasons (ordertrail quarantine list)")


# -- collect ---------------------------------------------------------------------------------


@cli.command()
@click.argument("source")
@click.option("--max-messages", type=click.IntRange(1), help="Stop after this many records.")
@click.option(
    "--idle-timeout", type=click.FloatRange(0), help="Stop after this many seconds without records."
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.pass_obj
def collect(
    state: AppState, source: str, max_messages: int | None, idle_timeout: float | None, fmt: str
) -> None:
    """Run a kafka or otlp source until stopped (SIGTERM/SIGINT finish the batch and exit 0).

    When it stops it prints the counts and the top quarantine reasons with their field path and
    one example (its source_ref), as ``ingest`` does.
    """
    cfg = state.config()
    src = cfg.source(source)
    if src.kind == "file":
        raise ConfigError(
            f"source {source!r} is a file source; run 'ordertrail ingest {source}'", path=cfg.path
        )
    collector: Any
    if src.kind == "kafka":
        from ordertrail.collectors.kafka import CollectOptions, KafkaCollector

        collector = KafkaCollector(
            state.store(), cfg, src, CollectOptions(max_messages, idle_timeout)
        )
    else:
        from ordertrail.collectors.otlp import OtlpCollector

        collector = OtlpCollector(
            state.store(), cfg, src, max_messages=max_messages, idle_timeout=idle_timeout
        )
    collector.install_signal_handlers()
    with progress_bar(f"collect {source}", max_messages) as advance:
        report = collector.run(on_batch=advance)
    report.max_quarantine = src.max_quarantine  # shown, not enforced: a collector keeps running
    if fmt == "json":
        print_json({"sources": [report.as_dict()]})
    else:
        print_ingest_summary([report])


# -- status ----------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option(
    "--verify",
    is_flag=True,
    help="Check the store instead (schema, integrity, constraints, references); exit 3 on a problem.",
)
@click.pass_obj
def status(state: AppState, fmt: str, verify: bool) -> None:
    """Show sources, watermarks, lag, event counts, quarantine and filtered records."""
    if verify:
        from ordertrail.cli.backup import verify_status

        return verify_status(state, fmt)
    from ordertrail.report import store_status

    st = store_status(state.store(), state.maybe_config())
    if fmt == "json":
        print_json(st.as_dict())
        return
    print_status(st)


def print_status(st: Any) -> None:
    console = stdout_console()
    rows = []
    for s in st.sources:
        if "files" in s.checkpoint:
            cp = f"{s.checkpoint['files_read']}/{s.checkpoint['files']} files read"
        else:
            cp = ", ".join(f"{k.replace('_', ' ')} {fmt_int(v)}" for k, v in s.checkpoint.items())
        lag = "-" if s.lag is None else f"{s.lag:,} {s.lag_unit}".strip()
        rows.append(
            (
                s.name,
                s.kind,
                fmt_int(s.events),
                fmt_int(s.quarantined),
                fmt_int(s.filtered),
                fmt_time(s.watermark),
                cp or "-",
                lag,
            )
        )
    cols = ["source", "kind", "events", "quarantined", "filtered", "watermark (UTC)"]
    t = table("Sources", [*cols, "checkpoint", "lag"], rows, collapse_padding=True)
    t.columns[5].no_wrap = True  # a time split over two lines is hard to read
    console.print(t)
    console.print(
        f"{st.events:,} events of {st.orders:,} orders; {st.quarantine:,} records in quarantine; "
        f"{st.filtered:,} filtered"
    )
    if st.unlinked is not None:
        console.print(
            f"{st.unlinked:,} objects linked to no order (reconcile run {st.unlinked_run}); "
            "list them with: ordertrail findings --kind orphan"
        )


# -- reconcile -------------------------------------------------------------------------------


def output_options(f: Any) -> Any:
    f = click.option(
        "--output",
        "-o",
        type=click.Path(dir_okay=False, writable=True),
        help="Write the result to this file instead of stdout.",
    )(f)
    f = click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json", "csv"]),
        default="table",
        show_default=True,
        help="table for people, json or csv for tools.",
    )(f)
    return f


@cli.command()
@click.option(
    "--as-of",
    "as_of",
    metavar="TIME",
    help="Judge as of this time (ISO-8601 or epoch; default now).",
)
@click.option(
    "--incremental",
    is_flag=True,
    help="Re-evaluate only orders that can have changed since the last run.",
)
@output_options
@click.option(
    "--fail-on",
    "fail_on",
    metavar="KIND,…",
    help="Exit 1 when an active finding or incident is of one of these kinds ('any' for all).",
)
@click.option(
    "--workers", type=click.IntRange(1), help="Processes for loading chunks (default: auto)."
)
@click.option("--shard", metavar="I/N", help="Reconcile only orders whose hash bucket % N == I.")
@click.option(
    "--engine",
    type=click.Choice(["local", "spark"]),
    default="local",
    show_default=True,
    help="local: this machine; spark: a Spark cluster (pip install 'ordertrail[spark]').",
)
@click.option(
    "--spark-master",
    metavar="URL",
    help="With --engine spark: the Spark master (default: [engine.spark] master, else local[2]).",
)
@click.option(
    "--parquet",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="With --engine spark: read the window from 'ordertrail export --parquet DIR' files "
    "instead of the store (needed for a SQLite store).",
)
@click.option("--redact", is_flag=True, help="Mask the attributes the config marks personal.")
@click.pass_obj
def reconcile(
    state: AppState,
    as_of: str | None,
    incremental: bool,
    fmt: str,
    output: str | None,
    fail_on: str | None,
    workers: int | None,
    shard: str | None,
    engine: str,
    spark_master: str | None,
    parquet: str | None,
    redact: bool,
) -> None:
    """Match every order's events end to end; report findings and hop incidents."""
    from ordertrail.reconcile import KINDS, fail_matches, parse_shard
    from ordertrail.reconcile import reconcile as run_reconcile
    from ordertrail.schemas.config import spark_master_problem

    kinds = _parse_kinds(fail_on, set(KINDS) | {"hop_silent", "source_lagging", "any"})
    if engine != "spark":
        for name, given in (("--spark-master", spark_master), ("--parquet", parquet)):
            if given:
                raise click.UsageError(f"{name} goes with --engine spark")
    elif shard:
        raise click.UsageError("--shard is for the local engine; Spark spreads the orders itself")
    elif spark_master is not None and (problem := spark_master_problem(spark_master)):
        raise click.UsageError(f"--spark-master: {problem}")
    elif incremental:
        raise click.UsageError("--incremental is for the local engine; Spark judges every order")
    cfg = state.config()
    when = parse_time_option(as_of, "--as-of", cfg.pipeline.timezone)
    part = parse_shard(shard)
    store = state.store()
    with progress_bar("reconcile", 100, unit="%") as bar:

        def on_progress(stage: str, done: int, total: int) -> None:
            bar.set(100 * done / max(total, 1), stage)

        if engine == "spark":
            from ordertrail.reconcile.spark import reconcile_spark

            result = reconcile_spark(
                store, cfg, as_of=when, parquet=parquet, master=spark_master,
                progress=on_progress,
            )  # fmt: skip
        else:
            result = run_reconcile(
                store,
                cfg,
                as_of=when,
                incremental=incremental,
                workers=workers,
                shard=part,
                progress=on_progress,
            )
    if redact:
        from ordertrail.report.redact import redact_finding

        result.findings = [redact_finding(f, cfg.pipeline.personal) for f in result.findings]
    emit(result, fmt, output, cfg)
    from ordertrail.serve.notify import notify_after_run

    notify_after_run(store, cfg, result)  # [[notify]]: never raises, never fails the run
    if kinds and fail_matches(result, kinds):
        sys.exit(1)


def _parse_kinds(text: str | None, allowed: set[str]) -> set[str]:
    if not text:
        return set()
    kinds = {k.strip() for k in text.split(",") if k.strip()}
    bad = sorted(kinds - allowed)
    if bad:
        raise click.BadParameter(_unknown("kind", bad[0], sorted(allowed)), param_hint="--fail-on")
    return kinds


def parse_time_option(value: str | None, name: str, tz: str = "UTC") -> int | None:
    from ordertrail.collectors.timestamps import TimestampError, parse_timestamp, zone

    if value is None or value == "now":
        return None
    try:
        return parse_timestamp(value, zone(tz))
    except TimestampError:
        raise click.BadParameter(
            f"not a time: {value!r} (use ISO-8601 or epoch seconds)", param_hint=name
        ) from None


FINDING_COLUMNS = [
    "order_id", "kind", "hop", "from_hop", "field", "objects", "since", "detail", "status",
]  # fmt: skip


def who(f: dict[str, Any]) -> str:
    """The order a finding is about, or (an unlinked object's orphan) its objects."""
    return str(f["order_id"]) if f["order_id"] else " ".join(f.get("objects") or [])


def emit(result: Any, fmt: str, output: str | None, cfg: Any) -> None:
    """Write a reconcile result as json, csv or a table, to stdout or --output."""
    if fmt == "table" and not output:
        print_reconcile(result, cfg)
        return
    text_: str | bytes
    if fmt == "json":
        import orjson

        # bytes as they are: a 10M-order window's JSON is ~0.6 GB, and a decoded copy as much
        # again at the run's peak
        text_ = orjson.dumps(
            result.as_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
        )
    elif fmt == "csv":
        text_ = findings_csv(result.findings)
    else:
        console, buf = text_console()
        print_reconcile(result, cfg, console=console)
        text_ = buf.getvalue()
    write_output(text_, output)


def findings_csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(FINDING_COLUMNS)
    for f in rows:
        w.writerow(
            [
                " ".join(f[c]) if c == "objects" else "" if f[c] is None else f[c]
                for c in FINDING_COLUMNS
            ]
        )
    return buf.getvalue()


def text_console() -> tuple[Any, Any]:
    """A plain 100-column console writing into a buffer (for --output)."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    return Console(file=buf, width=100, no_color=True, color_system=None), buf


def write_output(text_: str | bytes, output: str | None) -> None:
    """To --output (with a note on stderr) or to stdout; bytes are UTF-8 already."""
    data = text_ if isinstance(text_, bytes) else text_.encode("utf-8")
    if output:
        Path(output).write_bytes(data)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(data, nl=False)


SEVERITY = [
    "vanished",
    "confirmed_unfulfilled",
    "stalled",
    "duplicate",
    "failed",
    "skipped",
    "mismatch",
    "orphan",
    "out_of_order",
    "late",
]


def print_reconcile(result: Any, cfg: Any, limit: int = 20, console: Any = None) -> None:
    """Summary per kind and per hop, incidents, then the worst findings."""
    from ordertrail.reconcile import KINDS

    console = console or stdout_console()
    r = result.run
    console.print(
        f"Run {r['id']} ({r['mode']}) as of {r['as_of']}: {r['orders']:,} orders, "
        f"{r['events']:,} events, {r['findings']:,} findings, {r['resolved']:,} resolved "
        f"in {r['seconds']:.1f}s",
        markup=False,
    )
    for note in r.get("notes", []):
        console.print(f"Note: {note}", markup=False)
    if result.summary:
        hops = [h for h in cfg.hop_names if h in result.by_hop]
        hops += sorted(h for h in result.by_hop if h not in hops)  # next_any groups
        rows = []
        for k in KINDS:
            if k not in result.summary:
                continue
            rows.append(
                (
                    k,
                    fmt_int(result.summary[k]),
                    *(
                        fmt_int(result.by_hop.get(h, {}).get(k))
                        if result.by_hop.get(h, {}).get(k)
                        else ""
                        for h in hops
                    ),
                )
            )
        console.print(table("Findings by kind and hop", ["kind", "count", *hops], rows))
    elif r["events"]:
        console.print("No findings: every order is complete, closed or in flight.")
    else:
        console.print("No findings, because there is nothing to judge: no event in the window.")
    if result.incidents:
        rows = [
            (i["kind"], i["hop"], fmt_int(i["orders"]), iso_minute(i["since"]), i["detail"])
            for i in result.incidents
        ]  # fmt: skip
        console.print(
            table("Incidents", ["incident", "hop", "orders", "since (UTC)", "detail"], rows)
        )
    active = result.active()
    if active:
        rank = {k: n for n, k in enumerate(SEVERITY)}
        worst = sorted(
            active, key=lambda f: (rank.get(f["kind"], 99), f["since"], f["order_id"] or "")
        )[:limit]
        rows = [
            (
                who(f),
                f["kind"],
                f["hop"],
                iso_minute(f["since"]),
                f["status"],
                f["detail"].split("; last event")[0],
            )
            for f in worst
        ]
        more = (
            f" (first {limit} of {len(active):,}; --format json for all)"
            if len(active) > limit
            else ""
        )
        console.print(
            table(
                f"Worst findings{more}",
                ["order", "kind", "hop", "since (UTC)", "status", "detail"],
                rows,
            )
        )


@cli.command()
@click.option("--kind", "kinds", multiple=True, help="Only this kind (repeatable).")
@click.option("--hop", "hops", multiple=True, help="Only findings at this hop (repeatable).")
@click.option(
    "--status",
    type=click.Choice(["new", "open", "resolved", "expired", "active", "all"]),
    default="active",
    show_default=True,
    help="active = new and open.",
)
@output_options
@click.option("--limit", type=click.IntRange(1), help="At most this many rows.")
@click.option("--redact", is_flag=True, help="Mask the attributes the config marks personal.")
@click.pass_obj
def findings(
    state: AppState,
    kinds: tuple[str, ...],
    hops: tuple[str, ...],
    status: str,
    fmt: str,
    output: str | None,
    limit: int | None,
    redact: bool,
) -> None:
    """List stored findings, filtered by kind, hop and status."""
    from ordertrail.reconcile import KINDS
    from ordertrail.reconcile.runs import list_findings

    cfg_ = state.maybe_config()
    for k in kinds:
        if k not in KINDS:
            raise click.BadParameter(_unknown("kind", k, KINDS), param_hint="--kind")
    if cfg_ is not None:
        for h in hops:
            for part in h.split("|"):
                if part not in cfg_.hop_names:
                    raise click.BadParameter(
                        _unknown("hop", part, cfg_.hop_names), param_hint="--hop"
                    )

    rows = list_findings(state.store(), kinds=kinds, hops=hops, status=status, limit=limit)
    if redact:
        from ordertrail.report.redact import redact_finding

        personal = cfg_.pipeline.personal if cfg_ else ()
        rows = [redact_finding(f, personal) for f in rows]
    if fmt == "json":
        import orjson

        text_ = orjson.dumps({"findings": rows}, option=orjson.OPT_INDENT_2).decode() + "\n"
    elif fmt == "csv":
        text_ = findings_csv(rows)
    else:
        if not rows:
            click.echo("No findings match.")
            return
        console, buf = text_console() if output else (stdout_console(), None)
        console.print(
            table(
                f"Findings ({len(rows):,})",
                ["order", "kind", "hop", "since (UTC)", "status", "detail"],
                [
                    (
                        who(f),
                        f["kind"],
                        f["hop"],
                        iso_minute(f["since"]),
                        f["status"],
                        f["detail"],
                    )
                    for f in rows
                ],
            )
        )
        if buf is None:
            return
        text_ = buf.getvalue()
    write_output(text_, output)


# -- support: trace, search, report ---------------------------------------------------------


def redact_option(f: Any) -> Any:
    return click.option(
        "--redact", is_flag=True, help="Mask the attributes the config marks personal."
    )(f)


@cli.command()
@click.argument("ident", metavar="ID")
@click.option("--as-of", "as_of", metavar="TIME", help="Judge as of this time (default now).")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@redact_option
@click.pass_obj
def trace(state: AppState, ident: str, as_of: str | None, fmt: str, redact: bool) -> None:
    """Show an order's whole trail, the hops still missing and its findings in plain words.

    ID is an order id or any object id (a tracking number, payment id, item, parcel; with or
    without its kind: prefix): every order it belongs to is shown."""
    from ordertrail.report.trace import UnknownOrder, build_trails

    cfg = state.config()
    when = parse_time_option(as_of, "--as-of", cfg.pipeline.timezone)
    now = when if when is not None else _now_us()
    try:
        trails = build_trails(state.store(), cfg, ident, now, redact=redact)
    except UnknownOrder as e:
        click.echo(f"Error: {visible(str(e))}", err=True)
        sys.exit(1)
    if fmt == "json":
        docs = [t.as_dict() for t in trails]
        print_json(docs[0] if len(docs) == 1 else {"id": ident, "orders": docs})
        return
    for t in trails:
        print_trail(t, cfg)


def iso_minute(iso: str | None) -> str:
    """'2026-03-01T14:05:09Z' -> '2026-03-01 14:05' (the column header names the zone)."""
    return (iso or "-")[:16].replace("T", " ")


def _unknown(what: str, value: str, known: Any) -> str:
    import difflib

    hint = difflib.get_close_matches(value, list(known), n=1)
    extra = f" (did you mean {hint[0]!r}?)" if hint else f" (known: {', '.join(known)})"
    return f"unknown {what} {value!r}{extra}"


def _now_us() -> int:
    import time

    return time.time_ns() // 1000


def print_trail(trail: Any, cfg: Any) -> None:
    """One order's trail for people: the verdict in plain words first, then every event as a
    short block (wide terminals: a table), then what is missing. Nothing is split or cut by us:
    ids, e-mails, refs and times stay whole; data is shown as text, never as markup."""
    from rich.text import Text

    from ordertrail.report.trace import local_zone
    from ordertrail.schemas.durations import format_duration

    console = stdout_console()
    tz_name = cfg.pipeline.timezone
    tz = local_zone(tz_name)

    def line(*parts: Any, indent: int = 0, style: str = "") -> None:
        """One line of data, wrapped at spaces to the console's width — never inside an id,
        an e-mail or a ref (a longer token runs past the edge rather than being split)."""
        import textwrap

        plain = visible("".join(p.plain if isinstance(p, Text) else str(p) for p in parts))
        body = plain.lstrip(" ")
        lead = plain[: len(plain) - len(body)]
        wrapped = textwrap.wrap(
            body, width=console.width, initial_indent=lead, subsequent_indent=lead + " " * indent,
            break_long_words=False, break_on_hyphens=False,
        ) or [""]  # fmt: skip
        for w in wrapped:
            console.print(Text(w, style=style), soft_wrap=True)

    found = f" (found by {trail.looked_up})" if trail.looked_up else ""
    line("Order ", trail.order_id, found, f" — {trail.state}", style="bold")
    for note in trail.notes:
        line("  • ", note, indent=2)
    console.print()
    wide = console.width >= 140
    if wide:
        _trail_table(console, trail, cfg)
    else:
        line(
            Text("Trail", style="bold"),
            f" (times UTC{'' if tz_name == 'UTC' else f'; local {tz_name}'})",
        )
        prev = None
        for e in trail.events:
            gap = "" if prev is None else f"  +{format_duration(e.occurred_at - prev)}"
            prev = e.occurred_at
            local = f"  ({fmt_time(e.occurred_at, tz)} {tz_name})" if tz_name != "UTC" else ""
            line(
                fmt_time(e.occurred_at),
                "  ",
                Text(visible(e.hop), style="bold"),
                f"  {e.phase}",
                gap,
                local,
            )
            line("    source   ", e.source, "  ", e.source_ref)
            named = [f"{k}:{i}" for k, ids in e.objects.items() for i in ids]
            if named:
                line("    objects  ", ", ".join(named), indent=9)
            if e.order_id and e.order_id != trail.order_id:
                line("    order    ", e.order_id)
            if e.trace_id:
                line("    trace    ", e.trace_id)
            attrs = ", ".join(f"{k}={v}" for k, v in e.attributes.items())
            if attrs:
                line("    attrs    ", attrs, indent=9)
    if trail.expectations:
        console.print()
        line("Expected but missing (deadlines UTC)", style="bold")
        for x in trail.expectations:
            status = (
                f"{format_duration(x.overdue)} overdue"
                if x.overdue > 0
                else f"due in {format_duration(-x.overdue)}"
            )
            why = f"after {x.after}" if x.kind == "edge" else f"promised at {x.after}"
            line(
                "  ",
                Text(visible(x.hop), style="bold"),
                f"  {why}  by {fmt_time(x.deadline)}  {status}",
            )
            if x.objects:
                line("    waiting for ", ", ".join(x.objects))
    if trail.findings:
        console.print()
        line("Findings", style="bold")
        for f in trail.findings:
            line("  ", f["kind"], f"  {f['hop']}  ({f['status']})")
            line("    ", f["detail"], indent=0)


def _trail_table(console: Any, trail: Any, cfg: Any) -> None:
    from ordertrail.report.trace import local_zone
    from ordertrail.schemas.durations import format_duration

    tz_name = cfg.pipeline.timezone
    tz = local_zone(tz_name)
    rows: list[tuple[Any, ...]] = []
    prev = None
    for e in trail.events:
        gap = "" if prev is None else "+" + format_duration(e.occurred_at - prev)
        prev = e.occurred_at
        named = [f"{k}:{i}" for k, ids in e.objects.items() for i in ids]
        attrs = ", ".join(named + [f"{k}={v}" for k, v in e.attributes.items()])
        local = fmt_time(e.occurred_at, tz)[11:] if tz_name != "UTC" else ""
        rows.append((e.hop, e.phase, fmt_time(e.occurred_at), local, gap,
                     f"{e.source} {e.source_ref}", e.trace_id or "", attrs))  # fmt: skip
    cols = [
        "hop",
        "phase",
        "time (UTC)",
        f"local ({tz_name})",
        "gap",
        "source",
        "trace",
        "attributes",
    ]
    keep = [i for i, c in enumerate(cols) if i < 3 or any(r[i] for r in rows)]  # drop empty columns
    t = table("Trail", [cols[i] for i in keep], [tuple(r[i] for i in keep) for r in rows])
    for c in t.columns:
        if c.header in ("hop", "phase", "time (UTC)", "source", "trace") or str(
            c.header
        ).startswith("local"):
            c.no_wrap = True
    console.print(t)


@cli.command()
@click.option(
    "--attr", "attrs", multiple=True, metavar="PATH=VALUE", help="An attribute value (repeatable)."
)
@click.option(
    "--object",
    "objects",
    multiple=True,
    metavar="KIND=ID",
    help="The orders an object belongs to: shipment=1Z999AA1 (repeatable).",
)
@click.option("--trace-id", help="An OpenTelemetry trace id.")
@click.option("--hop", help="Events at this hop.")
@click.option("--since", metavar="TIME", help="Events at or after this time.")
@click.option("--until", metavar="TIME", help="Events at or before this time.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@redact_option
@click.pass_obj
def search(
    state: AppState,
    attrs: tuple[str, ...],
    objects: tuple[str, ...],
    trace_id: str | None,
    hop: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    fmt: str,
    redact: bool,
) -> None:
    """Find orders without their id: by attribute, object id, trace id, or hop and time range.

    Exits 1 when no order matches (like trace for an unknown id)."""
    from ordertrail.report.search import search_orders

    pairs = []
    for a in attrs:
        if "=" not in a:
            raise click.BadParameter(f"expected PATH=VALUE, not {a!r}", param_hint="--attr")
        k, v = a.split("=", 1)
        pairs.append((k.strip(), v))
    obj_pairs = []
    for o in objects:
        if "=" not in o:
            raise click.BadParameter(f"expected KIND=ID, not {o!r}", param_hint="--object")
        k, v = o.split("=", 1)
        obj_pairs.append((k.strip(), v))
    cfg = state.maybe_config()
    tz = cfg.pipeline.timezone if cfg else "UTC"
    if hop and cfg and hop not in cfg.hop_names:
        raise click.BadParameter(
            f"unknown hop {hop!r} (known: {', '.join(cfg.hop_names)})", param_hint="--hop"
        )
    try:
        found = search_orders(state.store(), cfg, attrs=pairs, objects=obj_pairs, trace_id=trace_id, hop=hop,
                              since=parse_time_option(since, "--since", tz),
                              until=parse_time_option(until, "--until", tz), limit=limit, redact=redact)  # fmt: skip
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if fmt == "json":
        print_json({"orders": found})
        if not found:
            sys.exit(1)
        return
    if not found:
        click.echo("No order matches.", err=True)
        sys.exit(1)
    rows = [(o["order_id"], o["matches"], iso_minute(o["last_match"]),
             f"{o['last_event']['hop']} {o['last_event']['phase']} {iso_minute(o['last_event']['time'])}",
             ", ".join(o["findings"]) or "-") for o in found]  # fmt: skip
    stdout_console().print(
        table(
            f"Orders ({len(found)})",
            ["order", "matches", "last match (UTC)", "last event (UTC)", "findings"],
            rows,
        )
    )


@cli.command()
@click.option("--as-of", "as_of", metavar="TIME", help="Report as of this time (default now).")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, writable=True),
    help="Write a self-contained HTML report with charts to this file.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option(
    "--amount-field",
    default="amount",
    show_default=True,
    help="Attribute holding an order's amount.",
)
@redact_option
@click.pass_obj
def report(
    state: AppState,
    as_of: str | None,
    html_path: str | None,
    fmt: str,
    amount_field: str,
    redact: bool,
) -> None:
    """Funnel per hop, lost and stalled per edge, latency percentiles, findings by age, amount at risk."""
    from ordertrail.report.html import render_html
    from ordertrail.report.summary import build_report

    cfg = state.config()
    when = parse_time_option(as_of, "--as-of", cfg.pipeline.timezone)
    with progress_bar("report", 100, unit="%") as bar:
        rep = build_report(
            state.store(), cfg, when if when is not None else _now_us(), amount_field,
            progress=lambda pct, stage: bar.set(pct, stage),
        )  # fmt: skip
    if html_path:
        Path(html_path).write_text(render_html(rep), encoding="utf-8")
        click.echo(f"wrote {html_path}", err=True)
    if fmt == "json":
        print_json(rep.as_dict())
        return
    console = stdout_console()
    console.print(table("Funnel", ["hop", "orders", "share"],
                        [(f["hop"], fmt_int(f["orders"]), "-" if f["share"] is None else f"{f['share'] * 100:.1f}%")
                         for f in rep.funnel]))  # fmt: skip
    from ordertrail.report.html import _fmt_s

    console.print(table("Edges", ["edge", "passed", "vanished", "stalled", "p50", "p95", "p99"],
                        [(f"{e['from']} → {e['to']}", fmt_int(e["passed"]), fmt_int(e["vanished"]),
                          fmt_int(e["stalled"]), _fmt_s(e["latency_seconds"]["p50"]),
                          _fmt_s(e["latency_seconds"]["p95"]), _fmt_s(e["latency_seconds"]["p99"]))
                         for e in rep.edges]))  # fmt: skip
    if rep.findings_by_kind:
        ages = ["< 1h", "1h–1d", "1d–7d", "> 7d"]
        console.print(table("Open findings by age", ["kind", *ages, "total"],
                            [(k, *(fmt_int(v[a]) for a in ages), fmt_int(v["total"]))
                             for k, v in rep.findings_by_kind.items()]))  # fmt: skip
    r = rep.at_risk
    console.print(f"At risk: {r['orders']:,} orders, {r['field']} {r['amount']:,.2f} "
                  f"(known for {r['with_amount']:,})")  # fmt: skip


# -- demo ------------------------------------------------------------------------------------


DEMO_MARKER = ".ordertrail-demo"  # lists what the demo wrote, so a rerun removes only that
DEMO_PATHS = ("ordertrail.toml", "data", "ordertrail.db", "ordertrail.db-wal", "ordertrail.db-shm")


def _demo_folder(root: Path, force: bool) -> None:
    """Make ``root`` ready for the demo without touching anything the demo did not write.

    An empty or missing folder is used as is. A folder of an earlier demo (its marker lists what
    it wrote) has exactly those paths removed. Any other non-empty folder is refused — with
    ``--force`` it is used as long as none of the demo's paths exist in it.
    """
    marker = root / DEMO_MARKER
    if root.exists() and not root.is_dir():
        raise click.UsageError(f"--dir {root}: not a folder")
    if marker.exists():
        try:
            wrote = orjson.loads(marker.read_bytes()).get("wrote", [])
        except (orjson.JSONDecodeError, AttributeError):
            raise click.UsageError(
                f"--dir {root}: its {DEMO_MARKER} is not readable; remove the folder yourself"
            ) from None
        for rel in wrote:
            if rel not in DEMO_PATHS:  # a marker never makes the demo delete anything else
                continue
            p = root / rel
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        marker.unlink()
    elif root.exists() and any(root.iterdir()):
        clash = [rel for rel in DEMO_PATHS if (root / rel).exists() or (root / rel).is_symlink()]
        if not force:
            raise click.UsageError(
                f"--dir {root} is not empty and not an earlier demo's folder; the demo writes "
                "only into an empty folder (choose another --dir, or --force to add its files "
                "here when none of them exists yet)"
            )
        if clash:
            raise click.UsageError(
                f"--dir {root} already has {', '.join(clash)}; the demo never overwrites files "
                "it did not write (choose another --dir)"
            )
    root.mkdir(parents=True, exist_ok=True)
    marker.write_bytes(orjson.dumps({"wrote": list(DEMO_PATHS)}))


@cli.command()
@click.option("--orders", default=5000, show_default=True, type=click.IntRange(10))
@click.option("--seed", default=7, show_default=True, type=int)
@click.option(
    "--dir",
    "directory",
    default="ordertrail-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the demo writes its files and store (an empty folder, or an earlier demo's).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Use a non-empty folder, as long as none of the demo's files exist in it.",
)
@click.pass_obj
def demo(state: AppState, orders: int, seed: int, directory: str, force: bool) -> None:
    """Simulate a faulty shop, ingest it, reconcile, show what was caught.

    The demo always uses its own SQLite store in its folder: --db, ORDERTRAIL_DB_URL and any
    config's store are left alone."""
    from ordertrail.collectors import file_sources
    from ordertrail.schemas.config import load_config
    from ordertrail.simulation.shop import ShopSimulation
    from ordertrail.store import Store

    root = Path(directory)
    _demo_folder(root, force)
    console = stdout_console()
    if state.db_url or os.environ.get("ORDERTRAIL_DB_URL"):
        console.print(
            "The demo uses its own store in its folder; --db and ORDERTRAIL_DB_URL are left alone."
        )
    with progress_bar("Simulating orders", orders) as advance:
        res = ShopSimulation(orders=orders, seed=seed).run(root, on_order=advance)
    console.print(
        f"Simulated {res.orders:,} orders ({res.events:,} events, {res.malformed} malformed "
        f"records) in {root}/data; faults injected: {sum(res.faults.values()):,}"
    )
    cfg = load_config(res.config_path)
    url = f"sqlite:///{(root / 'ordertrail.db').resolve()}"
    with Store(url) as store:
        reports = [_ingest_one(store, cfg, s, 20_000) for s in file_sources(cfg)]
        print_ingest_summary(reports)
        _demo_reconcile(store, cfg, res, console)
    exe = os.path.relpath(sys.argv[0]) if os.path.exists(sys.argv[0]) else "ordertrail"
    cfg_arg = f"--config {root / 'ordertrail.toml'}"
    at = f"--as-of {res.as_of:%Y-%m-%dT%H:%M:%SZ}"
    lost = next((k for k, v in sorted(res.expected.items()) if v == "parcel_lost"), None)
    console.print(f"Explore it: {exe} {cfg_arg} status")
    if lost:
        console.print(
            f"            {exe} {cfg_arg} trace {lost[4][0]} {at}   # a parcel that never arrived"
        )
    console.print(f"            {exe} {cfg_arg} report {at} --html report.html")


def _demo_reconcile(store: Any, cfg: Any, res: Any, console: Any) -> None:
    """Reconcile the demo store and compare what was caught with what was injected."""
    from ordertrail.reconcile import reconcile
    from ordertrail.schemas.event import datetime_to_us
    from ordertrail.simulation.shop import compare, finding_key

    result = reconcile(store, cfg, as_of=datetime_to_us(res.as_of))
    print_reconcile(result, cfg, limit=8)
    rows = []
    for fault, kinds, injected, caught in compare(res, result.active()):
        rows.append((fault, kinds, fmt_int(injected), fmt_int(caught), fmt_int(injected - caught)))
    console.print(
        table(
            "Injected vs caught", ["fault", "finding kinds", "injected", "caught", "missed"], rows
        )
    )
    active = result.active()
    extra = sum(1 for f in active if finding_key(f) not in res.expected)
    on_controls = sum(1 for f in active if f["order_id"] in res.control_orders)
    console.print(f"Findings with no injected fault behind them: {extra}")
    console.print(
        f"Control orders (pickups, split shipments, cancellations, second success events …): "
        f"{len(res.control_orders):,}; findings on them: {on_controls}"
    )
    console.print(
        f"Malformed records injected: {res.malformed}; in quarantine: {store.count_quarantine()}; "
        f"filtered by `where`: {sum(res.filtered.values()):,}"
    )


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="ordertrail")


from ordertrail.cli import backup as _backup  # noqa: E402,F401  (registers the commands)
from ordertrail.cli import check as _check  # noqa: E402,F401  (registers the command)
from ordertrail.cli import export as _export  # noqa: E402,F401  (registers the command)
from ordertrail.cli import prune as _prune  # noqa: E402,F401  (registers the command)
from ordertrail.cli import quarantine as _quarantine  # noqa: E402,F401  (registers the command)
from ordertrail.cli import serve as _serve  # noqa: E402,F401  (registers the command)
