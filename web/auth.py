"""Who is reading: a login session for the pages, HTTP Basic or the session for the API.

One reader account comes from the environment (``CXR_WEB_USERNAME``/``CXR_WEB_PASSWORD``);
its name is what ``reviewed_by`` records. Every password check, form or Basic, goes through
:func:`authenticate`: the failed-login throttle (:mod:`web.throttle`) first, then a
constant-time comparison, and a failure is logged with the client address and a digest of
the user name (never the name or the password).

Sessions are signed cookies (SameSite=strict, HttpOnly) that carry a random session id,
live only while :class:`web.sessions.SessionStore` holds it: logout ends the session on the
server, not just in the browser. Every state-changing request made with the session carries
the session's CSRF token (a form field, or the ``X-CSRF-Token`` header for the JSON API);
Basic-authenticated API calls carry no cookie and need none.
"""

from __future__ import annotations

import binascii
import logging
import math
import secrets
from base64 import b64decode
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from fastapi.security.utils import get_authorization_scheme_param
from starlette.requests import HTTPConnection

from web.config import WebConfig
from web.sessions import SessionStore
from web.throttle import LoginThrottle, user_digest

log = logging.getLogger(__name__)

SESSION_ID = "sid"
SESSION_CSRF = "csrf"
CSRF_HEADER = "X-CSRF-Token"
REALM = "cxr-triage"


class LoginRequiredError(Exception):
    """A page was asked for without a live session: the app redirects to the login form."""


class LoginThrottledError(Exception):
    """Too many failed logins from this client or for this user: wait ``retry_after_s``."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many failed logins; try again in {math.ceil(retry_after_s)} s")
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class Utf8HTTPBasic(HTTPBasic):
    """FastAPI's HTTP Basic scheme, decoding the credentials as UTF-8 (RFC 7617 ``charset``),
    as the realm announces, rather than ASCII only."""

    async def __call__(self, request: HTTPConnection) -> HTTPBasicCredentials | None:  # type: ignore[override]
        scheme, param = get_authorization_scheme_param(request.headers.get("Authorization"))
        if scheme.lower() != "basic":
            return None
        try:
            username, separator, password = b64decode(param, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError, binascii.Error) as error:
            raise self.make_not_authenticated_error() from error
        if not separator:
            raise self.make_not_authenticated_error()
        return HTTPBasicCredentials(username=username, password=password)


basic_scheme = Utf8HTTPBasic(realm=REALM, auto_error=False)
BasicCredentials = Annotated[HTTPBasicCredentials | None, Depends(basic_scheme)]


def credentials_match(config: WebConfig, username: str, password: str) -> bool:
    """Constant-time comparison of both the name and the password."""
    name_ok = secrets.compare_digest(username.encode(), config.username.encode())
    password_ok = secrets.compare_digest(password.encode(), config.password.encode())
    return name_ok and password_ok


def authenticate(request: Request, username: str, password: str, kind: str) -> bool:
    """Check a login (``kind``: "form" or "basic") through the throttle.

    Raises :class:`LoginThrottledError` while the client or the user name is locked (the
    attempt then counts as a failure, unchecked); logs every failure.
    """
    throttle: LoginThrottle = request.app.state.throttle
    client, digest = client_address(request), user_digest(username)
    keys = (f"client:{client}", f"user:{digest}")
    if throttle.retry_after(*keys) > 0:
        failures = throttle.failed(*keys)
        wait = throttle.retry_after(*keys)
        # Every refusal is counted; at the lock's cap only every 100th is logged at WARNING,
        # so that a flood of guesses cannot flood the log too.
        level = logging.WARNING if wait < throttle.max_s or failures % 100 == 0 else logging.DEBUG
        log.log(
            level,
            "%s login refused, locked for %.0f s: user %s from %s (%d failures)",
            kind,
            wait,
            digest,
            client,
            failures,
        )
        raise LoginThrottledError(wait)
    if credentials_match(request.app.state.config, username, password):
        throttle.succeeded(keys[1])
        return True
    failures = throttle.failed(*keys)
    log.warning("failed %s login: user %s from %s (%d failures)", kind, digest, client, failures)
    return False


def start_session(request: Request, username: str) -> None:
    """Log ``username`` in: a new server-side session and a fresh CSRF token (no fixation)."""
    end_session(request)
    store: SessionStore = request.app.state.live_sessions
    request.session[SESSION_ID] = store.start(username)
    request.session[SESSION_CSRF] = secrets.token_urlsafe(32)


def end_session(request: Request) -> None:
    """Forget the session on the server (its cookie is then worthless) and in the browser."""
    session_id = request.session.get(SESSION_ID)
    if isinstance(session_id, str):
        request.app.state.live_sessions.end(session_id)
    request.session.clear()


def session_user(request: Request) -> str | None:
    session_id = request.session.get(SESSION_ID)
    if not isinstance(session_id, str):
        return None
    user: str | None = request.app.state.live_sessions.user(session_id)
    return user


def csrf_token(request: Request) -> str:
    token = request.session.get(SESSION_CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[SESSION_CSRF] = token
    return token


def check_csrf(request: Request, presented: str | None) -> None:
    expected = request.session.get(SESSION_CSRF)
    if not (isinstance(expected, str) and presented):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing CSRF token")
    if not secrets.compare_digest(expected.encode(), presented.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "CSRF token does not match")


def page_user(request: Request) -> str:
    """Dependency for pages: the logged-in reader, or a redirect to the login form."""
    user = session_user(request)
    if user is None:
        raise LoginRequiredError
    return user


def basic_user(request: Request, credentials: HTTPBasicCredentials | None) -> str | None:
    """The reader named by Basic credentials; ``None`` without any; 401 or 429 when wrong."""
    if credentials is None:
        return None
    try:
        if authenticate(request, credentials.username, credentials.password, "basic"):
            return credentials.username
    except LoginThrottledError as error:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS, str(error), headers=error.retry_after_header
        ) from error
    raise _unauthorized("wrong user name or password")


def api_user(request: Request, credentials: BasicCredentials) -> str:
    """Dependency for the JSON API: Basic credentials or a live page session, else 401."""
    user = basic_user(request, credentials) or session_user(request)
    if user is None:
        raise _unauthorized("log in, or send HTTP Basic credentials")
    return user


def api_write_user(request: Request, credentials: BasicCredentials) -> str:
    """Dependency for API writes: Basic credentials, or a live session plus its CSRF header."""
    user = basic_user(request, credentials)
    if user is not None:
        return user
    user = api_user(request, None)
    check_csrf(request, request.headers.get(CSRF_HEADER))
    return user


def client_address(request: Request) -> str:
    """The peer's address (a configured proxy's ``X-Forwarded-For`` has replaced it)."""
    return request.client.host if request.client else "unknown"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail,
        headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
    )
