"""Who is reading: a person's account, by the login form, HTTP Basic or a trusted proxy.

Accounts live in the database (:mod:`db.accounts`, managed with ``cxr-triage user``); a
person has one role (:class:`db.models.Role`): a *reader* reads the worklist and the cases,
a *reviewer* also records reviews, an *admin* also reads the accounts and the audit trail.
The page's session and the API's Basic credentials go through the same accounts and roles.

Every password check, form or Basic, goes through :func:`authenticate`: the throttle first
(the account's lock in the database, the client's and unknown names' in memory,
:mod:`web.throttle`), then argon2id. Each login, accepted or refused, and each logout is
written to ``audit_log`` under the account (or "unknown user") and logged with the account
id and the client address: never the typed name, nor anything computed from it.

Sessions are signed cookies (SameSite=strict, HttpOnly) that carry a random session id,
live only while :class:`web.sessions.SessionStore` holds it: logout ends the session on the
server, not just in the browser. The account is read again at every request, so disabling
it, changing its role or its password takes effect at once. Every state-changing request
made with the session carries the session's CSRF token (a form field, or the
``X-CSRF-Token`` header for the JSON API); Basic-authenticated API calls carry no cookie and
need none.
"""

from __future__ import annotations

import binascii
import logging
import math
import secrets
import threading
import time
from base64 import b64decode
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import HTTPConnection

from db import accounts
from db.models import Account, AuditKind, Role, utcnow
from db.passwords import verify_password
from web.config import WebConfig
from web.proxy import TRUSTED_PROXY
from web.sessions import SessionStore
from web.throttle import LoginThrottle, UnknownNames, client_key

log = logging.getLogger(__name__)

SESSION_ID = "sid"
SESSION_CSRF = "csrf"
CSRF_HEADER = "X-CSRF-Token"
REALM = "cxr-triage"
#: A Basic-authenticated integration polls every few seconds: its accepted logins are
#: audited once per account and client address in this window, its refusals every time.
BASIC_AUDIT_WINDOW_S = 600.0
MAX_BASIC_SEEN = 10_000


@dataclass(frozen=True)
class Person:
    """The logged-in account, as the routes and templates see it."""

    id: int
    name: str
    role: Role

    @classmethod
    def of(cls, account: Account) -> Person:
        return cls(account.id, account.name, Role(account.role))

    def may(self, role: Role) -> bool:
        return self.role.allows(role)

    @property
    def may_review(self) -> bool:
        return self.may(Role.REVIEWER)


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


class Gate:
    """The login state of one app: the in-memory throttles and the Basic audit window."""

    def __init__(self, config: WebConfig) -> None:
        self.policy = config.lock_policy
        self.clients = LoginThrottle(self.policy)
        self.unknown = LoginThrottle(self.policy)
        self.names = UnknownNames()
        self._basic_seen: OrderedDict[tuple[int, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def basic_audit_due(self, account_id: int, client: str) -> bool:
        """True the first time an account logs in by Basic from a client in the window."""
        now = time.monotonic()
        key = (account_id, client)
        with self._lock:
            seen = self._basic_seen.pop(key, None)
            self._basic_seen[key] = seen if seen and now - seen < BASIC_AUDIT_WINDOW_S else now
            while len(self._basic_seen) > MAX_BASIC_SEEN:
                self._basic_seen.popitem(last=False)
        return seen is None or now - seen >= BASIC_AUDIT_WINDOW_S


def _sessions(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.sessions
    return factory


def _gate(request: Request) -> Gate:
    gate: Gate = request.app.state.gate
    return gate


@dataclass(frozen=True)
class _Candidate:
    """What a login attempt found, read before the (slow) password check."""

    account_id: int | None
    password_hash: str | None
    disabled: bool
    wait_s: float  # the account's own lock


def authenticate(request: Request, username: str, password: str, via: str) -> Person | None:
    """Check a login (``via``: "form" or "basic") through the throttle.

    Returns the person, or None for a wrong name or password (or a disabled account: the
    same answer). Raises :class:`LoginThrottledError` while the client, the account or the
    unknown name is locked; the attempt then counts as a failure, unchecked.
    """
    gate = _gate(request)
    client = client_address(request)
    keys = [client_key(client)]
    now = utcnow()
    with _sessions(request)() as session:
        account = accounts.find(session, username)
        found = _Candidate(
            account.id if account else None,
            account.password_hash if account else None,
            bool(account and account.disabled),
            accounts.locked_for(account, now) if account else 0.0,
        )
    if found.account_id is None:
        keys.append(gate.names.key(username))
    wait = max(found.wait_s, gate.clients.retry_after(keys[0]), gate.unknown.retry_after(*keys))
    if wait > 0:
        failures, wait = _count_failure(request, found.account_id, keys)
        quiet = gate.policy.lock_s(failures) >= gate.policy.max_s and failures % 100 != 0
        # Every refusal counts; at the lock's cap only every 100th is logged at WARNING and
        # audited, so that a flood of guesses floods neither the log nor the audit table.
        log.log(
            logging.DEBUG if quiet else logging.WARNING,
            "%s login refused, locked for %.0f s: %s from %s (%d failures)",
            via,
            wait,
            _who(found.account_id),
            client,
            failures,
        )
        if not quiet:
            _audit(request, AuditKind.LOGIN_LOCKED, found.account_id, via, f"{failures} failures")
        raise LoginThrottledError(wait)
    accepted = verify_password(found.password_hash, password) and not found.disabled
    if accepted and found.account_id is not None:
        return _accepted(request, found.account_id, via, client)
    failures, _ = _count_failure(request, found.account_id, keys)
    log.warning(
        "failed %s login: %s from %s (%d failures)", via, _who(found.account_id), client, failures
    )
    detail = "account disabled" if found.disabled else None
    _audit(request, AuditKind.LOGIN_FAILED, found.account_id, via, detail)
    return None


def _accepted(request: Request, account_id: int, via: str, client: str) -> Person | None:
    audited = via != "basic" or _gate(request).basic_audit_due(account_id, client)
    with _sessions(request).begin() as session:
        account = accounts.get(session, account_id)
        if account is None or account.disabled:  # changed during the password check
            return None
        if audited or account.failed_logins or account.locked_until is not None:
            accounts.record_success(session, account, utcnow())
        if audited:
            accounts.audit(
                session, AuditKind.LOGIN, account.name, via, account=account, client=client
            )
        return Person.of(account)


def _count_failure(request: Request, account_id: int | None, keys: list[str]) -> tuple[int, float]:
    """Count a failure on the client, and on the account or the unknown name; returns the
    highest failure count and the longest wait that follows."""
    gate = _gate(request)
    failures = gate.clients.failed(keys[0])
    wait = gate.clients.retry_after(keys[0])
    if account_id is None:
        failures = max(failures, gate.unknown.failed(keys[1]))
        return failures, max(wait, gate.unknown.retry_after(keys[1]))
    with _sessions(request).begin() as session:
        account_failures, account_wait = accounts.record_failure(
            session, account_id, utcnow(), gate.policy
        )
    return max(failures, account_failures), max(wait, account_wait)


def _who(account_id: int | None) -> str:
    """How logs name the person behind a login: never the typed name."""
    return f"account {account_id}" if account_id is not None else "unknown user"


def _audit(
    request: Request,
    event: AuditKind,
    account_id: int | None,
    via: str,
    detail: str | None = None,
) -> None:
    with _sessions(request).begin() as session:
        account = accounts.get(session, account_id) if account_id is not None else None
        accounts.audit(
            session,
            event,
            account.name if account else "unknown user",
            via,
            account=account,
            client=client_address(request),
            detail=detail,
        )


def audit_review(
    session: Session, request: Request, person: Person, entry_id: int, decision: str, via: str
) -> None:
    """A review, in the same transaction as the review itself."""
    accounts.audit(
        session,
        AuditKind.REVIEW,
        person.name,
        via,
        account_id=person.id,
        client=client_address(request),
        worklist_id=entry_id,
        detail=decision,
    )


def audit_logout(session: Session, request: Request, person: Person) -> None:
    accounts.audit(
        session,
        AuditKind.LOGOUT,
        person.name,
        "session",
        account_id=person.id,
        client=client_address(request),
    )


# -- sessions ------------------------------------------------------------------------------


def _stamp(account: Account) -> str:
    changed = account.password_changed_at
    return changed.isoformat() if changed else ""


def start_session(request: Request, account: Account | Person) -> None:
    """Log the account in: a new server-side session and a fresh CSRF token (no fixation)."""
    end_session(request)
    store: SessionStore = request.app.state.live_sessions
    if isinstance(account, Person):
        with _sessions(request)() as session:
            found = accounts.get(session, account.id)
            stamp = _stamp(found) if found else ""
    else:
        stamp = _stamp(account)
    request.session[SESSION_ID] = store.start(account.id, stamp)
    request.session[SESSION_CSRF] = secrets.token_urlsafe(32)


def end_session(request: Request) -> None:
    """Forget the session on the server (its cookie is then worthless) and in the browser."""
    session_id = request.session.get(SESSION_ID)
    if isinstance(session_id, str):
        request.app.state.live_sessions.end(session_id)
    request.session.clear()


def session_person(request: Request) -> Person | None:
    """The account of the live session, read again now: None once it is disabled, gone, or
    its password was changed after the session began."""
    session_id = request.session.get(SESSION_ID)
    if not isinstance(session_id, str):
        return None
    store: SessionStore = request.app.state.live_sessions
    live = store.get(session_id)
    if live is None:
        return None
    with _sessions(request)() as session:
        account = accounts.get(session, live.account_id)
        if account is not None and not account.disabled and _stamp(account) == live.stamp:
            return Person.of(account)
    store.end(session_id)
    return None


class ProxyUserRefusedError(Exception):
    """The trusted proxy named a person without an enabled account here."""


def proxy_person(request: Request) -> Person | None:
    """The person the trusted reverse proxy names in ``CXR_WEB_REMOTE_USER_HEADER``, logged
    in here on first sight (a session, audited); None when the header is off, absent, or
    the request did not come from a trusted proxy (then the header is ignored)."""
    config: WebConfig = request.app.state.config
    if not config.remote_user_header or not getattr(request.state, TRUSTED_PROXY, False):
        return None
    named = request.headers.get(config.remote_user_header, "").strip()
    if not named:
        return None
    current = session_person(request)
    if current is not None and current.name == named.lower():
        return current
    with _sessions(request).begin() as session:
        account = accounts.find(session, named)
        refused = account is None or account.disabled
        accounts.audit(
            session,
            AuditKind.LOGIN_FAILED if refused else AuditKind.LOGIN,
            account.name if account else "unknown user",
            "proxy",
            account=account,
            client=client_address(request),
            detail=("account disabled" if account else "no account for this name")
            if refused
            else None,
        )
        if account is not None and not refused:
            accounts.record_success(session, account, utcnow())
            person = Person.of(account)
            start_session(request, account)
        found = account.id if account else None
    if refused:  # audited above, committed: then refused
        log.warning("proxy login refused: %s from %s", _who(found), client_address(request))
        raise ProxyUserRefusedError
    return person


def current_person(request: Request) -> Person | None:
    return proxy_person(request) or session_person(request)


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


# -- route dependencies --------------------------------------------------------------------


def page_user(request: Request) -> Person:
    """Dependency for pages: the logged-in person, or a redirect to the login form."""
    person = current_person(request)
    if person is None:
        raise LoginRequiredError
    return person


def page_reviewer(request: Request) -> Person:
    """Dependency for the review form: a person whose role may record reviews (else 403)."""
    return _needs(page_user(request), Role.REVIEWER)


def basic_user(request: Request, credentials: HTTPBasicCredentials | None) -> Person | None:
    """The person named by Basic credentials; ``None`` without any; 401 or 429 when wrong."""
    if credentials is None:
        return None
    try:
        person = authenticate(request, credentials.username, credentials.password, "basic")
    except LoginThrottledError as error:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS, str(error), headers=error.retry_after_header
        ) from error
    if person is None:
        raise _unauthorized("wrong user name or password")
    return person


def api_user(request: Request, credentials: BasicCredentials) -> Person:
    """Dependency for the JSON API: Basic credentials or a live page session, else 401."""
    person = basic_user(request, credentials) or current_person(request)
    if person is None:
        raise _unauthorized("log in, or send HTTP Basic credentials")
    return person


def api_reviewer(request: Request, credentials: BasicCredentials) -> Person:
    """Dependency for recording a review by the API: the reviewer role, by Basic
    credentials, or a live session plus its CSRF header."""
    person = basic_user(request, credentials)
    if person is None:
        person = api_user(request, None)
        check_csrf(request, request.headers.get(CSRF_HEADER))
    return _needs(person, Role.REVIEWER)


def api_admin(request: Request, credentials: BasicCredentials) -> Person:
    """Dependency for the accounts and the audit trail: the admin role."""
    return _needs(api_user(request, credentials), Role.ADMIN)


def _needs(person: Person, role: Role) -> Person:
    if not person.may(role):
        detail = f"the {role} role is needed; {person.name} is a {person.role}"
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail)
    return person


def client_address(request: Request) -> str:
    """The peer's address (a trusted proxy's ``X-Forwarded-For`` has replaced it)."""
    return request.client.host if request.client else "unknown"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail,
        headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
    )
