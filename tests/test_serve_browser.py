"""The web view in a real headless browser (Debian's chromium driven by playwright; no browser is
ever downloaded): search by tracking number lands on the order with its missing hop, the
incident CSV lists the stalled orders, no console errors, no horizontal scroll at 390 px, and
the screenshot the README shows (docs/serve-order.png)."""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ordertrail.reconcile.runs import list_findings
from ordertrail.serve.app import ServeSettings, create_app
from ordertrail.store import Store
from tests.shop_store import AS_OF_US, Shop, build_shop

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "serve-order.png"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path = None
    if not path:
        if IN_CI:
            pytest.fail("CI=true and the browser tests need Debian's chromium and playwright")
        pytest.skip("no chromium/playwright here (apt-get install -y chromium)")
    return path


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    return build_shop(tmp_path_factory.mktemp("shop"))


@pytest.fixture(scope="module")
def server(shop: Shop) -> Iterator[str]:
    """`ordertrail serve`'s app under uvicorn on a free loopback port, in a thread."""
    import uvicorn

    store = Store(shop.url)
    app = create_app(store, shop.config, ServeSettings(as_of=AS_OF_US, scheduler=False))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    srv.capture_signals = lambda: _nothing()  # type: ignore[method-assign]  # not the main thread
    th = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and th.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    th.join(10)
    store.close()


def _nothing() -> Any:
    import contextlib

    return contextlib.nullcontext()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=ARGS)
        yield b
        b.close()


def _page(browser: Any, width: int, height: int = 844) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page, errors


def _no_horizontal_scroll(page: Any) -> None:
    wide = page.evaluate("document.documentElement.scrollWidth")
    view = page.evaluate("window.innerWidth")
    assert wide <= view, f"{page.url}: {wide}px wide in a {view}px window"


def test_search_a_tracking_number_on_a_phone(browser: Any, server: str, shop: Shop) -> None:
    order_id, _, _, _, objects = shop.fault("parcel_lost")
    tracking = objects[0].partition(":")[2]
    page, errors = _page(browser, 390)
    page.goto(server + "/")
    _no_horizontal_scroll(page)
    page.fill("input[name=q]", tracking)
    page.press("input[name=q]", "Enter")
    page.wait_for_url(f"**/order/{order_id}**")
    assert page.locator("h1").inner_text().strip() == f"Order {order_id}"
    missing = page.locator("#missing + ul").inner_text()
    assert "delivered" in missing and "overdue" in missing and tracking in missing
    assert "has not reached delivered" in page.locator(".tell").inner_text()
    _no_horizontal_scroll(page)
    for path in (
        "/incidents",
        "/status",
        f"/search?q={order_id[:-1]}",
        "/search?q=c7%40example.com",
    ):
        page.goto(server + path)
        _no_horizontal_scroll(page)
    page.close()
    assert errors == []


def test_incident_csv_lists_the_stalled_orders(browser: Any, server: str, shop: Shop) -> None:
    page, errors = _page(browser, 1100)
    page.goto(server + "/incidents")
    assert "Delivered has gone silent" in page.locator("h2").all_inner_texts()
    with page.expect_download() as dl:
        page.click("text=Download every affected order (CSV)")
    text = Path(dl.value.path()).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    with Store(shop.url) as store:
        stalled = {
            f["order_id"] for f in list_findings(store, kinds=["stalled"], hops=["delivered"])
        }
    assert stalled and {r["order_id"] for r in rows if r["incident"] == "hop_silent"} == stalled
    assert all(r["customer.email"].endswith("@example.com") for r in rows if r["order_id"])
    page.close()
    assert errors == []


def test_screenshot_of_the_order_page_for_the_readme(browser: Any, server: str, shop: Shop) -> None:
    order_id, _, _, _, objects = shop.fault("parcel_lost")
    page, errors = _page(browser, 1000, 900)
    page.goto(f"{server}/search?q={objects[0].partition(':')[2]}")
    page.wait_for_url(f"**/order/{order_id}**")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=False)
    page.close()
    assert errors == []
    assert SCREENSHOT.stat().st_size > 10_000
