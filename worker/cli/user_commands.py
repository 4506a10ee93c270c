"""``user``: the review page's accounts (add, list, disable, enable, set-password, set-role,
unlock) and ``audit``: the audit trail.

These change who may read and review patient cases, so they run with the database login
that owns the schema (the one ``cxr-triage db upgrade`` uses), never the web's: holding
that login is what makes someone an administrator here. Every change is written to the
append-only ``audit_log`` as ``cli:<os user>``. Passwords are read from a prompt (twice,
hidden) or, when standard input is not a terminal, from its first line: never from the
command line, where ``ps`` and shell history would keep them.
"""

from __future__ import annotations

import getpass
import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from db.models import Role
from worker.cli.app import app
from worker.cli.text import printable
from worker.settings import get_settings

if TYPE_CHECKING:
    from db.models import Account

user_app = typer.Typer(help="Review-page accounts (run with the database owner's login).")
app.add_typer(user_app, name="user", no_args_is_help=True)

NAME = typer.Argument(help="Account name (letters, digits, . _ @ -; stored in lower case)")


def _sessions() -> Any:
    from worker.resources import get_session_factory

    get_settings.cache_clear()
    return get_session_factory()


def actor() -> str:
    """Who is running the command, as the audit log records it."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def read_password(prompt: str = "Password") -> str:
    """A password from a hidden prompt typed twice, or the first line of standard input."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"{prompt}: ")
    if getpass.getpass(f"{prompt} (again): ") != first:
        _fail("the two passwords differ")
    return first


def _fail(message: str) -> None:
    typer.echo(f"cxr-triage user: {message}", err=True)
    raise typer.Exit(1)


def _change(name: str, change: Any) -> None:
    """Run ``change(session, account)`` on the named account in one transaction."""
    from db import accounts

    try:
        with _sessions().begin() as session:
            account = accounts.require(session, name)
            change(session, account)
    except accounts.AccountError as error:
        _fail(str(error))


@user_app.command("add")
def add(
    name: Annotated[str, NAME],
    role: Annotated[Role, typer.Option(help="reader: read; reviewer: + review; admin: + audit")],
    no_password: Annotated[
        bool,
        typer.Option(
            "--no-password",
            help="Logs in only through the trusted proxy (CXR_WEB_REMOTE_USER_HEADER)",
        ),
    ] = False,
) -> None:
    """Create an account.

    The password is read from a hidden prompt (typed twice) or from standard input."""
    from db import accounts

    try:
        normalized = accounts.normalize_name(name)
        password = None if no_password else read_password()
        if password is not None:
            accounts.check_new_password(password, normalized)
        with _sessions().begin() as session:
            accounts.add(session, normalized, role, password, actor=actor())
    except accounts.AccountError as error:
        _fail(str(error))
    typer.echo(f"account {normalized} added (role {role.value})")


@user_app.command("set-password")
def set_password(name: Annotated[str, NAME]) -> None:
    """Set a new password.

    It is read from a prompt or standard input; the account's sessions end and its lock is
    cleared."""
    from db import accounts

    password = read_password("New password")
    _change(name, lambda s, a: accounts.set_password(s, a, password, actor=actor()))
    typer.echo(f"password of {name.strip().lower()} set")


@user_app.command("set-role")
def set_role(name: Annotated[str, NAME], role: Annotated[Role, typer.Argument()]) -> None:
    """Change the account's role (effective at its next request)."""
    from db import accounts

    _change(name, lambda s, a: accounts.set_role(s, a, role, actor=actor()))
    typer.echo(f"{name.strip().lower()} is now {role.value}")


@user_app.command("disable")
def disable(name: Annotated[str, NAME]) -> None:
    """Disable the account: its logins are refused.

    Its sessions end at their next request. Accounts are never deleted, so their name in
    reviews keeps meaning one person."""
    from db import accounts

    _change(name, lambda s, a: accounts.set_disabled(s, a, True, actor=actor()))
    typer.echo(f"{name.strip().lower()} disabled")


@user_app.command("enable")
def enable(name: Annotated[str, NAME]) -> None:
    """Enable a disabled account again."""
    from db import accounts

    _change(name, lambda s, a: accounts.set_disabled(s, a, False, actor=actor()))
    typer.echo(f"{name.strip().lower()} enabled")


@user_app.command("unlock")
def unlock(name: Annotated[str, NAME]) -> None:
    """Clear the account's failed-login lock.

    For a person locked out by someone else's guessing."""
    from db import accounts

    _change(name, lambda s, a: accounts.unlock(s, a, actor=actor()))
    typer.echo(f"{name.strip().lower()} unlocked")


@user_app.command("list")
def list_accounts(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable")] = False,
) -> None:
    """List the accounts.

    Each with its role, whether it is enabled, last login, failed logins and lock."""
    from db import accounts
    from db.models import utcnow

    with _sessions()() as session:
        rows = [_row(a, utcnow()) for a in accounts.all_accounts(session)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'name':24} {'role':9} {'state':9} {'last login (UTC)':17} failures  locked")
    for row in rows:
        typer.echo(
            f"{row['name']:24} {row['role']:9} {row['state']:9} "
            f"{(row['last_login_at'] or '-')[:16]:17} {row['failed_logins']:8}  "
            f"{row['locked_for_s'] or '-'}"
        )


def _row(account: Account, now: Any) -> dict[str, Any]:
    from db.accounts import locked_for

    return {
        "id": account.id,
        "name": account.name,
        "role": Role(account.role).value,
        "state": "disabled" if account.disabled else "enabled",
        "password": account.password_hash is not None,
        "created_at": account.created_at.isoformat(),
        "last_login_at": account.last_login_at.isoformat() if account.last_login_at else None,
        "failed_logins": account.failed_logins,
        "locked_for_s": round(locked_for(account, now)) or None,
    }


@app.command("audit")
def audit(
    since: Annotated[str | None, typer.Option(help="Since: date, time, 24h, 7d")] = None,
    account: Annotated[str | None, typer.Option(help="Only this account's events")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many events")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable")] = False,
) -> None:
    """Show the audit trail, newest first.

    Logins (accepted and refused), logouts, reviews and account changes, with who, when, how
    and from where."""
    from db import accounts
    from db.worklist import parse_when

    try:
        start = parse_when(since) if since else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--since") from error
    with _sessions()() as session:
        account_id = None
        if account is not None:
            found = accounts.find(session, account)
            if found is None:
                _fail(f"no account {account.strip().lower()!r}")
            account_id = found.id if found else None
        events = accounts.audit_trail(session, since=start, account_id=account_id, limit=limit)
        rows: list[dict[str, Any]] = [
            {
                "at": e.at.isoformat(),
                "event": str(e.event),
                "account_id": e.account_id,
                "actor": e.actor,
                "via": e.via,
                "client": e.client,
                "worklist_id": e.worklist_id,
                "detail": e.detail,
            }
            for e in events
        ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        where = f" from {row['client']}" if row["client"] else ""
        what = f" row {row['worklist_id']}" if row["worklist_id"] is not None else ""
        detail = f" ({row['detail']})" if row["detail"] else ""
        line = f"{row['at'][:19]}  {row['event']:16} {row['actor']} via {row['via']}"
        typer.echo(printable(f"{line}{where}{what}{detail}"))
