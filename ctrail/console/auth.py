"""Who is asking: passwords (argon2id), sessions and API tokens, CSRF, the login rate limit,
and the gate every request passes.

The gate is ASGI middleware in front of every route, so a route added later is closed by
default: only the login page and the static files answer without a session or token. A request
may carry either an API token (`Authorization: Bearer ctrail_…`, for scripts) or the session
cookie (HTTP-only, SameSite=Strict, Secure under TLS). A state change made with the cookie must
also carry the session's CSRF token in the X-CSRF-Token header; a token request needs none
(a browser never adds an Authorization header by itself).
"""

from __future__ import annotations

import functools
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ctrail.audit.trail import Outcome, record
from ctrail.console.config import ConsoleConfig
from ctrail.console.users import ConsoleDb, Role, User
from ctrail.settings import Settings

SESSION_COOKIE: Final = "ctrail_session"
CSRF_HEADER: Final = "x-csrf-token"
TOKEN_PREFIX: Final = "ctrail_"
MIN_PASSWORD_CHARS: Final = 12
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PATHS: Final = frozenset({"/login", "/api/login", "/login/oidc", "/login/oidc/callback"})
PUBLIC_PREFIXES: Final = ("/static/",)
# No inline script or style can run: a script that slipped into a page would still not run.
SECURITY_HEADERS: Final = (
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; "
     b"img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
     b"form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),      # no-referrer would make Origin "null"
    (b"cache-control", b"no-store"),
)
PASSWORDS: Final = PasswordHasher()     # argon2id with the library's (RFC 9106) parameters
# Checked when the user does not exist, so a wrong name takes as long as a wrong password.


@functools.cache
def _dummy_hash() -> str:
    """A hash to check an unknown name's password against, so a login for a name that does not
    exist takes as long as one for a name that does. Made on first need: an argon2 hash takes
    ~90 ms, which every ctrail command importing this module paid."""
    return PASSWORDS.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    return PASSWORDS.hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return PASSWORDS.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Principal:
    user: User
    via: Literal["session", "token"]
    csrf: str = ""                   # the session's CSRF token (none for an API token)
    session_id: str = ""

    def may(self, role: Role) -> bool:
        return self.user.role.allows(role)


class LoginRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Authenticator:
    def __init__(self, db: ConsoleDb, config: ConsoleConfig, settings: Settings) -> None:
        self.db, self.config, self.settings = db, config, settings

    def login(self, name: str, password: str, address: str) -> Principal:
        """A new session; LoginRefused(429) while the name or the address has had too many
        failed logins in the window (even with the right password), LoginRefused(401) for a
        wrong name or password. Every attempt is in the audit trail."""
        now = time.time()
        keys = (f"user:{name}", f"address:{address}")
        since = now - self.config.failed_login_window_secs
        if any(self.db.failures_since(k, since) >= self.config.max_failed_logins for k in keys):
            self._audit("console-login", name, address, "failure", "rate limited")
            raise LoginRefused(429, "too many failed logins: try again later")
        stored = self.db.password_hash(name)
        if not password_matches(stored or _dummy_hash(), password) or stored is None:
            self.db.failed_login(keys, now)
            self._audit("console-login", name, address, "failure", "wrong name or password")
            raise LoginRefused(401, "wrong user name or password")
        if PASSWORDS.check_needs_rehash(stored):
            self.db.set_password_hash(name, PASSWORDS.hash(password))
        user = self.db.user(name)
        assert user is not None
        self._audit("console-login", name, address, "success", None)
        return self._session(user, now)

    def login_vouched(self, name: str, address: str, method: str) -> Principal:
        """A session for a console user an identity provider vouched for (OpenID Connect);
        LoginRefused(403) when no console user has that name."""
        user = self.db.user(name)
        if user is None:
            self._audit("console-login", name, address, "failure",
                        f"{method}: not a console user")
            raise LoginRefused(403, f"{name} is not a console user: an admin adds users with "
                               "`ctrail users add`")
        self._audit("console-login", name, address, "success", None, method)
        return self._session(user, time.time())

    def _session(self, user: User, now: float) -> Principal:
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self.db.add_session(session_id, user.name, csrf, now + self.config.session_hours * 3600)
        return Principal(user, "session", csrf, session_id)

    def logout(self, principal: Principal, address: str) -> None:
        if principal.session_id:
            self.db.end_session(principal.session_id)
        self._audit("console-logout", principal.user.name, address, "success", None)

    def principal(self, request: Request) -> Principal | None:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credential.strip().startswith(TOKEN_PREFIX):
            user = self.db.token_user(credential.strip())
            return Principal(user, "token") if user else None
        session_id = request.cookies.get(SESSION_COOKIE)
        if not session_id:
            return None
        found = self.db.session(session_id)
        return Principal(found[0], "session", found[1], session_id) if found else None

    def _audit(self, action: str, name: str, address: str, outcome: Outcome,
               reason: str | None, method: str = "password") -> None:
        details: dict[str, Any] = {"console_user": name, "client_address": address,
                                   "method": method}
        if reason:
            details["reason"] = reason
        record(self.settings, action, details, user=name, outcome=outcome)


def set_session_cookie(response: Response, principal: Principal, config: ConsoleConfig) -> None:
    response.set_cookie(SESSION_COOKIE, principal.session_id, httponly=True, samesite="strict",
                        secure=config.cookies_secure, path="/",
                        max_age=int(config.session_hours * 3600))


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class Gate:
    """ASGI middleware: authenticate, check CSRF, add the security headers."""

    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app, self.auth = app, auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A response with a policy of its own (a rendered report) keeps it.
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _value in headers}
                message["headers"] = [*headers, *(h for h in SECURITY_HEADERS
                                                  if h[0] not in present)]
            await send(message)

        request = Request(scope)
        path = request.url.path
        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        if not (public and (request.method in SAFE_METHODS or same_origin(request))):
            principal = None if public else self.auth.principal(request)
            refusal = refuse(request, principal)
            if refusal is not None:
                await refusal(scope, receive, send_with_headers)
                return
            scope.setdefault("state", {})["principal"] = principal
        try:
            await self.app(scope, receive, send_with_headers)
        except ClientDisconnect:
            # The client left before its body was in (a login cut short): nobody to answer.
            # Left to Starlette, it became a 500 sent to a closed connection and a traceback
            # in the log for each (found by tests/e2e/test_console_fuzz.py).
            return


def same_origin(request: Request) -> bool:
    """A browser names the page that sent a state change in Origin: another site's page (a
    forged login, say) is refused; a script without the header (curl, an API client) is not
    a browser page and passes."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def refuse(request: Request, principal: Principal | None) -> Response | None:
    """The answer to a request that may not go on, or None."""
    api = request.url.path.startswith("/api/")
    if request.method not in SAFE_METHODS and not same_origin(request):
        return JSONResponse({"detail": "cross-origin request refused"}, status_code=403)
    if principal is None:
        if api or request.method not in SAFE_METHODS:
            return JSONResponse({"detail": "authentication required"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        return RedirectResponse("/login", status_code=303)
    if principal.via == "session" and request.method not in SAFE_METHODS:
        presented = request.headers.get(CSRF_HEADER, "")
        if not presented or not hmac.compare_digest(presented, principal.csrf):
            return JSONResponse({"detail": "missing or wrong CSRF token"}, status_code=403)
    return None
