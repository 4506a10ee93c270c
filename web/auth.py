"""Who is reading: a login session for the pages, HTTP Basic or the session for the API.

One reader account comes from the environment (``CXR_WEB_USERNAME``/``CXR_WEB_PASSWORD``);
its name is what ``reviewed_by`` records. Sessions are signed cookies (SameSite=strict,
HttpOnly). Every state-changing request made with the session carries the session's CSRF
token (a form field, or the ``X-CSRF-Token`` header for the JSON API); Basic-authenticated
API calls carry no cookie and need none.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets

from fastapi import HTTPException, Request, status

from web.config import WebConfig

log = logging.getLogger(__name__)

SESSION_USER = "user"
SESSION_CSRF = "csrf"
CSRF_HEADER = "X-CSRF-Token"
REALM = 'Basic realm="cxr-triage", charset="UTF-8"'


class LoginRequiredError(Exception):
    """A page was asked for without a session: the app redirects to the login form."""


def credentials_match(config: WebConfig, username: str, password: str) -> bool:
    """Constant-time comparison of both the name and the password."""
    name_ok = secrets.compare_digest(username.encode(), config.username.encode())
    password_ok = secrets.compare_digest(password.encode(), config.password.encode())
    return name_ok and password_ok


def start_session(request: Request, username: str) -> None:
    """Log ``username`` in; a fresh CSRF token each time (no fixation of an old one)."""
    request.session.clear()
    request.session[SESSION_USER] = username
    request.session[SESSION_CSRF] = secrets.token_urlsafe(32)


def end_session(request: Request) -> None:
    request.session.clear()


def session_user(request: Request) -> str | None:
    user = request.session.get(SESSION_USER)
    return user if isinstance(user, str) and user else None


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


def basic_user(request: Request) -> str | None:
    """The reader named by a valid ``Authorization: Basic`` header, else ``None``."""
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    config: WebConfig = request.app.state.config
    if credentials_match(config, username, password):
        return username
    log.warning("API request with wrong credentials from %s", _client(request))
    return None


def api_user(request: Request) -> str:
    """Dependency for the JSON API: Basic credentials or a page session, else 401."""
    user = basic_user(request) or session_user(request)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "log in, or send HTTP Basic credentials",
            headers={"WWW-Authenticate": REALM},
        )
    return user


def api_write_user(request: Request) -> str:
    """Dependency for API writes: Basic credentials, or a session plus its CSRF header."""
    user = basic_user(request)
    if user is not None:
        return user
    user = api_user(request)
    check_csrf(request, request.headers.get(CSRF_HEADER))
    return user


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"
