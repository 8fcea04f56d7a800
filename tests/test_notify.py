"""Notifications ([[notify]]): recorded once per incident start / end and per run's new findings,
sent to a real HTTP receiver on loopback, retried with backoff, never lost, never blocking a run."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from ordertrail.errors import ConfigError
from ordertrail.reconcile import reconcile
from ordertrail.schemas.config import FINDING_KINDS, Config, load_config, parse_config
from ordertrail.schemas.event import OrderEvent
from ordertrail.serve import notify
from ordertrail.serve.notify import deliver_pending, notify_after_run, record_run
from ordertrail.store import Store, outbox
from tests.helpers import invoke

S = 1_000_000
MIN = 60 * S
T0 = 1_772_366_400_000_000  # 2026-03-01T12:00:00Z
AS_OF_SILENT = T0 + 3 * 60 * MIN  # every order overdue at shipped, which never shipped one
AS_OF_AFTER = T0 + 5 * 60 * MIN  # after the orders shipped

PIPELINE = """
[pipeline]
name = "notify-test"
personal = ["email"]

[[hops]]
name = "checkout"
next = ["shipped"]
within = "1h"

[[hops]]
name = "shipped"
"""


class Receiver:
    """A real HTTP server on loopback that records what it is sent and answers with the codes
    it is told (200 by default); it can be stopped and started again on the same port."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.codes: list[int] = []  # answers to give first, one per request
        self.delay = 0.0
        self.port = 0
        self._server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if rec.delay:
                    time.sleep(rec.delay)
                code = rec.codes.pop(0) if rec.codes else 200
                rec.requests.append({"path": self.path, "headers": dict(self.headers),
                                     "body": orjson.loads(body), "code": code})  # fmt: skip
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def events(self, ok_only: bool = True) -> list[dict[str, Any]]:
        return [
            e
            for r in self.requests
            if r["code"] == 200 or not ok_only
            for e in r["body"].get("events", [])
        ]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


def make_config(url: str, extra: str = "", events: str | None = None, fmt: str = "json") -> Config:
    ev = events or '["incident_started", "incident_ended", "finding:stalled"]'
    return parse_config(
        __import__("tomllib").loads(
            PIPELINE + f'\n[[notify]]\nname = "ops"\nurl = "{url}"\nformat = "{fmt}"\n'
            f"events = {ev}\n{extra}"
        )
    )


def checkouts(store: Store, n: int = 5) -> None:
    store.write_batch(
        events=[
            OrderEvent(f"c{i}", f"o-{i}", "checkout", T0 + i * MIN, "shop", f"shop.jsonl:{i}",
                       attributes={"email": f"c{i}@example.com"})
            for i in range(n)
        ]
    )  # fmt: skip


def shipments(store: Store, n: int = 5) -> None:
    store.write_batch(
        events=[
            OrderEvent(f"s{i}", f"o-{i}", "shipped", T0 + 4 * 60 * MIN + i * MIN, "ship", f"s:{i}")
            for i in range(n)
        ]
    )


def run(store: Store, cfg: Config, as_of: int) -> Any:
    result = reconcile(store, cfg, as_of=as_of)
    notify_after_run(store, cfg, result)
    return result


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["event"], e.get("hop") or e.get("kind")) for e in events]


def test_each_incident_is_sent_once_across_repeated_runs(
    store_url: str, receiver: Receiver
) -> None:
    cfg = make_config(receiver.url)
    with Store(store_url) as store:
        checkouts(store)
        for _ in range(3):
            res = run(store, cfg, AS_OF_SILENT)
        assert [i["kind"] for i in res.incidents] == ["hop_silent"]
        assert kinds(receiver.events()) == [
            ("incident_started", "shipped"),
            ("new_findings", "stalled"),
        ]
        started, found = receiver.events()
        assert started["since"] and started["orders"] == 5 and started["pipeline"] == "notify-test"
        assert started["id"].startswith("incident_started/|hop_silent|shipped|run")
        assert found["count"] == 5 and [f["order_id"] for f in found["findings"]] == [
            f"o-{i}" for i in range(5)
        ]
        assert "c0@example.com" not in orjson.dumps(receiver.requests).decode()  # no personal data
        shipments(store)
        for _ in range(2):
            run(store, cfg, AS_OF_AFTER)
        assert kinds(receiver.events())[2:] == [("incident_ended", "shipped")]
        ended = receiver.events()[2]
        assert ended["id"] == "incident_ended/" + started["id"].partition("/")[2]
        assert len(receiver.requests) == 2  # one message per run that had something to tell
        with store.engine.connect() as conn:
            rows = outbox.rows(conn)
        assert [(r["event"], r["status"], r["attempts"]) for r in rows] == [
            ("incident_started", "sent", 1), ("new_findings", "sent", 1),
            ("incident_ended", "sent", 1),
        ]  # fmt: skip


def test_a_new_episode_of_the_same_incident_is_sent_again(
    tmp_path: Path, receiver: Receiver
) -> None:
    cfg = make_config(receiver.url, events='["incident_started", "incident_ended"]')
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        checkouts(store, 3)
        run(store, cfg, AS_OF_SILENT)
        shipments(store, 3)
        run(store, cfg, AS_OF_AFTER)
        store.write_batch(
            events=[OrderEvent("late", "o-late", "checkout", AS_OF_AFTER + MIN, "shop", "x:1")]
        )
        run(store, cfg, AS_OF_AFTER + 3 * 60 * MIN)
        run(store, cfg, AS_OF_AFTER + 3 * 60 * MIN)
    evs = receiver.events()
    assert kinds(evs) == [("incident_started", "shipped"), ("incident_ended", "shipped"),
                          ("incident_started", "shipped")]  # fmt: skip
    assert evs[0]["id"] != evs[2]["id"]


def test_retried_after_the_receiver_answers_500(tmp_path: Path, receiver: Receiver) -> None:
    cfg = make_config(receiver.url)
    receiver.codes = [500]
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        checkouts(store)
        res = reconcile(store, cfg, as_of=AS_OF_SILENT)
        t = 1_900_000_000 * S
        record_run(store, cfg, res, now=t)
        rep = deliver_pending(store, cfg, now=t)
        assert rep.sent == 0 and rep.failed == 2 and rep.errors == ["ops: HTTP 500"]
        with store.engine.connect() as conn:
            rows = outbox.rows(conn)
        assert {(r["status"], r["attempts"], r["last_error"]) for r in rows} == {
            ("pending", 1, "HTTP 500")
        }
        assert rows[0]["next_attempt_at"] == t + notify.BACKOFF_FIRST
        assert deliver_pending(store, cfg, now=t + notify.BACKOFF_FIRST - 1).sent == 0  # waits
        assert len(receiver.requests) == 1
        rep = deliver_pending(store, cfg, now=t + notify.BACKOFF_FIRST)
        assert rep.sent == 2 and rep.failed == 0
        assert deliver_pending(store, cfg, now=t + 10 * notify.BACKOFF_MAX).sent == 0
    assert [r["code"] for r in receiver.requests] == [500, 200]
    assert receiver.requests[0]["body"] == receiver.requests[1]["body"]  # the same message again
    assert kinds(receiver.events()) == [
        ("incident_started", "shipped"),
        ("new_findings", "stalled"),
    ]


def test_none_lost_while_the_receiver_is_down(tmp_path: Path, receiver: Receiver) -> None:
    cfg = make_config(receiver.url)
    receiver.stop()  # down: connections are refused
    t = 1_900_000_000 * S
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        checkouts(store)
        for k in range(3):  # runs go on while it is down; none fails
            res = reconcile(store, cfg, as_of=AS_OF_SILENT)
            record_run(store, cfg, res, now=t + k * notify.BACKOFF_MAX)
            rep = deliver_pending(store, cfg, now=t + k * notify.BACKOFF_MAX)
            assert rep.sent == 0 and rep.errors[0].startswith("ops: cannot reach the receiver")
        shipments(store)
        res = reconcile(store, cfg, as_of=AS_OF_AFTER)
        record_run(store, cfg, res, now=t + 3 * notify.BACKOFF_MAX)
        with store.engine.connect() as conn:
            rows = outbox.rows(conn)
        assert [r["attempts"] for r in rows] == [3, 3, 0]
        assert all(r["status"] == "pending" for r in rows)
        receiver.start()  # back, on the same port
        rep = deliver_pending(store, cfg, now=t + 4 * notify.BACKOFF_MAX)
        assert rep.sent == 3
    assert len(receiver.requests) == 1  # everything that waited, in one message, in order
    assert kinds(receiver.events()) == [
        ("incident_started", "shipped"), ("new_findings", "stalled"), ("incident_ended", "shipped"),
    ]  # fmt: skip


def test_a_slow_receiver_does_not_hold_up_the_run(tmp_path: Path, receiver: Receiver) -> None:
    cfg = make_config(receiver.url, extra='timeout = "300ms"')
    receiver.delay = 2.0
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        checkouts(store)
        res = reconcile(store, cfg, as_of=AS_OF_SILENT)
        t0 = time.perf_counter()
        rep = notify_after_run(store, cfg, res)
        took = time.perf_counter() - t0
        assert rep is not None and rep.errors == ["ops: timed out after 0.3s"]
        with store.engine.connect() as conn:
            assert {r["status"] for r in outbox.rows(conn)} == {"pending"}
    assert took < 1.5


def test_cli_reconcile_notifies_and_never_fails_for_it(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    toml = PIPELINE + f'\n[[notify]]\nurl = "{receiver.url}"\nformat = "slack"\n'
    (tmp_path / "ordertrail.toml").write_text(toml)
    with Store(url) as store:
        checkouts(store)
    args = ["--db", url, "reconcile", "--as-of", "2026-03-01T15:00:00Z", "--format", "json"]
    for _ in range(2):
        r = invoke(tmp_path, *args)
        assert r.exit_code == 0, r.stderr
        orjson.loads(r.stdout)  # stdout stays the JSON document
    assert len(receiver.requests) == 1
    text = receiver.requests[0]["body"]["text"]
    assert "incident started: *shipped* is silent" in text and "notify-test" in text
    receiver.stop()
    with Store(url) as store:
        shipments(store)
    r = invoke(
        tmp_path, "--db", url, "reconcile", "--as-of", "2026-03-01T17:00:00Z", "--fail-on",
        "hop_silent",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr  # the receiver being down changes nothing about the run
    assert "notify 127.0.0.1: cannot reach the receiver" in caplog.text


def test_headers_token_env_url_env_and_slack_escapes(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_URL", receiver.url + "?k=1")
    monkeypatch.setenv("HOOK_TOKEN", "s3cret-token")
    cfg = parse_config(
        __import__("tomllib").loads(
            PIPELINE.replace('name = "shipped"', 'name = "ship<&>ped"').replace(
                '["shipped"]', '["ship<&>ped"]'
            )
            + '\n[[notify]]\nurl_env = "HOOK_URL"\ntoken_env = "HOOK_TOKEN"\nformat = "slack"\n'
            'headers = { "X-Team" = "support" }\nbase_url = "https://ot.example.com/"\n'
        )
    )
    assert cfg.notify[0].name == "hook_url"
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        checkouts(store)
        run(store, cfg, AS_OF_SILENT)
    (req,) = receiver.requests
    assert req["path"] == "/hook?k=1"
    assert req["headers"]["Authorization"] == "Bearer s3cret-token"
    assert req["headers"]["X-Team"] == "support"
    text = req["body"]["text"]
    assert (
        "*ship&lt;&amp;&gt;ped* is silent" in text and "<https://ot.example.com/incidents|" in text
    )


def test_missing_env_is_an_error_kept_for_later(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_HOOK", raising=False)
    cfg = parse_config(
        __import__("tomllib").loads(PIPELINE + '\n[[notify]]\nurl_env = "NO_SUCH_HOOK"\n')
    )
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        checkouts(store)
        res = reconcile(store, cfg, as_of=AS_OF_SILENT)
        rep = notify_after_run(store, cfg, res)
        assert rep is not None and rep.errors == [
            "no_such_hook: $NO_SUCH_HOOK is not set (it should hold the webhook URL)"
        ]
        monkeypatch.setenv("NO_SUCH_HOOK", receiver.url)
        assert deliver_pending(store, cfg, now=notify.now_us() + notify.BACKOFF_FIRST).sent == 1
    assert kinds(receiver.events()) == [("incident_started", "shipped")]


def test_min_interval_holds_messages_and_sends_them_together(
    tmp_path: Path, receiver: Receiver
) -> None:
    cfg = make_config(receiver.url, extra='min_interval = "10m"')
    t = 1_900_000_000 * S
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        checkouts(store)
        record_run(store, cfg, reconcile(store, cfg, as_of=AS_OF_SILENT), now=t)
        assert deliver_pending(store, cfg, now=t).sent == 2
        shipments(store)
        record_run(store, cfg, reconcile(store, cfg, as_of=AS_OF_AFTER), now=t + MIN)
        assert deliver_pending(store, cfg, now=t + MIN).sent == 0  # within 10m of the last
        assert deliver_pending(store, cfg, now=t + 10 * MIN).sent == 1
    assert [len(r["body"]["events"]) for r in receiver.requests] == [2, 1]


def test_only_subscribed_events_are_sent(tmp_path: Path, receiver: Receiver) -> None:
    cfg = make_config(receiver.url, events='["incident_ended:hop_silent"]')
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        checkouts(store)
        run(store, cfg, AS_OF_SILENT)
        assert receiver.requests == []
        shipments(store)
        run(store, cfg, AS_OF_AFTER)
        with store.engine.connect() as conn:
            assert [(r["event"], r["status"]) for r in outbox.rows(conn)] == [
                ("incident_started", "skipped"), ("incident_ended", "sent"),
            ]  # fmt: skip
    assert kinds(receiver.events()) == [("incident_ended", "shipped")]


def test_concurrent_deliveries_send_each_once(tmp_path: Path, receiver: Receiver) -> None:
    cfg = make_config(receiver.url)
    receiver.delay = 0.3
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        checkouts(store)
        record_run(store, cfg, reconcile(store, cfg, as_of=AS_OF_SILENT))
        threads = [threading.Thread(target=deliver_pending, args=(store, cfg)) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert len(receiver.requests) == 1 and len(receiver.events()) == 2


def test_serve_every_reconciles_in_the_background_and_notifies(
    tmp_path: Path, receiver: Receiver
) -> None:
    from ordertrail.serve.loop import Scheduler

    (tmp_path / "ordertrail.toml").write_text(
        PIPELINE + f'\n[[notify]]\nname = "ops"\nurl = "{receiver.url}"\n'
    )
    cfg = load_config(tmp_path / "ordertrail.toml")
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        checkouts(store)
        sched = Scheduler(store, cfg, every=3600, as_of=AS_OF_SILENT, retry_every=0.2)
        sched.start()
        try:
            deadline = time.monotonic() + 60
            while sched.state.finished is None and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            sched.stop()
        assert sched.state.ok, sched.state.error
        with store.engine.connect() as conn:
            n_runs = conn.exec_driver_sql("SELECT count(*) FROM runs").scalar()
    assert n_runs == 1
    assert kinds(receiver.events()) == [("incident_started", "shipped")]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "notify[0].url: set either url or url_env"),
        ({"url": "hooks.example.com/x"}, "notify[0].url: must be an http:// or https:// URL"),
        ({"url": "https://h/x", "format": "teams"}, "notify[0].format: must be one of json, slack"),
        ({"url": "https://h/x", "events": ["incident_start"]},
         "unknown event 'incident_start' (did you mean 'incident_started'?)"),
        ({"url": "https://h/x", "events": ["finding:lost"]}, "unknown event 'finding:lost'"),
        ({"url": "https://h/x", "min_interval": "soon"}, "notify[0].min_interval: not a duration"),
        ({"url": "https://h/x", "timeout": "5m"}, "notify[0].timeout: must be between 100ms and 60s"),
        ({"url": "https://h/x", "headers": {"X A": "1"}}, "'X A' is not an HTTP header name"),
        ({"url": "https://h/x", "token_env": "not-a-var"}, "must name an environment variable"),
        ({"url": "https://h/x", "retries": 3}, "notify[0].retries: unknown key"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"hops": [{"name": "a"}], "notify": [table]})
    assert message in str(e.value)


def test_two_targets_need_distinct_names() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(
            {"hops": [{"name": "a"}], "notify": [{"url": "https://h/1"}, {"url": "https://h/2"}]}
        )
    assert "notify[1].name: 'h' is the name of notify[0] too" in str(e.value)


def test_finding_kinds_match_the_engine() -> None:
    from ordertrail.reconcile import KINDS

    assert tuple(FINDING_KINDS) == tuple(KINDS)
