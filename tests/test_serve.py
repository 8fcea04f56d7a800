"""`ordertrail serve`: search, order page, incidents (+ CSV), status, /metrics, access by token,
roles and --redact; the pages through Starlette's test client on a reconciled demo shop, and a
real `ordertrail serve` process bound to 0.0.0.0."""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from ordertrail.reconcile.runs import list_findings
from ordertrail.schemas.event import OrderEvent
from ordertrail.serve.access import COOKIE, AccessError, parse_tokens
from ordertrail.serve.app import ServeSettings, create_app
from ordertrail.store import Store
from tests.helpers import invoke
from tests.shop_store import AS_OF_US, Shop, build_shop

ADMIN = "admin-token-0123456789"
SUPPORT = "support-token-0123456789"
MASKED = "redacted-token-0123456789"
HTML = {"accept": "text/html"}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    return build_shop(tmp_path_factory.mktemp("shop"))


@pytest.fixture(scope="module")
def store(shop: Shop) -> Iterator[Store]:
    s = Store(shop.url)
    yield s
    s.close()


def client(store: Store, shop: Shop, **kw: Any) -> TestClient:
    settings = ServeSettings(as_of=AS_OF_US, scheduler=False, **kw)
    return TestClient(create_app(store, shop.config, settings), follow_redirects=True)


@pytest.fixture(scope="module")
def open_client(store: Store, shop: Shop) -> Iterator[TestClient]:
    with client(store, shop) as c:
        yield c


def test_search_by_tracking_number_opens_the_order_with_what_is_missing(
    shop: Shop, open_client: TestClient
) -> None:
    order_id, kind, hop, frm, objects = shop.fault("parcel_lost")
    assert (kind, hop, frm) == ("vanished", "delivered", "shipped")
    tracking = objects[0].partition(":")[2]
    r = open_client.get("/search", params={"q": tracking}, headers=HTML)
    assert r.status_code == 200
    assert r.url.path == f"/order/{order_id}" and r.url.params["by"] == f"shipment:{tracking}"
    html = r.text
    assert f'Order <code class="id">{order_id}</code>' in html
    assert 'Found by <code class="id">shipment:' in html
    missing = html.split('id="missing"')[1].split("</section>")[0]
    assert "<strong>delivered</strong>" in missing and "overdue" in missing and tracking in missing
    tell = html.split('id="tell"')[1].split("</section>")[0]
    assert "has not reached delivered" in tell and tracking in tell
    assert "lost between two steps" in html and "It was lost between shipped and delivered" in html
    assert "data/carrier/" in html and "data/shop/" in html  # source and source_ref per event
    assert "Where each part is" in html and f'class="id hit">{tracking}' in html
    assert 'class="gap">+' in html


def test_search_by_email_payment_and_attribute(
    shop: Shop, store: Store, open_client: TestClient
) -> None:
    r = open_client.get("/search", params={"q": "c7@example.com"}, headers=HTML)
    assert r.url.path == "/order/WO-000007"
    r = open_client.get("/search", params={"q": "customer.email=c7@example.com"}, headers=HTML)
    assert r.url.path == "/order/WO-000007"
    with store.engine.connect() as conn:
        ref = conn.exec_driver_sql(
            "SELECT attributes FROM events WHERE order_id = 'WO-000009' AND hop = 'payment'"
        ).scalar()
    import orjson

    pay = orjson.loads(ref)["payment_ref"]
    r = open_client.get("/search", params={"q": pay}, headers=HTML)
    assert r.url.path == "/order/WO-000009"


def test_a_parcel_of_two_orders_lists_both(
    shop: Shop, store: Store, open_client: TestClient
) -> None:
    from ordertrail.store import window as w

    via = {o.name: o.via for o in shop.config.objects}
    with store.engine.connect() as conn:
        parcels = [r[0] for r in conn.exec_driver_sql(
            "SELECT DISTINCT object_id FROM links WHERE kind = 'parcel' ORDER BY object_id")]  # fmt: skip
        mixed = next(
            (p, o)
            for p in parcels
            if len(o := w.orders_of_object(conn, "parcel", p, via, AS_OF_US)) == 2
        )
    parcel, orders = mixed
    r = open_client.get("/search", params={"q": parcel}, headers=HTML)
    assert r.status_code == 200 and r.url.path == "/search"
    assert "2 orders" in r.text and all(f'href="/order/{o}"' in r.text for o in orders)
    r = open_client.get(f"/order/{parcel}", headers=HTML)
    assert "2 orders" in r.text


def test_nothing_found_shows_the_closest_ids(open_client: TestClient) -> None:
    r = open_client.get("/search", params={"q": "WO-00012"}, headers=HTML)
    assert r.status_code == 200 and "Nothing matches" in r.text
    assert 'href="/order/WO-0001' in r.text
    r = open_client.get("/order/no-such-order", headers=HTML)
    assert r.status_code == 404 and "Nothing matches" in r.text
    r = open_client.get("/search", params={"q": ""}, headers=HTML)
    assert r.url.path == "/"


def test_data_is_rendered_as_text(tmp_path: Path, shop: Shop) -> None:
    evil = '<script>alert("x")</script>\x1b[31m\u202e'
    with Store(f"sqlite:///{tmp_path / 'evil.db'}") as store:
        store.write_batch(events=[
            OrderEvent("e1", evil, "checkout", AS_OF_US - 3600 * 1_000_000, "shop",
                       "<b>ref</b>", attributes={"customer.name": "<img src=x onerror=alert(1)>"},
                       objects={"item": ["<i>1</i>"]}),
        ])  # fmt: skip
        with client(store, shop) as c:
            r = c.get("/search", params={"q": evil}, headers=HTML)
    html = r.text
    assert r.status_code == 200
    where = r.history[0].headers["location"]
    assert where == "/order/%3Cscript%3Ealert%28%22x%22%29%3C%2Fscript%3E%1B%5B31m%E2%80%AE"
    assert "<script>" not in html and "<img" not in html and "<b>ref" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;\\x1b[31m\\u202e" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;b&gt;ref&lt;/b&gt;" in html
    assert "\x1b" not in html and "\u202e" not in html
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp


def test_incidents_page_and_csv_list_the_stalled_orders(
    shop: Shop, store: Store, open_client: TestClient
) -> None:
    stalled = list_findings(store, kinds=["stalled"], hops=["delivered"])
    assert len(stalled) > 20
    inc = [i for i in shop.run.incidents if i["kind"] == "hop_silent"]
    assert [i["hop"] for i in inc] == ["delivered"]
    r = open_client.get("/incidents", headers=HTML)
    assert "Delivered has gone silent" in r.text and f"{len(stalled)} orders held up" in r.text
    assert 'href="/incidents.csv"' in r.text
    r = open_client.get("/incidents.csv")
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    silent = [x for x in rows if x["incident"] == "hop_silent"]
    assert {x["order_id"] for x in silent} == {f["order_id"] for f in stalled}
    assert all(x["hop"] == "delivered" and x["from_hop"] == "shipped" for x in silent)
    first = silent[0]
    n = int(first["order_id"].removeprefix("WO-"))
    assert first["customer.email"] == f"c{n}@example.com" and first["customer.name"]
    assert all(x["objects"].startswith("shipment:") for x in silent)
    only = open_client.get("/incidents.csv", params={"hop": "delivered"}).text
    assert len(list(csv.DictReader(io.StringIO(only)))) == len(silent)


def test_status_page_in_plain_words(open_client: TestClient) -> None:
    html = open_client.get("/status", headers=HTML).text
    delivered = html.split("<strong>delivered</strong>")[1].split("</li>")[0]
    assert "silent" in delivered and "order" in delivered and "wait for it" in delivered
    checkout = html.split("<strong>checkout</strong>")[1].split("</li>")[0]
    assert "Healthy" in checkout and "Last event: 2026-02-2" in checkout
    assert "Last check" in html and "Sources" in html
    assert "Check now" not in html  # no write action without a token


def test_metrics_are_read_from_the_store(shop: Shop, store: Store, open_client: TestClient) -> None:
    r = open_client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    findings = {
        (s.labels["kind"], s.labels["hop"]): s.value for s in fams["ordertrail_findings"].samples
    }
    want: dict[tuple[str, str], int] = {}
    for f in list_findings(store):
        want[(f["kind"], f["hop"])] = want.get((f["kind"], f["hop"]), 0) + 1
    assert findings == want
    inc = {
        (s.labels["kind"], s.labels["hop"]): s.value for s in fams["ordertrail_incidents"].samples
    }
    assert inc[("hop_silent", "delivered")] == 1
    orders = {s.labels["hop"]: s.value for s in fams["ordertrail_incident_orders"].samples}
    assert orders["delivered"] == want[("stalled", "delivered")]
    events = {s.labels["source"]: s.value for s in fams["ordertrail_source_events"].samples}
    assert events == {k: float(v) for k, v in store.events_per_source().items()} | {
        s.name: 0.0 for s in shop.config.sources if s.name not in store.events_per_source()
    }
    quarantined = {
        s.labels["source"]: s.value for s in fams["ordertrail_source_quarantined"].samples
    }
    assert sum(quarantined.values()) == store.count_quarantine() > 0
    lag = {
        s.labels["source"]: s.value for s in fams["ordertrail_source_watermark_lag_seconds"].samples
    }
    assert set(lag) == {s.name for s in shop.config.sources}
    assert all(v >= 0 for v in lag.values())
    run = fams["ordertrail_last_run_timestamp_seconds"].samples[0].value
    assert abs(run - time.time()) < 24 * 3600
    took = fams["ordertrail_last_run_duration_seconds"].samples[0].value
    assert 0 < took <= shop.run.run["seconds"] + 1
    assert fams["ordertrail_last_run_as_of_timestamp_seconds"].samples[0].value == AS_OF_US / 1e6
    assert fams["ordertrail_store_up"].samples[0].value == 1


def test_tokens_are_checked_on_every_request(store: Store, shop: Shop) -> None:
    tokens = {ADMIN: "admin", SUPPORT: "support"}
    with client(store, shop, tokens=tokens) as c:
        for path in ("/", "/search?q=WO-000007", "/order/WO-000007", "/incidents",
                     "/incidents.csv", "/status", "/metrics"):  # fmt: skip
            r = c.get(path)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"] == 'Bearer realm="ordertrail"'
            assert "WO-000007" not in r.text
        r = c.get("/status", headers=HTML)
        assert r.status_code == 401 and 'action="/login"' in r.text  # a browser gets the form
        assert (
            c.get(
                "/metrics", headers={"authorization": "Bearer wrong-token-0123456789"}
            ).status_code
            == 401
        )
        assert c.get("/metrics", headers={"authorization": f"Bearer {SUPPORT}"}).status_code == 200
        assert c.get("/healthz").status_code == 200
        assert c.get("/static/style.css").status_code == 200
        # the login form: a wrong token is refused, the right one sets the cookie
        r = c.post("/login", data={"token": "nope", "next": "/status"})
        assert r.status_code == 401 and "not valid" in r.text
        r = c.post("/login", data={"token": ADMIN, "next": "/status"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/status"
        cookie = r.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert ADMIN not in cookie
        r = c.get("/status", headers=HTML)
        assert r.status_code == 200 and "Check now" in r.text and "Log out" in r.text
        r = c.post("/logout")
        assert c.get("/status").status_code == 401
        # no open redirect through the login form
        r = c.post(
            "/login", data={"token": ADMIN, "next": "//evil.example/x"}, follow_redirects=False
        )
        assert r.headers["location"] == "/"


def test_a_forged_or_stale_cookie_is_refused(store: Store, shop: Shop) -> None:
    from ordertrail.serve.access import Access

    access = Access({ADMIN: "admin"})
    good = access.make_cookie(ADMIN)
    assert access.cookie_token(good) == ADMIN
    tid, exp, sig = good.split(".")
    assert access.cookie_token(f"{tid}.{int(exp) + 9999}.{sig}") is None  # expiry changed
    assert access.cookie_token(access.make_cookie(ADMIN, now=0)) is None  # expired
    assert Access({SUPPORT: "admin"}).cookie_token(good) is None  # another server's token


def test_write_action_needs_an_admin_token_and_the_form_value(store: Store, shop: Shop) -> None:
    with client(store, shop) as c:  # loopback, no token: read only
        r = c.post("/actions/reconcile", headers=HTML)
        assert r.status_code == 403 and "write actions need an admin token" in r.text
    with client(store, shop, tokens={ADMIN: "admin", SUPPORT: "support"}) as c:
        r = c.post("/actions/reconcile", headers={"authorization": f"Bearer {SUPPORT}"})
        assert r.status_code == 403
        r = c.post("/actions/reconcile", headers={"authorization": f"Bearer {ADMIN}"},
                   follow_redirects=False)  # fmt: skip
        assert r.status_code == 303 and r.headers["location"] == "/status?started=1"
        c.post("/login", data={"token": ADMIN})
        assert c.post("/actions/reconcile", data={"csrf": "forged"}).status_code == 403
        form = c.get("/status").text.split('name="csrf" value="')[1].split('"')[0]
        r = c.post("/actions/reconcile", data={"csrf": form}, follow_redirects=False)
        assert r.status_code == 303


def test_redaction_by_flag_and_by_role(store: Store, shop: Shop) -> None:
    with client(store, shop, tokens={MASKED: "redacted", SUPPORT: "support"}) as c:
        for token, masked in ((MASKED, True), (SUPPORT, False)):
            h = {"authorization": f"Bearer {token}", **HTML}
            page = c.get("/order/WO-000007", headers=h).text
            csv_ = c.get("/incidents.csv", headers=h).text
            assert ("c***@example.com" in page) is masked
            assert ("c7@example.com" in page) is not masked
            assert ("***@example.com" in csv_) is masked
            assert ("Personal fields are masked" in page) is masked
    with client(store, shop, redact=True) as c:
        page = c.get("/order/WO-000007", headers=HTML).text
        assert "c***@example.com" in page and "c7@example.com" not in page


def test_settings_refuse_a_public_address_without_a_token(store: Store, shop: Shop) -> None:
    with pytest.raises(AccessError, match="needs a token"):
        create_app(store, shop.config, ServeSettings(host="0.0.0.0"))
    create_app(store, shop.config, ServeSettings(host="::1"))  # loopback too
    assert parse_tokens(f"support={SUPPORT}, redacted={MASKED}") == {
        SUPPORT: "support",
        MASKED: "redacted",
    }
    with pytest.raises(AccessError, match="ROLE=TOKEN"):
        parse_tokens(f"boss={SUPPORT}")
    with pytest.raises(AccessError, match="at least 16 characters"):
        parse_tokens("admin=short")


def test_cli_refuses_to_listen_publicly_without_a_token(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORDERTRAIL_SERVE_TOKEN", raising=False)
    monkeypatch.delenv("ORDERTRAIL_SERVE_TOKENS", raising=False)
    r = invoke(shop.root, "--db", shop.url, "serve", "--listen", "0.0.0.0:0")
    assert r.exit_code == 2
    assert "listening on 0.0.0.0 needs a token (--token or $ORDERTRAIL_SERVE_TOKEN)" in r.stderr
    r = invoke(shop.root, "--db", shop.url, "serve", "--listen", "0.0.0.0:0", "--token", "short")
    assert r.exit_code == 2 and "at least 16 characters" in r.stderr
    r = invoke(shop.root, "--db", shop.url, "serve", "--listen", "nowhere")
    assert r.exit_code == 2 and "--listen" in r.stderr
    r = invoke(shop.root, "--db", shop.url, "serve", "--every", "soon")
    assert r.exit_code == 2 and "--every" in r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_server_on_0_0_0_0_answers_401_without_the_token(shop: Shop) -> None:
    """`ordertrail serve` as a process bound to every address: no token, no data."""
    port = _free_port()
    env = {**os.environ, "ORDERTRAIL_SERVE_TOKEN": ADMIN, "ORDERTRAIL_SERVE_TOKENS": ""}
    exe = str(Path(sys.executable).parent / "ordertrail")
    proc = subprocess.Popen(
        [exe, "--config", str(shop.root / "ordertrail.toml"), "--db", shop.url, "serve",
         "--listen", f"0.0.0.0:{port}", "--as-of", "2026-03-01T00:00:00Z"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx2.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        r = httpx2.get(base + "/order/WO-000007")
        assert r.status_code == 401 and "WO-000007" not in r.text
        assert httpx2.get(base + "/metrics").status_code == 401
        auth = {"authorization": f"Bearer {ADMIN}"}
        r = httpx2.get(base + "/order/WO-000007", headers=auth)
        assert r.status_code == 200 and "WO-000007" in r.text
        fams = {
            f.name
            for f in text_string_to_metric_families(
                httpx2.get(base + "/metrics", headers=auth).text
            )
        }
        assert "ordertrail_findings" in fams
        r = httpx2.post(base + "/login", data={"token": ADMIN})
        assert r.status_code == 303 and COOKIE in r.headers["set-cookie"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"http://0.0.0.0:{port}/ (a token is required)" in err
    assert "WO-000007" not in err  # no access log with customers' searches


def test_pages_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    shop = build_shop(tmp_path, pg_url, orders=500)
    with Store(pg_url) as store, client(store, shop) as c:
        order_id, _, _, _, objects = shop.fault("parcel_lost")
        r = c.get("/search", params={"q": objects[0].partition(":")[2]}, headers=HTML)
        assert r.url.path == f"/order/{order_id}" and "<strong>delivered</strong>" in r.text
        stalled = {
            f["order_id"] for f in list_findings(store, kinds=["stalled"], hops=["delivered"])
        }
        rows = list(csv.DictReader(io.StringIO(c.get("/incidents.csv").text)))
        assert stalled and {x["order_id"] for x in rows if x["incident"] == "hop_silent"} == stalled
        fams = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
        assert sum(s.value for s in fams["ordertrail_findings"].samples) == len(
            list_findings(store)
        )
        assert "silent" in c.get("/status").text
