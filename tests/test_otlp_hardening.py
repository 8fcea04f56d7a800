"""The OTLP receiver under hostile and broken input (issue 10): body limits and gzip bombs, read
timeouts against slow clients, throttling with Retry-After, the bearer token, TLS, malformed HTTP
framing, clean stops, and a local load test. Every client here talks to 127.0.0.1 only; the
exporters are the real OpenTelemetry SDK's."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ordertrail.collectors import otlp, otlp_http
from ordertrail.collectors.otlp import OtlpCollector
from ordertrail.errors import ConfigError, StoreError
from ordertrail.schemas.config import load_config
from ordertrail.store import Store

HOPS = """
[[hops]]
name = "checkout"
"""


def toml(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value).lower()


def write_config(d: Path, **keys: Any) -> Path:
    keys.setdefault("listen", "127.0.0.1:0")
    source = "\n".join(f"{k} = {toml(v)}" for k, v in keys.items())
    p = d / "ordertrail.toml"
    p.write_text(f'{HOPS}\n[[sources]]\nname = "spans"\nkind = "otlp"\n{source}\n')
    return p


def spans_body(prefix: str, n: int = 1) -> bytes:
    """An ExportTraceServiceRequest with ``n`` hop spans of orders ``prefix-0`` ..."""
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(n):
        sp = ss.spans.add()
        sp.trace_id = hashlib.md5(prefix.encode()).digest()
        sp.span_id = (i + 1).to_bytes(8, "big")
        sp.end_time_unix_nano = 1_772_366_401_000_000_000
        for k, v in (("order.id", f"{prefix}-{i}"), ("order.hop", "checkout")):
            a = sp.attributes.add()
            a.key, a.value.string_value = k, v
    return req.SerializeToString()


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@contextmanager
def receiver(
    tmp_path: Path, sqlite_url: str, **keys: Any
) -> Iterator[tuple[OtlpCollector, int, Store]]:
    """An otlp source collecting in a thread; yields it, its port and the store."""
    cfg = load_config(write_config(tmp_path, **keys))
    with Store(sqlite_url) as s:
        col = OtlpCollector(s, cfg, cfg.sources[0], idle_timeout=120)
        th = threading.Thread(target=col.run, daemon=True)
        th.start()
        wait_until(lambda: col.server is not None)
        try:
            yield col, col.address[1], s
        finally:
            col.stop()
            th.join(60)
            assert not th.is_alive()


def request(
    body: bytes, *headers: str, length: bool = True, ctype: str = "application/x-protobuf"
) -> bytes:
    lines = ["POST /v1/traces HTTP/1.1", "Host: test", f"Content-Type: {ctype}", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


Answer = tuple[int | None, dict[str, str], bytes]


def read_answer(s: socket.socket) -> Answer:
    """One HTTP response off the socket: (status, headers, body); None when closed unanswered.
    Reads no byte past the response, so that pipelined answers can be read one by one."""
    head = b""
    try:
        while not head.endswith(b"\r\n\r\n"):
            byte = s.recv(1)
            if not byte:
                return None, {}, head
            head += byte
    except ConnectionResetError:
        return None, {}, head
    first, *lines = head[:-4].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    status = int(first.split()[1])
    n = 0 if status < 200 else int(headers.get("content-length", "-1"))  # -1: till closed
    body = b""
    while len(body) < n or n < 0:
        data = s.recv(n - len(body) if n >= 0 else 65536)
        if not data:
            break
        body += data
    return status, headers, body


def roundtrip(port: int, data: bytes, timeout: float = 10.0) -> Answer:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return read_answer(s)


def closed_by_server(s: socket.socket) -> bool:
    """Whether the server closed this (non-blocking) connection."""
    try:
        return s.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def status_message(body: bytes) -> str:
    """The message of the google.rpc.Status an OTLP/HTTP error answer carries."""
    from google.rpc import status_pb2

    st = status_pb2.Status()
    st.ParseFromString(body)
    return str(st.message)


def order_ids(s: Store) -> set[str]:
    with s.engine.connect() as c:
        return {r[0] for r in c.exec_driver_sql("SELECT order_id FROM events")}


# -- chunked bodies --------------------------------------------------------------------------


def test_chunked_bodies_are_read_and_stored(tmp_path: Path, sqlite_url: str) -> None:
    with receiver(tmp_path, sqlite_url) as (col, port, s):
        body = spans_body("CH", 3)
        st, _, _ = roundtrip(
            port,
            request(chunked(body[:7], body[7:40], body[40:]), "Transfer-Encoding: chunked",
                    length=False),
        )  # fmt: skip
        assert st == 200
        gz = gzip.compress(spans_body("CG", 2))
        st, _, _ = roundtrip(
            port,
            request(chunked(gz[:10], gz[10:]), "Transfer-Encoding: chunked",
                    "Content-Encoding: gzip", length=False),
        )  # fmt: skip
        assert st == 200
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:  # pipelined
            c.sendall(b"".join(request(spans_body(f"P{i}")) for i in range(3)))
            assert [read_answer(c)[0] for _ in range(3)] == [200] * 3
    assert order_ids(s) == {"CH-0", "CH-1", "CH-2", "CG-0", "CG-1", "P0-0", "P1-0", "P2-0"}
    assert col.report.stored == 8


# -- body limits -----------------------------------------------------------------------------


def test_bodies_over_the_limits_get_413_and_store_nothing(tmp_path: Path, sqlite_url: str) -> None:
    with receiver(tmp_path, sqlite_url, max_body="64KiB", max_decompressed_body="1MiB") as (
        col,
        port,
        s,
    ):
        # a declared 1 GiB body is refused before a byte of it is read
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            t0 = time.monotonic()
            c.sendall(request(b"", "Content-Length: 1073741824", length=False))
            st, hdr, body = read_answer(c)
            assert st == 413 and time.monotonic() - t0 < 2
            assert hdr["content-type"] == "application/x-protobuf"
            assert status_message(body) == "request body larger than max_body (64KiB)"
        # a chunked body with no declared length is cut off as it streams in
        big = os.urandom(256 * 1024)
        st, _, body = roundtrip(
            port, request(chunked(*(big[i : i + 8192] for i in range(0, len(big), 8192))),
                          "Transfer-Encoding: chunked", length=False),
        )  # fmt: skip
        assert st == 413 and "max_body (64KiB)" in status_message(body)
        # gzip bombs: one member, and many concatenated members, each far beyond 1 MiB
        one = gzip.compress(bytes(32 << 20), 9)
        member = gzip.compress(bytes(4 << 20), 9)
        for bomb in (one, member * 10):
            assert len(bomb) < 64 * 1024
            st, _, body = roundtrip(port, request(bomb, "Content-Encoding: gzip"))
            assert st == 413
            assert status_message(body) == (
                "request body, decompressed, larger than max_decompressed_body (1MiB)"
            )
        # JSON gets its error as JSON
        st, hdr, body = roundtrip(
            port, request(gzip.compress(b" " * (2 << 20)), "Content-Encoding: gzip",
                          ctype="application/json"),
        )  # fmt: skip
        assert st == 413 and hdr["content-type"] == "application/json"
        assert "max_decompressed_body" in orjson.loads(body)["message"]
        # and the receiver still takes what fits
        assert roundtrip(port, request(spans_body("OK")))[0] == 200
    assert order_ids(s) == {"OK-0"}
    assert col.receiver is not None and col.receiver.refused[413] == 5


def test_decoder_never_holds_more_than_the_limit() -> None:
    reserved: list[int] = []
    dec = otlp_http._Decoder("gzip", 1000, reserved.append)
    bomb = gzip.compress(bytes(10 << 20))
    with pytest.raises(otlp_http._TooLarge):
        for i in range(0, len(bomb), 100):
            dec.feed(bomb[i : i + 100])
    assert len(dec.out) <= 1000 and sum(reserved) == len(dec.out)
    # gzip members one after another (and zero padding after the last one) are one body
    dec = otlp_http._Decoder("gzip", 1 << 20, reserved.append)
    data = gzip.compress(b"abc") + gzip.compress(b"def") + bytes(8)
    for i in range(0, len(data), 5):
        dec.feed(data[i : i + 5])
    assert dec.finish() == b"abcdef"
    dec = otlp_http._Decoder("deflate", 1 << 20, reserved.append)
    dec.feed(zlib.compress(b"xyz"))
    assert dec.finish() == b"xyz"

    def full(n: int) -> None:
        raise otlp_http._Busy

    with pytest.raises(otlp_http._Busy):  # the memory for bodies is taken
        otlp_http._Decoder("identity", 1 << 20, full).feed(b"x")


def test_corrupt_and_undecodable_bodies_get_400(tmp_path: Path, sqlite_url: str) -> None:
    good = gzip.compress(spans_body("GZ"))
    cases: list[tuple[bytes, tuple[str, ...], str, str]] = [
        (b"\x1f\x8b" + bytes(20), ("Content-Encoding: gzip",), "application/x-protobuf",
         "cannot decompress the body"),
        (good[:-6], ("Content-Encoding: gzip",), "application/x-protobuf",
         "the compressed body ends early"),
        (good + b"trailing garbage", ("Content-Encoding: gzip",), "application/x-protobuf",
         "cannot decompress the body"),
        (b"not protobuf at all \xff", (), "application/x-protobuf", "cannot parse OTLP request"),
        (b"[1, 2]", (), "application/json", "cannot parse OTLP request"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', (),
         "application/json", "cannot parse OTLP request"),
        (b"{" * 5000 + b"}" * 5000, (), "application/json", "cannot parse OTLP request"),
    ]  # fmt: skip
    with receiver(tmp_path, sqlite_url) as (_, port, s):
        for body, headers, ctype, message in cases:
            st, _, answer = roundtrip(port, request(body, *headers, ctype=ctype))
            shown = orjson.loads(answer)["message"] if "json" in ctype else status_message(answer)
            assert (st, shown.startswith(message)) == (400, True), (body[:30], shown)
        st, _, _ = roundtrip(port, request(b"", "Content-Encoding: gzip"))
        assert st == 200  # an empty request is a success (the OTLP specification)
        st, _, answer = roundtrip(port, request(b"", ctype="text/plain"))
        assert st == 415 and "unsupported content type 'text/plain'" in status_message(answer)
        st, _, answer = roundtrip(port, request(good, "Content-Encoding: br"))
        assert st == 415 and "unsupported content encoding 'br'" in status_message(answer)
        assert roundtrip(port, request(good, "Content-Encoding: gzip"))[0] == 200
    assert order_ids(s) == {"GZ-0"}


# -- malformed framing -----------------------------------------------------------------------


def test_malformed_framing_gets_400_or_a_quiet_close(
    tmp_path: Path, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    body = spans_body("FR")
    head = b"POST /v1/traces HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-protobuf\r\n"
    answered = {
        "Content-Length: abc": head + b"Content-Length: abc\r\n\r\n",
        "negative Content-Length": head + b"Content-Length: -5\r\n\r\n",
        "two Content-Lengths": head + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
        "Content-Length and chunked": head
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "a bad chunk size": head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
        "a TLS hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200),
        "binary garbage": os.urandom(64).replace(b"\r", b"").replace(b"\n", b"") + b"\r\n\r\n",
        "a header without a colon": head + b"this is no header\r\n\r\n",
        "headers beyond 16 KiB": head + b"X-Pad: " + b"a" * 40_000,
        "a bare LF in the request line": b"POST /v1/traces\nHTTP/1.1\r\n\r\n",
    }
    with receiver(tmp_path, sqlite_url, read_timeout="1s") as (_, port, s):
        for name, data in answered.items():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(data)
                st, _, _ = read_answer(c)
                assert st == 400, name
                assert closed_by_server(c) or c.recv(1) == b"", name
        # requests that end early, or never: the connection is closed without an answer
        quiet = {
            "HTTP/0.9": b"GET /v1/traces\r\n",
            "headers cut short": head,
            "a body cut short": head + b"Content-Length: 1000\r\n\r\n" + body,
            "chunks cut short": head + b"Transfer-Encoding: chunked\r\n\r\n10\r\nabc",
            "waits for 100-continue, sends nothing": head
            + b"Expect: 100-continue\r\nContent-Length: 100\r\n\r\n",
        }
        for data in quiet.values():  # the client hangs up
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(data)
        staying = []
        for name, data in quiet.items():  # the client stays, and is timed out
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            c.sendall(data)
            staying.append((name, c))
        t0 = time.monotonic()
        for name, c in staying:
            st, _, _ = read_answer(c)
            if st == 100:  # the receiver asked for the body it is ready to read
                st, _, _ = read_answer(c)
            assert st is None and time.monotonic() - t0 < 3, name
            c.close()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:  # a reset mid-body
            c.sendall(head + b"Content-Length: 1000\r\n\r\nabc")
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        time.sleep(0.3)
        assert roundtrip(port, request(body))[0] == 200  # and the receiver goes on
    assert order_ids(s) == {"FR-0"}
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text


# -- timeouts --------------------------------------------------------------------------------


def raise_fd_limit(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def test_slow_loris_connections_are_closed_after_the_read_timeout(
    tmp_path: Path, sqlite_url: str
) -> None:
    raise_fd_limit(4096)
    head = b"POST /v1/traces HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-protobuf\r\n"
    with receiver(tmp_path, sqlite_url, read_timeout="2s") as (_, port, s):
        conns: list[tuple[socket.socket, bytes]] = []  # socket, what it trickles
        t0 = time.monotonic()
        for i in range(1000):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            kind = i % 3
            if kind == 0:  # a header a byte at a time
                c.sendall(head + b"X-Slow: ")
            elif kind == 1:  # whole headers, then a body a byte at a time
                c.sendall(head + b"Content-Length: 100000\r\n\r\n")
            c.setblocking(False)  # kind 2 sends nothing at all
            conns.append((c, b"" if kind == 2 else b"a"))
        # the receiver answers others meanwhile, at once
        t1 = time.monotonic()
        assert roundtrip(port, request(spans_body("SL")), timeout=5)[0] == 200
        assert time.monotonic() - t1 < 1.5
        open_ = list(conns)
        while open_ and time.monotonic() - t0 < 8:
            for c, drip in open_:
                if drip:
                    with suppress(OSError):
                        c.send(drip)
            time.sleep(0.2)
            open_ = [(c, d) for c, d in open_ if not closed_by_server(c)]
        elapsed = time.monotonic() - t0
        for c, _ in conns:
            c.close()
        assert not open_, f"{len(open_)} of 1000 slow connections still open after {elapsed:.1f}s"
    assert order_ids(s) == {"SL-0"}


# -- throttling ------------------------------------------------------------------------------


@contextmanager
def slow_store(s: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Store writes wait until the yielded event is set (a request holds its slot till then)."""
    go = threading.Event()
    write = s.write_batch

    def waiting(*a: Any, **k: Any) -> Any:
        go.wait(30)
        return write(*a, **k)

    monkeypatch.setattr(s, "write_batch", waiting)
    try:
        yield go
    finally:
        go.set()


def test_a_busy_receiver_answers_503_with_retry_after(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(otlp_http, "QUEUE_WAIT", 1.0)
    with (
        receiver(tmp_path, sqlite_url, max_concurrency=1) as (col, port, s),
        slow_store(s, monkeypatch) as go,
    ):
        first = socket.create_connection(("127.0.0.1", port), timeout=10)
        first.sendall(request(spans_body("FIRST")))  # takes the one slot, and waits in the store
        time.sleep(0.3)
        answers: list[tuple[float, Answer]] = []
        t0 = time.monotonic()

        def post(i: int) -> None:
            answer = roundtrip(port, request(spans_body(f"B{i}")))
            answers.append((time.monotonic() - t0, answer))

        threads = [threading.Thread(target=post, args=(i,)) for i in range(40)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(10)
        assert len(answers) == 40
        for _, (st, hdr, body) in answers:
            assert (st, hdr.get("retry-after")) == (503, "1")
            assert status_message(body) == "busy: too many requests in progress; retry later"
        # 32 waited for the slot (QUEUE_PER_SLOT), the other 8 were told at once
        assert sum(1 for t, _ in answers if t < 0.7) == 40 - otlp_http.QUEUE_PER_SLOT
        go.set()
        assert read_answer(first)[0] == 200
        first.close()
        assert roundtrip(port, request(spans_body("AFTER")))[0] == 200
    assert order_ids(s) == {"FIRST-0", "AFTER-0"}
    assert col.receiver is not None and col.receiver.refused == {503: 40}


def test_slow_senders_hold_no_slot_but_bodies_are_bounded_in_memory(
    tmp_path: Path, sqlite_url: str
) -> None:
    keys = {"max_concurrency": 2, "max_decompressed_body": "64KiB"}  # 128 KiB for all bodies
    with receiver(tmp_path, sqlite_url, **keys) as (col, port, s):
        head = b"POST /v1/traces HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-protobuf\r\n"
        slow = []
        for _ in range(20):  # each sends a header and a few bytes of its body, then dawdles
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            c.sendall(head + b"Content-Length: 60000\r\n\r\nabc")
            slow.append(c)
        time.sleep(0.2)
        assert roundtrip(port, request(spans_body("FAST")))[0] == 200
        hogs = []
        for _ in range(2):  # two nearly whole bodies take the memory
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            c.sendall(head + b"Content-Length: 60000\r\n\r\n" + bytes(59_000))
            hogs.append(c)
        time.sleep(0.3)
        st, hdr, _ = roundtrip(port, request(spans_body("LATER") + bytes(20_000)))
        assert (st, hdr["retry-after"]) == (503, "1")
        for c in slow + hogs:
            c.close()
        time.sleep(0.3)  # their memory is given back
        assert roundtrip(port, request(spans_body("LAST")))[0] == 200
        assert col.receiver is not None and col.receiver._held == 0
    assert order_ids(s) == {"FAST-0", "LAST-0"}


def test_the_sdk_exporter_retries_after_503_and_its_spans_arrive(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    monkeypatch.setattr(otlp_http, "QUEUE_WAIT", 0.2)
    with (
        receiver(tmp_path, sqlite_url, max_concurrency=1) as (col, port, s),
        slow_store(s, monkeypatch) as go,
    ):
        first = socket.create_connection(("127.0.0.1", port), timeout=10)
        first.sendall(request(spans_body("FIRST")))
        receiver_ = col.receiver
        assert receiver_ is not None

        def free_the_slot_once_refused() -> None:
            wait_until(lambda: receiver_.refused[503] >= 1, 30)
            go.set()

        threading.Thread(target=free_the_slot_once_refused, daemon=True).start()
        time.sleep(0.2)
        p = TracerProvider()
        p.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces"))
        )
        with p.get_tracer("t").start_as_current_span(
            "hop", attributes={"order.id": "SDK-1", "order.hop": "checkout"}
        ):
            pass
        p.shutdown()
        assert read_answer(first)[0] == 200
        first.close()
    assert order_ids(s) == {"FIRST-0", "SDK-1"}
    assert receiver_.refused[503] >= 1


def test_store_outage_answers_503_and_a_bug_500(
    tmp_path: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with receiver(tmp_path, sqlite_url) as (_, port, s):
        real = s.write_batch

        def down(*a: Any, **k: Any) -> Any:
            raise StoreError("store write failed: disk I/O error")

        monkeypatch.setattr(s, "write_batch", down)
        st, hdr, body = roundtrip(port, request(spans_body("DOWN")))
        assert (st, hdr["retry-after"]) == (503, "5")
        assert status_message(body) == "store unavailable; retry later"
        monkeypatch.setattr(s, "write_batch", real)

        def broken(*a: Any, **k: Any) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(otlp, "map_batch", broken)
        st, _, body = roundtrip(port, request(spans_body("BUG")))
        assert st == 500 and "not stored" in status_message(body)
        monkeypatch.undo()
        assert roundtrip(port, request(spans_body("DOWN")))[0] == 200  # the exporter's retry
    assert order_ids(s) == {"DOWN-0"}
    [bug] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert bug.getMessage() == "source spans: cannot store a request: RuntimeError: a bug"
    assert not bug.exc_info


# -- token and TLS ---------------------------------------------------------------------------

TOKEN = "s3cret-token-of-the-warehouse"


def sdk_export(endpoint: str, order_id: str, **kw: Any) -> bool:
    """One hop span through the SDK's OTLP/HTTP exporter; whether the export succeeded."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

    results: list[SpanExportResult] = []

    class Exporter(OTLPSpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            results.append(super().export(spans))
            return results[-1]

    kw.setdefault("timeout", 5)
    p = TracerProvider()
    p.add_span_processor(SimpleSpanProcessor(Exporter(endpoint=endpoint, **kw)))
    with p.get_tracer("t").start_as_current_span(
        "hop", attributes={"order.id": order_id, "order.hop": "checkout"}
    ):
        pass
    p.shutdown()
    return results == [SpanExportResult.SUCCESS]


def test_bearer_token(tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OT_TEST_TOKEN", TOKEN)
    with receiver(tmp_path, sqlite_url, token_env="OT_TEST_TOKEN") as (col, port, s):
        url = f"http://127.0.0.1:{port}/v1/traces"
        body = spans_body("TOK")
        for auth in ((), ("Authorization: Bearer wrong",), (f"Authorization: Basic {TOKEN}",),
                     (f"Authorization: Bearer {TOKEN}x",), ("Authorization: Bearer",)):  # fmt: skip
            st, hdr, answer = roundtrip(port, request(body, *auth))
            assert (st, hdr["www-authenticate"]) == (401, 'Bearer realm="ordertrail"')
            assert status_message(answer) == "missing or wrong bearer token"
        assert not sdk_export(url, "SDK-NO-TOKEN")
        assert sdk_export(url, "SDK-TOKEN", headers={"Authorization": f"Bearer {TOKEN}"})
        st, _, _ = roundtrip(port, request(body, f"authorization: bearer  {TOKEN}"))
        assert st == 200
    assert order_ids(s) == {"SDK-TOKEN", "TOK-0"}
    assert col.receiver is not None and col.receiver.refused[401] == 6
    monkeypatch.delenv("OT_TEST_TOKEN")
    cfg = load_config(tmp_path / "ordertrail.toml")
    with Store(sqlite_url) as s, pytest.raises(ConfigError) as e:
        OtlpCollector(s, cfg, cfg.sources[0])
    assert str(e.value) == (
        f"{cfg.path}: source spans: token_env: environment variable OT_TEST_TOKEN is not set or "
        "empty"
    )


def make_cert(d: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl, "the TLS test needs the openssl command (Debian package openssl)"
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_tls_with_a_token(
    tmp_path: Path,
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO)
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # requests prefers them to its verify=
        monkeypatch.delenv(var, raising=False)
    cert, _ = make_cert(tmp_path)
    keys = {"tls_cert": "cert.pem", "tls_key": "key.pem", "token": TOKEN}  # next to the config
    with receiver(tmp_path, sqlite_url, **keys) as (_, port, s):
        url = f"https://127.0.0.1:{port}/v1/traces"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert sdk_export(url, "TLS-1", certificate_file=str(cert), headers=auth)
        assert not sdk_export(url, "TLS-UNTRUSTED", headers=auth, timeout=1)  # checks the cert
        # plain HTTP to the TLS port: refused, quietly
        assert roundtrip(port, request(spans_body("PLAIN"), f"Authorization: Bearer {TOKEN}"))[
            0
        ] in (None, 400)
        assert sdk_export(url, "TLS-2", certificate_file=str(cert), headers=auth)
    assert order_ids(s) == {"TLS-1", "TLS-2"}
    ours = [r for r in caplog.records if not r.name.startswith("opentelemetry")]
    assert not [r for r in ours if r.exc_info or r.levelno >= logging.ERROR]
    (tmp_path / "key.pem").write_text("not a key")
    cfg = load_config(tmp_path / "ordertrail.toml")
    with Store(sqlite_url) as s, pytest.raises(ConfigError) as e:
        OtlpCollector(s, cfg, cfg.sources[0])
    assert str(e.value).startswith(
        f"{cfg.path}: source spans: tls_cert: cannot load the certificate {cert} with the key "
    )


@pytest.mark.parametrize(
    ("keys", "warning"),
    [
        ({}, "beyond loopback, without a token: anyone who can reach it can write events"),
        ({"token": TOKEN}, "beyond loopback, without TLS: its token travels in clear text"),
    ],
)
def test_listening_beyond_loopback_warns(
    tmp_path: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    keys: dict[str, str],
    warning: str,
) -> None:
    bind = otlp_http.bind
    monkeypatch.setattr(otlp, "bind", lambda host, port: bind("127.0.0.1", 0))  # stay local
    with receiver(tmp_path, sqlite_url, listen="0.0.0.0:4318", **keys):
        pass
    [w] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert w.getMessage().startswith(f"source spans listens on 0.0.0.0:4318, {warning}")
    caplog.clear()
    with receiver(tmp_path, sqlite_url, listen="localhost:0"):
        pass
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- config ----------------------------------------------------------------------------------


def test_receiver_config_keys(tmp_path: Path) -> None:
    cfg = load_config(write_config(
        tmp_path, max_body="512KiB", max_decompressed_body="4MB", max_concurrency=4,
        read_timeout="1m", token_env="OTLP_TOKEN", tls_cert="c.pem", tls_key="k.pem",
    ))  # fmt: skip
    src = cfg.sources[0]
    assert (src.max_body, src.max_decompressed_body, src.max_concurrency, src.read_timeout) == (
        512 * 1024, 4_000_000, 4, 60.0
    )  # fmt: skip
    assert (src.token, src.token_env, src.tls_cert, src.tls_key) == (
        None, "OTLP_TOKEN", "c.pem", "k.pem"
    )  # fmt: skip
    src = load_config(write_config(tmp_path, token=TOKEN)).sources[0]
    assert (src.max_body, src.max_decompressed_body, src.max_concurrency, src.read_timeout) == (
        4 << 20, 16 << 20, 8, 30.0
    )  # fmt: skip
    assert TOKEN not in repr(src)


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ({"max_body": "4XB"}, "max_body: not a size: '4XB' (use e.g. 512KiB, 4MiB, 1GiB or a number of bytes)"),
        ({"max_body": 0}, "max_body: must be between 1KiB and 1GiB, not 0"),
        ({"max_decompressed_body": "2GiB"}, "max_decompressed_body: must be between 1KiB and 1GiB, not '2GiB'"),
        ({"max_body": "9" * 400 + "MB"}, "max_body: too large"),
        ({"max_concurrency": 0}, "max_concurrency: must be a whole number from 1 to 1024, not 0"),
        ({"max_concurrency": "8"}, "max_concurrency: must be a whole number from 1 to 1024, not '8'"),
        ({"max_concurrency": True}, "max_concurrency: must be a whole number from 1 to 1024, not True"),
        ({"read_timeout": "soon"}, "read_timeout: not a duration: 'soon' (use e.g. 30s or 2m)"),
        ({"read_timeout": float("inf")}, "read_timeout: not a duration: inf (use e.g. 30s or 2m)"),
        ({"read_timeout": "9" * 400 + "d"}, "read_timeout: not a duration: '999"),
        ({"read_timeout": "0s"}, "read_timeout: must be between 100ms and 1h, not '0s'"),
        ({"read_timeout": "2h"}, "read_timeout: must be between 100ms and 1h, not '2h'"),
        ({"token": "two words"}, "token: must be printable ASCII without spaces"),
        ({"token": TOKEN, "token_env": "T"}, "token_env: set either token or token_env, not both"),
        ({"token_env": "1-BAD"}, "token_env: must name an environment variable, not '1-BAD'"),
        ({"tls_cert": "c.pem"}, "tls_key: required with tls_cert"),
        ({"tls_key": "k.pem"}, "tls_cert: required with tls_key"),
        ({"listen": "nowhere"}, "listen: must be HOST:PORT, e.g. 127.0.0.1:4318, 0.0.0.0:4318 or [::1]:4318, not 'nowhere'"),
        ({"listen": "127.0.0.1:99999"}, "listen: port must be between 0 and 65535, not 99999"),
        ({"listen": "::1:4318"}, "listen: write an IPv6 address in brackets, e.g. [::1]:4318, not '::1:4318'"),
        ({"max_bodies": "1MiB"}, "max_bodies: unknown key (did you mean 'max_body'?)"),
    ],
)  # fmt: skip
def test_bad_receiver_config_is_one_clear_error(
    tmp_path: Path, keys: dict[str, Any], error: str
) -> None:
    path = write_config(tmp_path, **keys)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: sources[0] (spans).{error}")


def test_bad_receiver_config_exits_2_from_collect(tmp_path: Path, sqlite_url: str) -> None:
    path = write_config(tmp_path, listen="0.0.0.0:port")
    r = subprocess.run(
        [sys.executable, "-m", "ordertrail", "--config", str(path), "--db", sqlite_url,
         "collect", "spans"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"Error: {path}: sources[0] (spans).listen: must be HOST:PORT, e.g. 127.0.0.1:4318, "
        "0.0.0.0:4318 or [::1]:4318, not '0.0.0.0:port'"
    ]


# -- ordertrail collect: signals, --idle-timeout, --max-messages ------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def collect_process(
    tmp_path: Path, sqlite_url: str, *args: str, **keys: Any
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``ordertrail collect spans`` in a process of its own, once it accepts connections."""
    port = free_port()
    path = write_config(tmp_path, listen=f"127.0.0.1:{port}", **keys)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ordertrail", "--config", str(path), "--db", sqlite_url,
         "collect", "spans", "--format", "json", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the collector never listened"
                time.sleep(0.05)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_finishes_the_request_in_flight_stores_it_and_exits_0(
    tmp_path: Path, sqlite_url: str, sig: signal.Signals
) -> None:
    with collect_process(tmp_path, sqlite_url) as (proc, port):
        data = request(spans_body("INFLIGHT", 3))
        c = socket.create_connection(("127.0.0.1", port), timeout=20)
        c.sendall(data[:-10])
        time.sleep(0.3)
        proc.send_signal(sig)

        def refused() -> bool:  # no longer accepting
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            except OSError:
                return True
            return False

        wait_until(refused)
        assert proc.poll() is None  # ... but still answering the request in flight
        c.sendall(data[-10:])
        assert read_answer(c)[0] == 200
        c.close()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    [rep] = orjson.loads(out)["sources"]
    assert (rep["records"], rep["stored"]) == (3, 3)
    assert "Traceback" not in err
    with Store(sqlite_url) as s:
        assert order_ids(s) == {"INFLIGHT-0", "INFLIGHT-1", "INFLIGHT-2"}


def test_idle_timeout_and_max_messages_still_stop_collect(tmp_path: Path, sqlite_url: str) -> None:
    t0 = time.monotonic()
    with collect_process(tmp_path, sqlite_url, "--idle-timeout", "1") as (proc, port):
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and time.monotonic() - t0 < 15, err
    with collect_process(tmp_path, sqlite_url, "--max-messages", "3") as (proc, port):
        assert roundtrip(port, request(spans_body("MM-A", 2)))[0] == 200
        assert proc.poll() is None
        assert roundtrip(port, request(spans_body("MM-B", 2)))[0] == 200
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert orjson.loads(out)["sources"][0]["records"] == 4


# -- load ------------------------------------------------------------------------------------


def memory_mib(pid: int) -> dict[str, float]:
    """Resident (VmRSS) and peak resident (VmHWM) memory of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


async def _post(port: int, data: bytes) -> tuple[int, dict[str, str]]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(data)
        await w.drain()
        status = int((await r.readline()).split()[1])
        headers = {}
        while (line := await r.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        return status, headers
    finally:
        w.close()


async def _load(port: int, n: int, spans: int, deadline: float) -> dict[str, Any]:
    """``n`` exporters posting at once, each retrying per Retry-After until answered 200."""
    first: Counter[int] = Counter()
    latencies: list[float] = []
    attempts = Counter[int]()

    async def exporter(i: int) -> None:
        data = request(spans_body(f"L{i}", spans))
        for attempt in range(100):
            t0 = time.perf_counter()
            status, headers = await _post(port, data)
            latencies.append(time.perf_counter() - t0)
            attempts[status] += 1
            if attempt == 0:
                first[status] += 1
            if status == 200:
                return
            assert status in (429, 503) and "retry-after" in headers, (status, headers)
            assert time.monotonic() < deadline, "load test out of time"
            await asyncio.sleep(float(headers["retry-after"]))

    t0 = time.perf_counter()
    await asyncio.gather(*(exporter(i) for i in range(n)))
    seconds = time.perf_counter() - t0
    latencies.sort()
    return {
        "seconds": seconds,
        "first": first,
        "attempts": attempts,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


async def _bombs(port: int, k: int) -> list[int]:
    """``k`` gzip bombs at once: 8 gzip members of 256 MiB of zeros each, 2 MB as sent, 2 GiB
    decompressed; and a body declared as 1 GiB."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    member = b"".join(z.compress(bytes(1 << 20)) for _ in range(256)) + z.flush()
    bomb = request(member * 8, "Content-Encoding: gzip")
    huge = request(b"", "Content-Length: 1073741824", length=False)
    answers = await asyncio.gather(*(_post(port, bomb) for _ in range(k)), _post(port, huge))
    return [st for st, _ in answers]


def test_load_1000_concurrent_exporters_and_gzip_bombs(
    tmp_path: Path, sqlite_url: str, record_property: Callable[[str, object], None]
) -> None:
    """The receiver (defaults: max_body 4MiB, max_decompressed_body 16MiB, max_concurrency 8) as
    its own process: gzip bombs leave its memory bounded; 1,000 exporters posting at once are
    all answered 200 or 503 + Retry-After, and every acknowledged span is stored."""
    raise_fd_limit(4096)
    n, spans = 1000, 5
    with collect_process(tmp_path, sqlite_url) as (proc, port):
        assert roundtrip(port, request(spans_body("WARM")))[0] == 200
        before = memory_mib(proc.pid)
        assert asyncio.run(_bombs(port, 8)) == [413] * 9
        after_bombs = memory_mib(proc.pid)
        grown = after_bombs["VmHWM"] - before["VmRSS"]
        # 8 bodies of at most 16 MiB each, and the zlib state; the old receiver took 4 GiB
        assert grown < 8 * 16 + 32, (before, after_bombs)
        stats = asyncio.run(_load(port, n, spans, time.monotonic() + 90))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert set(stats["first"]) <= {200, 503} and stats["attempts"][200] == n
    with Store(sqlite_url) as s:
        stored = order_ids(s)
    assert len(stored) == n * spans + 1  # every acknowledged span, and none twice
    assert {f"L{i}-{j}" for i in range(n) for j in range(spans)} <= stored
    figures = {
        "requests_per_s": round(n / stats["seconds"]),
        "p50_ms": round(stats["p50_ms"]),
        "p99_ms": round(stats["p99_ms"]),
        "first_answers": dict(stats["first"]),
        "attempts": dict(stats["attempts"]),
        "rss_mib_before_bombs": round(before["VmRSS"]),
        "peak_rss_mib_after_bombs": round(after_bombs["VmHWM"]),
    }
    for k, v in figures.items():
        record_property(k, v)
    print("load:", figures)
