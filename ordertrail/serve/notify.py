"""Notifications: after each reconcile run, tell the ``[[notify]]`` targets when an incident
starts or ends and when new findings of the kinds they chose appear.

Two steps, apart as in an outbox: :func:`record_run` writes what a run has to tell into the
``notifications`` table — one row per (target, event, key), so each is recorded, and sent,
once — and :func:`deliver_pending` posts what is pending, one message per target holding every
pending event (at most :data:`BATCH`), in order. A target that fails (an error status, a
timeout, a refused connection) keeps its rows pending and is retried with exponential backoff
by later runs and by ``ordertrail serve``, for as long as it takes: nothing is dropped. Neither
step ever raises into the run: :func:`notify_after_run` logs and counts what went wrong.

Identity: an incident's start is its kind, hop (and shard) and the first run of the unbroken
series of runs that had it; its end is recorded once a later run no longer has it. New findings
are grouped per run and kind. Delivery is at least once — a receiver that answered but whose
answer was lost gets the message again — so every event carries a stable ``id`` to drop repeats by.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
from sqlalchemy.exc import SQLAlchemyError

from ordertrail import __version__
from ordertrail.schemas.config import Config, NotifyTarget
from ordertrail.schemas.event import us_to_iso
from ordertrail.store import Store, outbox

if TYPE_CHECKING:
    import httpx2

logger = logging.getLogger(__name__)

S = 1_000_000
BACKOFF_FIRST = 30 * S  # the first retry waits this long, then twice as long each time ...
BACKOFF_MAX = 30 * 60 * S  # ... up to this
BATCH = 50  # events per message
SAMPLE = 20  # findings listed in a new_findings event (the count is exact)
BUDGET = 15.0  # seconds one delivery round may spend, all targets together

OnAttempt = Callable[[str, bool, int], None]  # (target, ok, events) for counters


@dataclass
class DeliveryReport:
    """What one :func:`deliver_pending` round did."""

    sent: int = 0  # events delivered
    failed: int = 0  # events whose attempt failed (still pending, retried later)
    errors: list[str] = field(default_factory=list)  # one line per failed attempt


def backoff(attempts: int) -> int:
    """µs to wait after the ``attempts``-th failed attempt."""
    return int(min(BACKOFF_FIRST * 2 ** max(attempts - 1, 0), BACKOFF_MAX))


def now_us() -> int:
    return time.time_ns() // 1000


# -- what a run has to tell ----------------------------------------------------------------------


def record_run(store: Store, config: Config, result: Any, *, now: int | None = None) -> int:
    """Record what run ``result`` (a :class:`~ordertrail.reconcile.RunResult`) has to tell each
    target: incidents started and ended, new findings. Returns the rows added."""
    if not config.notify:
        return 0
    now = now_us() if now is None else now
    run = result.run
    run_id = int(run["id"])
    shard = run.get("shard") or ""
    pipeline = config.pipeline.name
    current = {f"{shard}|{i['kind']}|{i['hop']}": i for i in result.incidents}
    new_by_kind: dict[str, list[dict[str, Any]]] = {}
    for f in result.findings:
        if f["status"] == "new":
            new_by_kind.setdefault(f["kind"], []).append(f)
    rows: list[dict[str, Any]] = []
    with store.engine.begin() as conn:
        starts: dict[str, tuple[int, int | None]] = {}
        for target in config.notify:
            base = {"target": target.name, "run_id": run_id, "created_at": now,
                    "next_attempt_at": now, "attempts": 0}  # fmt: skip
            if any(e.startswith("incident_") for e in target.events):
                opened = outbox.open_incidents(conn, target.name, shard)
                for subject, inc in current.items():
                    if subject in opened:
                        continue
                    if subject not in starts:
                        starts[subject] = outbox.episode_start(
                            conn, inc["kind"], inc["hop"], shard, run_id
                        )
                    first, since = starts[subject]
                    key = f"{subject}|run{first}"
                    payload = {
                        "id": f"incident_started/{key}", "event": "incident_started",
                        "pipeline": pipeline, "kind": inc["kind"], "hop": inc["hop"],
                        "shard": shard or None, "since": us_to_iso(since) or inc["since"],
                        "orders": inc["orders"], "detail": inc["detail"], "first_run": first,
                        "run": run_id, "as_of": run["as_of"],
                    }  # fmt: skip
                    wanted = target.wants("incident_started", inc["kind"])
                    rows.append({**base, "event": "incident_started", "key": key,
                                 "subject": subject, "payload": payload,
                                 "status": "pending" if wanted else "skipped"})  # fmt: skip
                for subject, key in opened.items():
                    if subject in current:
                        continue
                    _, kind, hop = subject.split("|", 2)
                    payload = {
                        "id": f"incident_ended/{key}", "event": "incident_ended",
                        "pipeline": pipeline, "kind": kind, "hop": hop, "shard": shard or None,
                        "run": run_id, "as_of": run["as_of"],
                    }  # fmt: skip
                    wanted = target.wants("incident_ended", kind)
                    rows.append({**base, "event": "incident_ended", "key": key,
                                 "subject": subject, "payload": payload,
                                 "status": "pending" if wanted else "skipped"})  # fmt: skip
            for kind, found in sorted(new_by_kind.items()):
                if not target.wants("finding", kind):
                    continue
                key = f"run{run_id}|{kind}"
                payload = {
                    "id": f"new_findings/{key}", "event": "new_findings", "pipeline": pipeline,
                    "kind": kind, "count": len(found), "run": run_id, "as_of": run["as_of"],
                    "findings": [
                        {"order_id": f["order_id"], "hop": f["hop"], "from_hop": f["from_hop"],
                         "since": f["since"], "objects": f["objects"]}
                        for f in found[:SAMPLE]
                    ],
                }  # fmt: skip
                rows.append({**base, "event": "new_findings", "key": key, "subject": kind,
                             "payload": payload, "status": "pending"})  # fmt: skip
        added = outbox.add(conn, rows)
    if added:
        logger.info("run %s: %d notification(s) recorded", run_id, added)
    return added


# -- sending -------------------------------------------------------------------------------------


def deliver_pending(
    store: Store,
    config: Config,
    *,
    now: int | None = None,
    budget: float = BUDGET,
    on_attempt: OnAttempt | None = None,
    transport: httpx2.BaseTransport | None = None,
) -> DeliveryReport:
    """Send what is pending and due, one message per target (in order, :data:`BATCH` events at
    most, more messages while the budget lasts and no ``min_interval`` holds them back)."""
    report = DeliveryReport()
    if not config.notify:
        return report
    import httpx2  # only when there is something to send: reconcile does not pay for it

    clock = time.monotonic()
    with httpx2.Client(
        follow_redirects=False, transport=transport, headers={"User-Agent": f"ordertrail/{__version__}"}
    ) as client:  # fmt: skip
        for target in config.notify:
            while time.monotonic() - clock < budget:
                t_now = now_us() if now is None else now
                if not _deliver_one(store, config, target, client, t_now, report, on_attempt):
                    break
    return report


def _deliver_one(
    store: Store, config: Config, target: NotifyTarget, client: httpx2.Client, now: int,
    report: DeliveryReport, on_attempt: OnAttempt | None,
) -> bool:  # fmt: skip
    """One message to ``target``. True when it went out and more may be sent right away."""
    lease = now + int((target.timeout + 5) * S)
    try:
        with store.engine.begin() as conn:
            last = outbox.last_sent(conn, target.name)
            if last is not None and target.min_interval and now - last < target.min_interval:
                return False
            batch = outbox.claim(conn, target.name, now, lease, BATCH)
    except (outbox.Contended, SQLAlchemyError) as e:  # another process is sending them
        logger.debug("notify %s: not claimed (%s)", target.name, type(e).__name__)
        return False
    if not batch:
        return False
    error = _post(client, config, target, [r.payload for r in batch])
    with store.engine.begin() as conn:
        if error is None:
            outbox.mark_sent(conn, [r.id for r in batch], now)
        else:
            retry = now + backoff(max(r.attempts for r in batch) + 1)
            outbox.mark_failed(conn, batch, retry, error)
    if on_attempt is not None:
        on_attempt(target.name, error is None, len(batch))
    if error is None:
        report.sent += len(batch)
        logger.info("notify %s: sent %d event(s)", target.name, len(batch))
        return not target.min_interval and len(batch) == BATCH
    report.failed += len(batch)
    report.errors.append(f"{target.name}: {error}")
    logger.warning(
        "notify %s: %s; %d event(s) kept, retried from %s",
        target.name, error, len(batch), us_to_iso(now + backoff(max(r.attempts for r in batch) + 1)),
    )  # fmt: skip
    return False


def _post(
    client: httpx2.Client, config: Config, target: NotifyTarget, events: Sequence[dict[str, Any]]
) -> str | None:
    """POST one message; None when the receiver took it (2xx), else the reason in one line."""
    import os

    import httpx2

    url = target.url or os.environ.get(target.url_env or "", "")
    if not url:
        return f"${target.url_env} is not set (it should hold the webhook URL)"
    headers = {"Content-Type": "application/json", **target.headers}
    if target.token_env:
        token = os.environ.get(target.token_env, "")
        if not token:
            return f"${target.token_env} is not set (it should hold the token)"
        headers["Authorization"] = f"Bearer {token}"
    body = (
        slack_body(config.pipeline.name, events, target.base_url)
        if target.format == "slack"
        else json_body(config.pipeline.name, events, target.base_url)
    )
    try:
        resp = client.post(url, content=orjson.dumps(body), headers=headers, timeout=target.timeout)
    except httpx2.TimeoutException:
        return f"timed out after {target.timeout:g}s"
    except httpx2.HTTPError as e:
        return (
            f"cannot reach the receiver: {type(e).__name__}: {str(e).strip() or 'no reason given'}"
        )
    if 200 <= resp.status_code < 300:
        return None
    if 300 <= resp.status_code < 400:
        return f"HTTP {resp.status_code} (redirects are not followed; use the final URL)"
    return f"HTTP {resp.status_code}"


# -- message bodies --------------------------------------------------------------------------------


def _link(base_url: str | None, path: str) -> str | None:
    return f"{base_url}{path}" if base_url else None


def json_body(
    pipeline: str, events: Sequence[dict[str, Any]], base_url: str | None = None
) -> dict[str, Any]:
    """The generic JSON message: ``{"pipeline", "events": [...]}``, each event with its ``id``."""
    out = []
    for e in events:
        e = dict(e)
        if e["event"].startswith("incident_"):
            e["url"] = _link(base_url, "/incidents")
        else:
            e["findings"] = [
                {**f, "url": _link(base_url, "/order/" + quote(f["order_id"], safe=""))}
                if f.get("order_id")
                else f
                for f in e.get("findings", [])
            ]
        out.append(e)
    return {"source": "ordertrail", "pipeline": pipeline, "events": out}


def _esc(text: Any) -> str:
    """Slack's mrkdwn escapes: data never turns into markup or links."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(
    pipeline: str, events: Sequence[dict[str, Any]], base_url: str | None = None
) -> dict[str, Any]:
    """A Slack-compatible body (``{"text": ...}``, incoming webhooks and most chat tools)."""
    lines = []
    for e in events:
        where = f"*{_esc(e['hop'])}*" if "hop" in e else ""
        if e["event"] == "incident_started":
            what = (
                f"{where} is silent" if e["kind"] == "hop_silent" else f"a source of {where} lags"
            )
            lines.append(
                f":rotating_light: {_esc(pipeline)}: incident started: {what} since "
                f"{_esc(e['since'])}. {_esc(e['detail'])}"
            )
        elif e["event"] == "incident_ended":
            what = (
                f"{where} is no longer silent"
                if e["kind"] == "hop_silent"
                else f"the sources of {where} caught up"
            )
            lines.append(
                f":white_check_mark: {_esc(pipeline)}: incident over: {what} "
                f"(run {e['run']}, as of {_esc(e['as_of'])})."
            )
        else:
            shown = []
            for f in e["findings"][:5]:
                who = f["order_id"] or " ".join(f["objects"])
                url = (
                    _link(base_url, "/order/" + quote(f["order_id"], safe=""))
                    if f["order_id"]
                    else None
                )
                label = f"{_esc(who)} ({_esc(f['hop'])})"
                shown.append(f"<{url}|{label}>" if url else label)
            more = e["count"] - len(shown)
            lines.append(
                f":mag: {_esc(pipeline)}: {e['count']:,} new {_esc(e['kind'])} finding"
                f"{'s' if e['count'] != 1 else ''}: {', '.join(shown)}"
                + (f" and {more:,} more" if more > 0 else "")
            )
    if base_url and any(e["event"].startswith("incident_") for e in events):
        lines.append(f"<{base_url}/incidents|Open incidents>")
    return {"text": "\n".join(lines)}


# -- after a run -----------------------------------------------------------------------------------


def notify_after_run(
    store: Store, config: Config, result: Any, *, on_attempt: OnAttempt | None = None
) -> DeliveryReport | None:
    """Record what run ``result`` has to tell, then send what is pending. Never raises: a
    failure is logged (and counted through ``on_attempt``) and the rows stay for the next try."""
    if not config.notify:
        return None
    try:
        record_run(store, config, result)
    except Exception:
        logger.exception("notify: could not record the notifications of run %s", result.run["id"])
    try:
        return deliver_pending(store, config, on_attempt=on_attempt)
    except Exception:
        logger.exception("notify: delivery failed")
        return None
