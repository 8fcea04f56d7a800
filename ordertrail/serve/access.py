"""Who may use ``ordertrail serve``: tokens, their roles, the login cookie, and the middleware
that checks them on every request.

- Bound to a loopback address with no token, the view is open to the local machine and read
  only (role ``viewer``). Any other address needs at least one token, or serve refuses to start.
- With tokens, every request but ``/login``, ``/healthz`` and ``/static/`` needs one: an
  ``Authorization: Bearer <token>`` header (scripts, Prometheus), or the cookie the login form
  sets after it was given the token (browsers). Anything else is answered 401.
- Roles: ``admin`` (``--token`` / ``ORDERTRAIL_SERVE_TOKEN``) sees everything and may run the
  write action (reconcile now); ``support`` sees everything, read only; ``redacted`` sees
  personal fields masked, read only. ``--redact`` masks them for everyone.
- The cookie never holds the token: it names the token by a hash, carries its expiry and an
  HMAC keyed by the token, so it dies with the token and after :data:`COOKIE_TTL`. It is
  HttpOnly and SameSite=Strict; the write form also carries a CSRF value derived from the token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

ROLES = ("admin", "support", "redacted")
ENV_TOKEN = "ORDERTRAIL_SERVE_TOKEN"  # the admin token
ENV_TOKENS = "ORDERTRAIL_SERVE_TOKENS"  # more tokens with roles: "support=TOKEN redacted=TOKEN2"
COOKIE = "ordertrail_session"
COOKIE_TTL = 12 * 3600  # s
MIN_TOKEN = 16  # characters: long enough that guessing is hopeless
OPEN_PATHS = ("/login", "/healthz", "/static/")
_TOKEN = re.compile(r"[\x21-\x7e]+")


class AccessError(ValueError):
    """The access settings cannot be used (no token for a public address, a weak token …)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token(token: str, where: str) -> str:
    if not _TOKEN.fullmatch(token):
        raise AccessError(f"{where}: a token is printable ASCII without spaces")
    if len(token) < MIN_TOKEN:
        raise AccessError(
            f"{where}: a token needs at least {MIN_TOKEN} characters "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')"
        )
    return token


def parse_tokens(text: str) -> dict[str, str]:
    """``ORDERTRAIL_SERVE_TOKENS``: ``ROLE=TOKEN`` pairs separated by spaces, commas or lines ->
    {token: role}."""
    out: dict[str, str] = {}
    for part in re.split(r"[\s,]+", text.strip()):
        if not part:
            continue
        role, sep, token = part.partition("=")
        if not sep or role not in ROLES:
            raise AccessError(
                f"{ENV_TOKENS}: expected ROLE=TOKEN with a role of {', '.join(ROLES)}, "
                f"not {role + sep + '…' if sep else '…'!r}"
            )
        out[check_token(token, ENV_TOKENS)] = role
    return out


@dataclass
class Access:
    """The access rules of one server."""

    tokens: Mapping[str, str] = field(default_factory=dict)  # token -> role
    redact: bool = False  # personal fields masked for everyone
    _by_id: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {_token_id(tok): tok for tok in self.tokens}

    @property
    def required(self) -> bool:
        return bool(self.tokens)

    def check_bind(self, host: str) -> None:
        if not is_loopback(host) and not self.tokens:
            raise AccessError(
                f"listening on {host} needs a token (--token or ${ENV_TOKEN}): anyone who can "
                "reach the address could read customers' orders"
            )

    def role_of(self, token: str) -> str | None:
        found = None
        for tok, role in self.tokens.items():  # compare with every token, in constant time each
            if hmac.compare_digest(tok.encode(), token.encode()):
                found = role
        return found

    def authenticate(self, request: Request) -> tuple[str | None, str | None]:
        """(role, how: "bearer" | "cookie") of a request, or (None, None)."""
        auth = request.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            role = self.role_of(value.strip())
            return (role, "bearer") if role else (None, None)
        cookie = request.cookies.get(COOKIE)
        if cookie:
            tok = self.cookie_token(cookie)
            if tok is not None:
                return self.tokens[tok], "cookie"
        return None, None

    def make_cookie(self, token: str, now: float | None = None) -> str:
        tid = _token_id(token)
        expires = int((now if now is not None else time.time()) + COOKIE_TTL)
        return f"{tid}.{expires}.{_sign(token, f'{tid}.{expires}')}"

    def cookie_token(self, value: str, now: float | None = None) -> str | None:
        """The token a cookie stands for, if it is genuine and not expired."""
        tid, _, rest = value.partition(".")
        expires, _, sig = rest.partition(".")
        tok = self._by_id.get(tid)
        if tok is None or not expires.isdigit():
            return None
        if int(expires) < (now if now is not None else time.time()):
            return None
        return tok if hmac.compare_digest(sig, _sign(tok, f"{tid}.{expires}")) else None

    def csrf(self, request: Request) -> str:
        """The value the write form carries: derived from the session's token."""
        tok = self.cookie_token(request.cookies.get(COOKIE, "")) if request.cookies else None
        return _sign(tok, "csrf") if tok else ""

    def role(self, request: Request) -> str:
        """The role of a request that passed the middleware."""
        return str(request.scope.get("ordertrail_role", "viewer"))

    def redacts(self, request: Request) -> bool:
        return self.redact or self.role(request) == "redacted"

    def may_write(self, request: Request) -> bool:
        return self.role(request) == "admin"


def _token_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def _sign(key: str, msg: str) -> str:
    return hmac.new(key.encode(), msg.encode(), hashlib.sha256).hexdigest()


class AccessMiddleware:
    """Checks the token on every request (see the module's docstring)."""

    def __init__(self, app: ASGIApp, access: Access, on_denied: Any = None):
        self.app = app
        self.access = access
        self.on_denied = on_denied  # (request) -> Response, e.g. the login page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        role, how = self.access.authenticate(request)
        path = scope.get("path", "")
        if role is None and self.access.required and not path.startswith(OPEN_PATHS):
            response = self._denied(request)
            await response(scope, receive, send)
            return
        scope["ordertrail_role"] = role or "viewer"
        scope["ordertrail_auth"] = how
        await self.app(scope, receive, send)

    def _denied(self, request: Request) -> Response:
        wants_html = "text/html" in request.headers.get("accept", "")
        if wants_html and request.method == "GET" and self.on_denied is not None:
            resp: Response = self.on_denied(request)
        else:
            resp = PlainTextResponse(
                "401 Unauthorized: send the token as 'Authorization: Bearer <token>' "
                "or log in at /login\n",
                status_code=401,
            )
        resp.headers["WWW-Authenticate"] = 'Bearer realm="ordertrail"'
        resp.headers["Cache-Control"] = "no-store"
        return resp
