"""Review-page accounts, their failed-login lock, and the audit log.

Functions take the session first and never commit (the caller owns the transaction), like
the rest of ``db``. Account names are stored in lower case; :func:`find` of a name that is
not a valid account name finds nothing rather than raising, so a login with any typed text
is simply an unknown user.

The lock (:class:`LockPolicy`) is the one the review page always had, kept per account in
the database: ``free_failures`` failures are free, that one and every further failure lock
the account for a backoff doubling from ``base_s`` to ``max_s``, and a failure after a
whole quiet ``max_s`` starts the count afresh. In the database, no number of other names
can push an account's lock out (an in-memory table of 10,000 keys could be flushed by
10,001 junk names, issue 20), and it holds across restarts and web processes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Account, AuditEvent, AuditKind, Role, utcnow
from db.passwords import MAX_PASSWORD_CHARS, hash_password, verify_password

#: A name is what a person types and what ``reviewed_by`` shows: letters, digits and
#: ``. _ @ -``, starting with a letter or digit, at most 64 characters (a directory
#: ``user@REALM`` from a reverse proxy fits).
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
#: OWASP ASVS 4.0 2.1.1: user-set passwords of at least 12 characters.
MIN_PASSWORD_LENGTH = 12
#: ``CXR_WEB_PASSWORD`` accounts keep the minimum they were started with (the migration path).
MIN_LEGACY_PASSWORD_LENGTH = 8


class AccountError(ValueError):
    """An account operation that cannot be done as asked (the message says why)."""


@dataclass(frozen=True)
class LockPolicy:
    """Failed logins that are free, then a lock doubling from ``base_s`` to ``max_s``."""

    free_failures: int = 5
    base_s: float = 1.0
    max_s: float = 900.0

    def __post_init__(self) -> None:
        if self.free_failures < 1 or self.base_s <= 0 or self.max_s < self.base_s:
            raise ValueError("need free_failures >= 1 and 0 < base_s <= max_s")

    def lock_s(self, failures: int) -> float:
        """How long ``failures`` consecutive failures lock a key (0: not locked)."""
        excess = failures - self.free_failures
        if excess < 0:
            return 0.0
        return min(self.base_s * math.pow(2, min(excess, 30)), self.max_s)


def normalize_name(name: str) -> str:
    """``name`` as stored (lower case); :class:`AccountError` when it cannot be a name."""
    normalized = name.strip().lower()
    if not NAME_PATTERN.fullmatch(normalized):
        raise AccountError(
            "an account name is 1-64 letters, digits or . _ @ -, starting with a letter or digit"
        )
    return normalized


def check_new_password(password: str, name: str, *, legacy: bool = False) -> None:
    """Refuse a password that is too short, too long, or contains the account's name.
    ``legacy``: the rules ``CXR_WEB_PASSWORD`` always had (8 characters; any content), so
    that an operator's existing password still opens the page after the upgrade."""
    min_length = MIN_LEGACY_PASSWORD_LENGTH if legacy else MIN_PASSWORD_LENGTH
    if len(password) < min_length:
        raise AccountError(f"a password needs at least {min_length} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise AccountError(f"a password has at most {MAX_PASSWORD_CHARS} characters")
    if not legacy and name.lower() in password.lower():
        raise AccountError("a password may not contain the account's name")
    if any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in password):
        raise AccountError("a password may not contain control characters")


def find(session: Session, name: str) -> Account | None:
    """The account called ``name`` (any case), or None, also for text that is no name."""
    try:
        normalized = normalize_name(name)
    except AccountError:
        return None
    return session.scalars(select(Account).where(Account.name == normalized)).first()


def get(session: Session, account_id: int) -> Account | None:
    return session.get(Account, account_id)


def require(session: Session, name: str) -> Account:
    account = find(session, name)
    if account is None:
        raise AccountError(f"no account {name.strip().lower()!r}")
    return account


def all_accounts(session: Session) -> Sequence[Account]:
    return session.scalars(select(Account).order_by(Account.name)).all()


def enabled_count(session: Session) -> int:
    return len(session.scalars(select(Account.id).where(Account.disabled.is_(False))).all())


def add(
    session: Session,
    name: str,
    role: Role,
    password: str | None,
    *,
    actor: str,
    via: str = "cli",
    legacy: bool = False,
) -> Account:
    """A new enabled account. ``password`` None: the account logs in only through the
    trusted reverse proxy (``CXR_WEB_REMOTE_USER_HEADER``)."""
    normalized = normalize_name(name)
    if find(session, normalized) is not None:
        raise AccountError(f"account {normalized!r} exists already")
    now = utcnow()
    account = Account(
        name=normalized,
        role=role,
        disabled=False,
        created_at=now,
        failed_logins=0,
    )
    if password is not None:
        check_new_password(password, normalized, legacy=legacy)
        account.password_hash = hash_password(password)
        account.password_changed_at = now
    session.add(account)
    session.flush()
    audit(session, AuditKind.ACCOUNT_ADDED, actor, via, account=account, detail=f"role {role}")
    return account


def set_password(
    session: Session,
    account: Account,
    password: str,
    *,
    actor: str,
    via: str = "cli",
    legacy: bool = False,
) -> None:
    """A new password; live sessions of the account end (their stamp no longer matches)."""
    check_new_password(password, account.name, legacy=legacy)
    account.password_hash = hash_password(password)
    account.password_changed_at = utcnow()
    _clear_lock(account)
    session.flush()
    audit(session, AuditKind.PASSWORD_SET, actor, via, account=account)


def set_role(session: Session, account: Account, role: Role, *, actor: str) -> None:
    before = account.role
    account.role = role
    session.flush()
    audit(session, AuditKind.ROLE_SET, actor, "cli", account=account, detail=f"{before} -> {role}")


def set_disabled(session: Session, account: Account, disabled: bool, *, actor: str) -> None:
    """Disable (every session of the account ends at its next request) or enable again."""
    account.disabled = disabled
    session.flush()
    kind = AuditKind.ACCOUNT_DISABLED if disabled else AuditKind.ACCOUNT_ENABLED
    audit(session, kind, actor, "cli", account=account)


def unlock(session: Session, account: Account, *, actor: str) -> None:
    _clear_lock(account)
    session.flush()
    audit(session, AuditKind.ACCOUNT_UNLOCKED, actor, "cli", account=account)


def bootstrap(session: Session, name: str, password: str, role: Role = Role.REVIEWER) -> str:
    """The migration path from the one shared account (``CXR_WEB_USERNAME`` and
    ``CXR_WEB_PASSWORD``): create that account with ``role`` if it is missing, or set its
    password if it no longer matches the environment's. A disabled account stays disabled
    and an existing account keeps its role. Returns what was done: ``created``,
    ``password updated``, ``unchanged`` or ``disabled``."""
    existing = find(session, name)
    if existing is None:
        add(session, name, role, password, actor="env", via="env", legacy=True)
        return "created"
    if existing.disabled:
        return "disabled"
    if verify_password(existing.password_hash, password):
        return "unchanged"
    set_password(session, existing, password, actor="env", via="env", legacy=True)
    return "password updated"


# -- the failed-login lock ------------------------------------------------------------------


def locked_for(account: Account, now: datetime) -> float:
    """Seconds the account must still wait (0: not locked)."""
    if account.locked_until is None:
        return 0.0
    return max(0.0, (account.locked_until - now).total_seconds())


def record_failure(
    session: Session, account_id: int, now: datetime, policy: LockPolicy
) -> tuple[int, float]:
    """Count a failed (or refused) login on the account, under a row lock so that parallel
    guesses all count. Returns (consecutive failures, seconds locked from now)."""
    account = session.scalars(
        select(Account)
        .where(Account.id == account_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    quiet = (
        account.last_failure_at is None
        or (now - account.last_failure_at).total_seconds() > policy.max_s
    )
    account.failed_logins = 1 if quiet else account.failed_logins + 1
    account.last_failure_at = now
    wait = policy.lock_s(account.failed_logins)
    if wait > 0:
        account.locked_until = now + timedelta(seconds=wait)
    session.flush()
    return account.failed_logins, wait


def record_success(session: Session, account: Account, now: datetime) -> None:
    """A login accepted: the account's failure count starts again from zero."""
    if account.failed_logins or account.locked_until is not None:
        _clear_lock(account)
    account.last_login_at = now
    session.flush()


def _clear_lock(account: Account) -> None:
    account.failed_logins = 0
    account.locked_until = None
    account.last_failure_at = None


# -- the audit log --------------------------------------------------------------------------


def audit(
    session: Session,
    event: AuditKind,
    actor: str,
    via: str,
    *,
    account: Account | None = None,
    account_id: int | None = None,
    client: str | None = None,
    worklist_id: int | None = None,
    detail: str | None = None,
) -> AuditEvent:
    """Append one event. ``actor``/``detail`` are cut to their columns' lengths."""
    record = AuditEvent(
        at=utcnow(),
        event=event,
        account_id=account.id if account is not None else account_id,
        actor=actor[:128],
        via=via[:16],
        client=client[:64] if client else None,
        worklist_id=worklist_id,
        detail=detail[:255] if detail else None,
    )
    session.add(record)
    session.flush()
    return record


def audit_trail(
    session: Session,
    *,
    since: datetime | None = None,
    account_id: int | None = None,
    limit: int = 200,
) -> Sequence[AuditEvent]:
    """Events newest first, optionally since a time and for one account."""
    query = select(AuditEvent)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if account_id is not None:
        query = query.where(AuditEvent.account_id == account_id)
    newest_first = query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
    return session.scalars(newest_first.limit(limit)).all()
