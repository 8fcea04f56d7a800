"""The web application of ``ordertrail serve``: a Starlette app with server-rendered Jinja2
pages (no script at all), ``/metrics`` and the background scheduler.

Pages: ``/`` (search), ``/search?q=`` (an order id, any object id, or a searchable attribute
such as an e-mail: one order -> its page, several -> a list), ``/order/<id>``, ``/incidents``
(+ ``/incidents.csv``), ``/status``; ``/metrics`` for Prometheus, ``/healthz`` for probes,
``/login`` for browsers when tokens are in use. Every datum is rendered as text: autoescaped,
control and invisible characters shown as escapes. Handlers are plain functions, run by Starlette
in its thread pool, since the store is reached through blocking SQLAlchemy calls.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ordertrail import __version__
from ordertrail.errors import OrdertrailError
from ordertrail.reconcile.plan import compile_plan
from ordertrail.schemas.config import Config
from ordertrail.serve import pages
from ordertrail.serve.access import COOKIE, COOKIE_TTL, Access, AccessMiddleware
from ordertrail.serve.loop import Scheduler
from ordertrail.serve.metrics import ServeMetrics
from ordertrail.serve.shared import SharedWindow
from ordertrail.store import Store, outbox, serving

logger = logging.getLogger(__name__)

S = 1_000_000
MAX_QUERY = 512  # characters of a search
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
     b"frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]  # fmt: skip


@dataclass
class ServeSettings:
    """How one server runs (the ``serve`` command's options)."""

    host: str = "127.0.0.1"
    port: int = 8080
    tokens: dict[str, str] = field(default_factory=dict, repr=False)  # token -> role
    redact: bool = False
    as_of: int | None = None  # µs: judge as of this time instead of now
    every: float | None = None  # s between scheduled reconcile runs
    cache_seconds: float = 60.0  # for the counts of big tables (/metrics)
    shared_refresh: float = 300.0  # s: window-wide facts of trails (see serve.shared)
    scheduler: bool = True  # run the background work: schedule, retries, warming


def _visible(value: Any) -> Any:
    """Jinja's finalize: every datum as text a reader sees as it is."""
    if value is None:
        return ""
    if isinstance(value, Markup):
        return value
    s = str(value)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() or ch == " " else _escape(ch) for ch in s)


def _escape(ch: str) -> str:
    o = ord(ch)
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch) or (
        f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"
    )


def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("ordertrail.serve", "templates"),
        autoescape=select_autoescape(["html"], default=True),
        undefined=StrictUndefined,
        finalize=_visible,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = lambda s: quote(str(s), safe="")
    env.filters["words"] = pages.words
    env.globals["finding_words"] = pages.FINDING_WORDS
    return env


class SecurityHeaders:
    """CSP (no script, no outside resource), nosniff, no referrer, no framing; pages are never
    cached (they can hold personal data)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ServeApp:
    """The routes and what they share: store, config, access rules, metrics, scheduler."""

    def __init__(self, store: Store, config: Config, settings: ServeSettings):
        self.store = store
        self.config = config
        self.settings = settings
        self.access = Access(settings.tokens, settings.redact)
        self.access.check_bind(settings.host)
        self.env = templates()
        self.metrics = ServeMetrics(store, config, self.now, settings.cache_seconds)
        self.scheduler = Scheduler(
            store, config, every=settings.every, as_of=settings.as_of, metrics=self.metrics
        )
        self.plan = compile_plan(config)
        self.shared = SharedWindow(store, config, self.now, refresh=settings.shared_refresh)

    def now(self) -> int:
        return self.settings.as_of if self.settings.as_of is not None else time.time_ns() // 1000

    def last_activity(self) -> dict[str, int]:
        now = self.now()
        last = self.shared.last(self.plan, now - self.config.pipeline.lookback, now)
        return {h: int(v) for h, v in last.items() if v is not None}

    # -- rendering -------------------------------------------------------------------------------
    def render(
        self, request: Request, name: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        with self.store.engine.connect() as conn:
            run = serving.latest_run(conn)
            n_inc = len(serving.run_incidents(conn, int(run["id"]))) if run else 0
        base = {
            "pipeline": self.config.pipeline.name,
            "version": __version__,
            "q": request.query_params.get("q", "") if name != "home.html" else "",
            "role": self.access.role(request),
            "signed_in": request.scope.get("ordertrail_auth") == "cookie",
            "may_write": self.access.may_write(request),
            "csrf": self.access.csrf(request),
            "redacted": self.access.redacts(request),
            "as_of_text": pages.fmt_time(self.now(), self.config.pipeline.timezone),
            "fixed_clock": self.settings.as_of is not None,
            "n_incidents": n_inc,
            "path": request.url.path,
        }
        html = self.env.get_template(name).render(**base, **context)
        return HTMLResponse(html, status_code=status)

    def login_page(self, request: Request, status: int = 401, error: str = "") -> HTMLResponse:
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        html = self.env.get_template("login.html").render(
            pipeline=self.config.pipeline.name, version=__version__, error=error,
            next=_safe_next(request.query_params.get("next") or nxt),
        )  # fmt: skip
        return HTMLResponse(html, status_code=status)

    # -- pages -----------------------------------------------------------------------------------
    def home(self, request: Request) -> Response:
        return self.render(
            request, "home.html", searchable=self.config.pipeline.searchable,
            objects=self.config.object_names,
        )  # fmt: skip

    def search(self, request: Request) -> Response:
        from ordertrail.report.search import search_orders
        from ordertrail.report.trace import closest_ids

        q = request.query_params.get("q", "").strip()
        if not q:
            return RedirectResponse("/", status_code=303)
        if len(q) > MAX_QUERY:
            raise HTTPException(400, f"a search is at most {MAX_QUERY} characters")
        now = self.now()
        searchable = self.config.pipeline.searchable
        key, eq, value = q.partition("=")
        if eq and key.strip() in searchable:
            found = search_orders(self.store, self.config, attrs=[(key.strip(), value.strip())])
            return self._chosen(request, q, [o["order_id"] for o in found], f"{key.strip()}")
        orders, by, _ = self._resolve(q, now)
        if orders or by:
            if len(orders) == 1:
                return RedirectResponse(_order_url(orders[0], by), status_code=303)
            if not orders:  # an object that belongs to no order: its own page
                return RedirectResponse(_order_url(q), status_code=303)
            return self._chosen(request, q, orders, by or q)
        hits: dict[str, None] = {}
        for attr in searchable:
            for v in dict.fromkeys([q, q.lower()]):
                for o in search_orders(self.store, self.config, attrs=[(attr, v)]):
                    hits.setdefault(o["order_id"])
        if hits:
            return self._chosen(request, q, list(hits), "a customer's details")
        closest = closest_ids(self.store, q)  # a search that found nothing is still a 200
        return self.render(request, "notfound.html", closest=closest,
                           searchable=searchable, what=q)  # fmt: skip

    def _resolve(self, ident: str, now: int) -> tuple[list[str], str | None, str]:
        """(orders, the object they were found by, the id to trace): ``resolve_id``, which
        finds a bare id's kind by primary-key lookups."""
        from ordertrail.report.trace import resolve_id

        orders, by = resolve_id(self.store, self.config, ident, now)
        return orders, by, by or ident

    def _chosen(self, request: Request, q: str, orders: list[str], by: str) -> Response:
        if len(orders) == 1:
            return RedirectResponse(_order_url(orders[0]), status_code=303)
        if not orders:
            return self.render(request, "notfound.html", closest=[],
                               searchable=self.config.pipeline.searchable, what=q)  # fmt: skip
        with self.store.engine.connect() as conn:
            summaries = serving.order_summaries(conn, orders[:100])
        rows = [
            {"order_id": o, "last": s["last"], "findings": s["findings"],
             "last_text": f"{pages.words(s['last']['hop'])} · "
             f"{pages.fmt_time(s['last']['at'], self.config.pipeline.timezone)}"
             if s["last"] else "no event of its own"}
            for o, s in summaries.items()
        ]  # fmt: skip
        return self.render(request, "results.html", rows=rows, by=by, total=len(orders))

    def order(self, request: Request) -> Response:
        from ordertrail.report.trace import UnknownOrder, build_trails, closest_ids

        ident = request.path_params["ident"]
        redact = self.access.redacts(request)
        now = self.now()
        orders, label, traced = self._resolve(ident, now)
        if len(orders) > 1:
            return self._chosen(request, ident, orders, label or ident)
        if not orders and label is None:
            return self.render(request, "notfound.html", status=404,
                               closest=closest_ids(self.store, ident),
                               searchable=self.config.pipeline.searchable, what=ident)  # fmt: skip
        try:
            trails = build_trails(
                self.store,
                self.config,
                orders[0] if orders else traced,
                now,
                redact=redact,
                shared=self.shared,
            )
        except UnknownOrder as e:
            return self.render(request, "notfound.html", status=404, closest=e.closest,
                               searchable=self.config.pipeline.searchable, what=ident)  # fmt: skip
        if len(trails) > 1:
            return self._chosen(
                request, ident, [t.order_id for t in trails], trails[0].looked_up or ident
            )
        trail = trails[0]
        if orders and label:
            trail.looked_up = label
        by = request.query_params.get("by", "")
        kind, _, oid = by.partition(":")
        if (
            trail.looked_up is None
            and oid
            and any(oid in e.objects.get(kind, ()) for e in trail.events)
        ):
            trail.looked_up = by  # the search's object, shown only when the trail names it
        page = pages.order_page(self.store, self.config, trail, now, redact=redact)
        return self.render(request, "order.html", page=page, trail=trail)

    def incidents(self, request: Request) -> Response:
        run, incs, columns = pages.open_incidents(
            self.store, self.config, redact=self.access.redacts(request)
        )
        return self.render(request, "incidents.html", run=run, incidents=incs, columns=columns,
                           run_time=_run_time(run, self.config.pipeline.timezone),
                           limit=pages.INCIDENT_ROWS)  # fmt: skip

    def incidents_csv(self, request: Request) -> Response:
        run, incs, columns = pages.open_incidents(
            self.store, self.config, redact=self.access.redacts(request), limit=None
        )
        hop = request.query_params.get("hop")
        if hop:
            incs = [i for i in incs if i.hop == hop]
        stamp = pages.fmt_time(run["as_of"]).replace(" ", "_").replace(":", "") if run else "none"
        return Response(
            pages.incidents_csv(run, incs, columns),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="ordertrail-incidents-{stamp}.csv"'
            },
        )

    def status(self, request: Request) -> Response:
        now = self.now()
        with self.store.engine.connect() as conn:
            run = serving.latest_run(conn)
            incs = serving.run_incidents(conn, int(run["id"])) if run else []
            counts = serving.active_counts(conn)
            notes = outbox.summary(conn)
        hops = pages.hop_status(self.config, run, incs, counts, self.last_activity(), now)
        tz = self.config.pipeline.timezone
        wms = self.store.watermarks()
        sources = []
        for s in self.config.sources:
            wm = wms.get(s.name)
            behind = None if wm is None else now - wm
            state = (
                "never read to its end"
                if wm is None
                else "up to date"
                if behind is not None and behind <= self.config.pipeline.clock_skew
                else f"complete up to {pages.fmt_time(wm, tz)} ({pages.ago(behind or 0)})"
            )
            sources.append({"name": s.name, "kind": s.kind, "state": state,
                            "behind": wm is None or (behind or 0) > self.config.pipeline.clock_skew})  # fmt: skip
        targets: dict[str, dict[str, Any]] = {}
        for row in notes:
            t = targets.setdefault(row["target"], {"sent": 0, "pending": 0, "error": "",
                                                   "last_sent": None})  # fmt: skip
            if row["status"] in ("sent", "pending"):
                t[row["status"]] = row["rows"]
            if row["status"] == "pending":
                t["error"] = row["last_error"]
            if row["last_sent"]:
                t["last_sent"] = pages.fmt_time(row["last_sent"], tz)
        return self.render(
            request, "status.html", hops=hops, run=run, run_time=_run_time(run, tz),
            sources=sources, targets=targets, sched=self.scheduler.state,
            every=self.settings.every, started=request.query_params.get("started"),
        )  # fmt: skip

    def metrics_endpoint(self, request: Request) -> Response:
        body, ctype = self.metrics.render()
        return Response(body, media_type=ctype.split(";")[0], headers={"Content-Type": ctype})

    def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok (warming up)\n" if self.shared.warming else "ok\n")

    # -- access ----------------------------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return self.login_page(request, status=200)
        form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=10)
        token = (form.get("token") or [""])[0].strip()
        nxt = _safe_next((form.get("next") or ["/"])[0])
        if not self.access.required:
            return RedirectResponse(nxt, status_code=303)
        if not token or self.access.role_of(token) is None:
            return self.login_page(request, status=401, error="That token is not valid.")
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(
            COOKIE, self.access.make_cookie(token), max_age=COOKIE_TTL, httponly=True,
            samesite="strict", secure=request.url.scheme == "https", path="/",
        )  # fmt: skip
        return resp

    def logout(self, request: Request) -> Response:
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    async def reconcile_now(self, request: Request) -> Response:
        """The one write action: start a reconcile run (admin only)."""
        if not self.access.may_write(request):
            raise HTTPException(
                403,
                "write actions need an admin token: start serve with --token (or "
                "ORDERTRAIL_SERVE_TOKEN) and log in with it",
            )
        if request.scope.get("ordertrail_auth") == "cookie":
            form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=10)
            import hmac

            if not hmac.compare_digest((form.get("csrf") or [""])[0], self.access.csrf(request)):
                raise HTTPException(403, "the form is stale: reload the page and try again")
        started = self.scheduler.trigger()
        return RedirectResponse(f"/status?started={'1' if started else 'busy'}", status_code=303)

    # -- errors ----------------------------------------------------------------------------------
    def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if "text/html" in request.headers.get("accept", ""):
            html = self.env.get_template("error.html").render(
                pipeline=self.config.pipeline.name, version=__version__,
                status=exc.status_code, message=exc.detail,
            )  # fmt: skip
            return HTMLResponse(html, status_code=exc.status_code)
        return PlainTextResponse(f"{exc.status_code}: {exc.detail}\n", status_code=exc.status_code)

    def store_error(self, request: Request, exc: Exception) -> Response:
        logger.error("request %s failed: %s", request.url.path, exc)
        return self.http_error(request, HTTPException(503, f"the store cannot be used: {exc}"))


def _safe_next(value: str) -> str:
    """Only a path on this site (never //host or a scheme): no open redirect."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _order_url(order_id: str, by: str | None = None) -> str:
    url = "/order/" + quote(order_id, safe="")
    return url + "?by=" + quote(by, safe="") if by and ":" in by else url


def _run_time(run: dict[str, Any] | None, tz: str) -> dict[str, str]:
    if not run:
        return {}
    took = ((run["finished_at"] or run["started_at"]) - run["started_at"]) / S
    return {
        "finished": pages.fmt_time(run["finished_at"], tz),
        "as_of": pages.fmt_time(run["as_of"], tz),
        "took": f"{took:.1f} s",
    }


def create_app(store: Store, config: Config, settings: ServeSettings | None = None) -> Starlette:
    """The web application over ``store``. Raises :class:`~ordertrail.serve.access.AccessError`
    when the settings would expose it without a token."""
    settings = settings or ServeSettings()
    app_ = ServeApp(store, config, settings)
    routes = [
        Route("/", app_.home),
        Route("/search", app_.search),
        Route("/order/{ident:path}", app_.order),
        Route("/incidents", app_.incidents),
        Route("/incidents.csv", app_.incidents_csv),
        Route("/status", app_.status),
        Route("/metrics", app_.metrics_endpoint),
        Route("/healthz", app_.healthz),
        Route("/login", app_.login, methods=["GET", "POST"]),
        Route("/logout", app_.logout, methods=["POST"]),
        Route("/actions/reconcile", app_.reconcile_now, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("ordertrail.serve", "static")]), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if settings.scheduler:
            app_.shared.warm()
            app_.scheduler.start()
        try:
            yield
        finally:
            app_.scheduler.stop()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: app_.http_error, OrdertrailError: app_.store_error},
    )
    app.add_middleware(AccessMiddleware, access=app_.access, on_denied=app_.login_page)
    app.add_middleware(SecurityHeaders)
    app.state.serve = app_
    return app
