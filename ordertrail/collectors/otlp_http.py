"""The OTLP/HTTP receiver: a small Starlette app served by uvicorn, with the limits a listener on a
network needs. The collector (:mod:`ordertrail.collectors.otlp`) gives it the function that parses
and stores one export request; this module decides what gets that far:

- the bearer token, when one is configured (401 otherwise, compared in constant time);
- the content type (protobuf or JSON) and encoding (identity, gzip, deflate; 415 otherwise);
- the body size as sent (``max_body``) and after decompression (``max_decompressed_body``): 413,
  decided while the body streams in, so no more than the limit is ever held;
- memory for bodies: all requests together hold at most ``max_concurrency`` x
  ``max_decompressed_body`` bytes of bodies, else 503 with ``Retry-After`` (the OTLP
  specification's throttling); a slow sender holds what it sent, never a slot;
- ``max_concurrency`` requests, read whole, are stored at once; a few more wait a moment for a
  slot; beyond that 503 with ``Retry-After``;
- ``read_timeout``: a request must arrive whole, headers and body, within this time of its
  connection opening or of the previous response, else the connection is closed (slow-loris);
- malformed HTTP framing is refused by h11 with a 400 and a closed connection.

Every answer but 200 leaves the spans unstored; 200 comes only after the store committed them."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import socket
import threading
import zlib
from collections import Counter
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import h11
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from ordertrail.errors import StoreError

logger = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
LISTEN_BACKLOG = 2048  # connections the kernel queues before the receiver accepts them
MAX_HEADER_BYTES = 16 * 1024  # request line and headers; h11 answers 400 beyond
QUEUE_PER_SLOT = 32  # requests that may wait for a free slot, per slot
QUEUE_WAIT = 2.0  # s a request waits for a free slot before it is told to retry
RETRY_AFTER_BUSY = 1  # s, in Retry-After when every slot is taken
RETRY_AFTER_STORE = 5  # s, in Retry-After when the store cannot take the spans
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_PROTOBUF_TYPES = ("", PROTOBUF, "application/protobuf")
_ENCODINGS = ("identity", "gzip", "deflate")

# (body, content type) -> None once stored; raises BadRequest or StoreError
StoreRequest = Callable[[bytes | bytearray, str], None]


class BadRequest(ValueError):
    """The request's body cannot be decoded as an OTLP export request (answered 400)."""


class _Busy(Exception):
    """Every slot, or the memory for bodies, is taken (answered 503 with Retry-After)."""


class _TooLarge(Exception):
    """The body outgrew a limit (answered 413): ``key`` names it."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


@dataclass(frozen=True)
class ReceiverLimits:
    max_body: int  # bytes as sent
    max_decompressed_body: int  # bytes after decompression
    max_concurrency: int
    read_timeout: float  # s


def fmt_size(n: int) -> str:
    """``16MiB``, ``512KiB``; a size that is no whole number of them in bytes."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n:,} bytes"


class _Decoder:
    """Collects a body, decompressing gzip/deflate as it streams in: it never keeps more than
    ``limit`` decompressed bytes however well the input compresses (zlib is asked for at most one
    byte beyond what fits), and asks ``reserve`` for every byte it is about to keep (which raises
    to refuse)."""

    def __init__(self, encoding: str, limit: int, reserve: Callable[[int], None]):
        self.limit = limit
        self.reserve = reserve
        self.out = bytearray()
        self.compressed = encoding != "identity"
        self.z: Any = None
        self.fed = False

    def _keep(self, data: bytes) -> None:
        if len(self.out) + len(data) > self.limit:
            raise _TooLarge("max_decompressed_body")
        self.reserve(len(data))
        self.out += data

    def feed(self, data: bytes) -> None:
        if not self.compressed:
            self._keep(data)
            return
        while data:
            if self.z is None or self.z.eof:
                if self.z is not None and not data.strip(b"\0"):
                    return  # zero padding after the last gzip member (as gzip tolerates)
                self.z = zlib.decompressobj(wbits=47)  # gzip or zlib, by the stream's header
            self.fed = True
            try:
                self._keep(self.z.decompress(data, self.limit - len(self.out) + 1))
            except zlib.error as e:
                raise BadRequest(f"cannot decompress the body: {e}") from None
            data = self.z.unconsumed_tail or (self.z.unused_data if self.z.eof else b"")

    def finish(self) -> bytearray:
        if self.compressed and self.fed and not self.z.eof:
            raise BadRequest("the compressed body ends early")
        self.z = None
        return self.out


def _status_body(message: str, as_json: bool) -> bytes:
    """A google.rpc.Status with only its message: the body of every OTLP/HTTP error answer."""
    if as_json:
        return orjson.dumps({"message": message})
    text = message.encode()
    n, head = len(text), bytearray(b"\x12")
    while n > 0x7F:
        head.append(n & 0x7F | 0x80)
        n >>= 7
    head.append(n)
    return bytes(head) + text


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


class OtlpReceiver:
    """The ASGI application (``.app``) answering ``POST /v1/traces``."""

    def __init__(self, source: str, store: StoreRequest, limits: ReceiverLimits, token: str | None):
        self.source = source
        self.store = store
        self.limits = limits
        self._token = hashlib.sha256(token.encode()).digest() if token else None
        self._slots = asyncio.Semaphore(limits.max_concurrency)
        self._waiting = 0  # requests read whole, waiting for a slot
        self._queue_limit = limits.max_concurrency * QUEUE_PER_SLOT
        self._held = 0  # bytes of (decompressed) bodies held, in any request
        self._budget = limits.max_concurrency * limits.max_decompressed_body
        self.refused: Counter[int] = Counter()  # status -> requests answered with it
        routes = [
            Route(p, self._export, methods=["POST"]) for p in (TRACES_PATH, TRACES_PATH + "/")
        ]
        self.app = Starlette(routes=routes)

    # -- answers -----------------------------------------------------------------------------

    def _refuse(
        self,
        status: int,
        message: str,
        as_json: bool,
        request: Request,
        headers: dict[str, str] | None = None,
    ) -> Response:
        first = status not in self.refused
        self.refused[status] += 1
        client = request.client.host if request.client else "?"
        if first:  # the rest are summed up when the collector stops
            logger.warning(
                "source %s: answered %d to %s: %s (further ones are counted, and logged at debug "
                "level)", self.source, status, client, message,
            )  # fmt: skip
        else:
            logger.debug("source %s: answered %d to %s: %s", self.source, status, client, message)
        return Response(
            _status_body(message, as_json), status, headers, JSON if as_json else PROTOBUF
        )

    def _authorized(self, header: str | None) -> bool:
        scheme, _, given = (header or "").strip().partition(" ")
        digest = hashlib.sha256(given.strip().encode()).digest()
        ok = hmac.compare_digest(digest, self._token or b"")
        return ok and scheme.lower() == "bearer"

    # -- the endpoint ------------------------------------------------------------------------

    async def _export(self, request: Request) -> Response:
        ctype = _media_type(request.headers.get("content-type"))
        as_json = ctype == JSON
        if self._token is not None and not self._authorized(request.headers.get("authorization")):
            return self._refuse(
                401, "missing or wrong bearer token", as_json, request,
                {"WWW-Authenticate": 'Bearer realm="ordertrail"'},
            )  # fmt: skip
        if not as_json and ctype not in _PROTOBUF_TYPES:
            msg = f"unsupported content type {ctype!r}: send {PROTOBUF} or {JSON}"
            return self._refuse(415, msg, False, request)
        encoding = (request.headers.get("content-encoding") or "identity").strip().lower()
        if encoding not in _ENCODINGS:
            msg = f"unsupported content encoding {encoding!r}: send gzip or none"
            return self._refuse(415, msg, as_json, request)
        declared = request.headers.get("content-length")  # h11 checked it is one whole number
        if declared is not None and "transfer-encoding" in request.headers:
            # framing a proxy in front may read differently (request smuggling): RFC 9112 6.1
            return self._refuse(
                400, "both Content-Length and Transfer-Encoding", as_json, request,
                {"Connection": "close"},
            )  # fmt: skip
        if declared is not None and int(declared) > self.limits.max_body:
            return self._too_large("max_body", as_json, request)
        if self._waiting >= self._queue_limit:  # shed load before reading a byte
            return self._busy(as_json, request)
        decoder = _Decoder(encoding, self.limits.max_decompressed_body, self._reserve)
        try:
            answer = await self._read(request, decoder, as_json)
            if answer is not None:
                return answer
            if not await self._admit():
                return self._busy(as_json, request)
            try:
                return await self._store(decoder.out, ctype or PROTOBUF, as_json, request)
            finally:
                self._slots.release()
        finally:
            self._held -= len(decoder.out)

    def _reserve(self, n: int) -> None:
        """Count ``n`` more bytes of bodies held; refuse when all bodies would hold more than
        max_concurrency x max_decompressed_body. Slow senders hold what they sent, not a slot."""
        if self._held + n > self._budget:
            raise _Busy
        self._held += n

    async def _read(self, request: Request, decoder: _Decoder, as_json: bool) -> Response | None:
        """Read (and decompress) the body into ``decoder``; an answer if that fails."""
        received = 0
        try:
            async with aclosing(request.stream()) as chunks:
                async for chunk in chunks:
                    received += len(chunk)
                    if received > self.limits.max_body:
                        raise _TooLarge("max_body")
                    decoder.feed(chunk)
            decoder.finish()
        except ClientDisconnect:  # the client hung up (or timed out) mid-body: nothing to answer
            logger.debug("source %s: a client hung up after %d bytes of its body", self.source,
                         received)  # fmt: skip
            return Response(status_code=400)  # never sent: the connection is gone
        except _TooLarge as e:
            return self._too_large(e.key, as_json, request)
        except _Busy:
            return self._busy(as_json, request)
        except BadRequest as e:
            return self._refuse(400, str(e), as_json, request)
        return None

    async def _admit(self) -> bool:
        """Take a slot: at once, or after a short wait in a bounded queue; False if none."""
        if not self._slots.locked():
            await self._slots.acquire()
            return True
        if self._waiting >= self._queue_limit:
            return False
        self._waiting += 1
        try:
            async with asyncio.timeout(QUEUE_WAIT):
                await self._slots.acquire()
            return True
        except TimeoutError:
            return False
        finally:
            self._waiting -= 1

    def _busy(self, as_json: bool, request: Request) -> Response:
        return self._refuse(
            503, "busy: too many requests in progress; retry later", as_json, request,
            {"Retry-After": str(RETRY_AFTER_BUSY)},
        )  # fmt: skip

    def _too_large(self, key: str, as_json: bool, request: Request) -> Response:
        if key == "max_body":
            what = f"request body larger than max_body ({fmt_size(self.limits.max_body)})"
        else:
            size = fmt_size(self.limits.max_decompressed_body)
            what = f"request body, decompressed, larger than max_decompressed_body ({size})"
        return self._refuse(413, what, as_json, request)

    async def _store(
        self, body: bytearray, ctype: str, as_json: bool, request: Request
    ) -> Response:
        media = JSON if as_json else PROTOBUF
        try:
            await anyio.to_thread.run_sync(self.store, body, ctype)
        except BadRequest as e:
            return self._refuse(400, str(e), as_json, request)
        except StoreError as e:
            logger.warning(
                "source %s: store unavailable (%s); asking the exporter to retry", self.source, e
            )
            self.refused[503] += 1
            return Response(
                _status_body("store unavailable; retry later", as_json), 503,
                {"Retry-After": str(RETRY_AFTER_STORE)}, media,
            )  # fmt: skip
        except Exception as e:  # a bug of ours: the spans are not stored, and the sender is told
            logger.error(
                "source %s: cannot store a request: %s: %s", self.source, type(e).__name__, e,
                exc_info=logger.isEnabledFor(logging.DEBUG),
            )  # fmt: skip
            self.refused[500] += 1
            msg = "internal error; the spans were not stored"
            return Response(_status_body(msg, as_json), 500, media_type=media)
        return Response(b"{}" if as_json else b"", 200, media_type=media)


# -- the server ------------------------------------------------------------------------------


class _ReadDeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a read deadline: a request must arrive whole (headers and
    body) within ``read_timeout`` of the connection opening or of the previous response, else the
    connection is closed. uvicorn alone times out only idle keep-alive connections, so a client
    trickling a byte at a time would hold its connection for ever."""

    read_timeout = 30.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            return  # closing anyway, or the request is in and being answered
        logger.debug("closing a connection from %s: no whole request within %gs",
                     self.client, self.read_timeout)  # fmt: skip
        self.transport.close()
        if self.transport.get_write_buffer_size():  # a client that reads nothing either
            self.transport.abort()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (IPv4 or IPv6, by the host) with a backlog of LISTEN_BACKLOG."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Event-loop errors (accept failing when file descriptors run out, a broken TLS handshake)
    as one line; a traceback only at debug level."""
    exc = context.get("exception")
    logger.warning(
        "OTLP receiver: %s%s", context.get("message", "event loop error"),
        f": {type(exc).__name__}: {exc}" if exc else "",
        exc_info=exc if exc and logger.isEnabledFor(logging.DEBUG) else None,
    )  # fmt: skip


class ServerThread:
    """uvicorn serving ``app`` on ``sock`` in a thread of its own, so that SIGTERM and SIGINT stay
    with the caller (uvicorn's own handlers would re-raise the signal after a clean shutdown)."""

    def __init__(
        self,
        app: Any,
        sock: socket.socket,
        read_timeout: float,
        tls: tuple[str, str] | None = None,
    ):
        protocol = type(
            "ReadDeadlineH11", (_ReadDeadlineH11Protocol,), {"read_timeout": read_timeout}
        )
        self.config = uvicorn.Config(
            app,
            http=protocol,
            ws="none",
            lifespan="off",
            loop="asyncio",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            backlog=LISTEN_BACKLOG,
            timeout_keep_alive=max(1, math.ceil(read_timeout)),
            # in-flight requests finish (their bodies are bounded by read_timeout) and store
            timeout_graceful_shutdown=math.ceil(read_timeout) + 30,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            ssl_certfile=tls[0] if tls else None,
            ssl_keyfile=tls[1] if tls else None,
        )
        self.config.load()  # here, so that a bad certificate fails the caller, not the thread
        self.server = uvicorn.Server(self.config)
        self.sock = sock
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="otlp-receiver", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            asyncio.get_running_loop().set_exception_handler(_loop_error)
            await self.server.serve(sockets=[self.sock])

        try:
            asyncio.run(main())
        except BaseException as e:  # reported by the caller, which owns the log and exit code
            self.error = e

    def start(self) -> None:
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self, force: bool = False) -> None:
        """Stop accepting; in-flight requests finish (``force``: stop waiting for them)."""
        self.server.should_exit = True
        if force:
            self.server.force_exit = True
