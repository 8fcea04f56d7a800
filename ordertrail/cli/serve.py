"""``ordertrail serve``: the web view for support staff, ``/metrics`` and notifications."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from types import FrameType

import click

from ordertrail.cli.main import CliError, cli, parse_time_option
from ordertrail.cli.state import AppState


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """SIGTERM or SIGINT stop the server cleanly and the command exits 0 (as ``collect``
        does); uvicorn would raise the signal again once it has shut down."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C: stop waiting for open connections
            self.should_exit = True

    return Server


@cli.command()
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to listen on. Anything but a loopback address needs a token.",
)
@click.option(
    "--token",
    envvar="ORDERTRAIL_SERVE_TOKEN",
    show_envvar=True,
    metavar="TOKEN",
    help="Admin token (16+ characters): every request must carry it (or one of "
    "$ORDERTRAIL_SERVE_TOKENS). Prefer the variable: options show in the process list.",
)
@click.option("--redact", is_flag=True, help="Mask personal fields for everyone.")
@click.option(
    "--every",
    metavar="DURATION",
    help="Reconcile on this schedule in the background (e.g. 5m) and send notifications.",
)
@click.option(
    "--as-of",
    "as_of",
    metavar="TIME",
    help="Judge as of this fixed time instead of now (a demo store, or a look at the past).",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True),
    help="PEM certificate chain: serve HTTPS.",
)
@click.option(
    "--tls-key", type=click.Path(dir_okay=False, exists=True), help="PEM private key of --tls-cert."
)
@click.pass_obj
def serve(
    state: AppState,
    listen: str,
    token: str | None,
    redact: bool,
    every: str | None,
    as_of: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Run the web view: search an order by any id or e-mail, its trail and what to tell the
    customer, open incidents with the customers they touch (CSV), a status page, Prometheus
    metrics at /metrics; with --every, reconcile on a schedule and send [[notify]] messages.

    Roles: --token is an admin (may start a check); $ORDERTRAIL_SERVE_TOKENS adds tokens as
    ROLE=TOKEN pairs, ROLE one of admin, support (read only), redacted (read only, personal
    fields masked)."""
    import uvicorn

    from ordertrail.schemas.config import parse_listen
    from ordertrail.schemas.durations import parse_duration
    from ordertrail.serve.access import ENV_TOKENS, AccessError, check_token, parse_tokens
    from ordertrail.serve.app import ServeSettings, create_app

    try:
        host, port = parse_listen(listen)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--listen") from None
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    period = None
    if every:
        try:
            period = parse_duration(every) / 1_000_000
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--every") from None
        if period < 1:
            raise click.BadParameter("must be at least 1s", param_hint="--every")
    cfg = state.config()
    when = parse_time_option(as_of, "--as-of", cfg.pipeline.timezone)
    try:
        tokens = parse_tokens(os.environ.get(ENV_TOKENS, ""))
        if token:
            tokens[check_token(token, "--token")] = "admin"
        settings = ServeSettings(host=host, port=port, tokens=tokens, redact=redact, as_of=when,
                                 every=period)  # fmt: skip
        app = create_app(state.store(), cfg, settings)
    except AccessError as e:
        raise CliError(str(e), 2) from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise CliError(f"cannot listen on {listen}: {e.strerror or e}", 3) from None
    bound = sock.getsockname()[1]
    scheme = "https" if tls_cert else "http"
    shown = f"[{host}]" if ":" in host else host
    who = "a token is required" if tokens else "read only, open to this machine"
    click.echo(f"ordertrail serve: {scheme}://{shown}:{bound}/ ({who}); Ctrl-C stops", err=True)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", server_header=False,
        ssl_certfile=tls_cert, ssl_keyfile=tls_key,
    )  # fmt: skip
    _server_class()(config).run(sockets=[sock])
    # The server has shut down (a scheduled run, a child process, was stopped). A thread — the
    # shared window's warm-up — may still be inside DuckDB: ending the interpreter would unwind
    # it through C++ and abort the process, so leave without finalizing once output is flushed.
    if any(t.is_alive() for t in threading.enumerate() if t is not threading.main_thread()):
        columnar = sys.modules.get("ordertrail.reconcile.columnar")
        if columnar is not None:
            columnar.close_idle()  # the idle databases' spill directories
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
