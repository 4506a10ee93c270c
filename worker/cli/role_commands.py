"""``db roles`` and ``db create-login``: least-privilege PostgreSQL logins for the services.

Run with the owner's login (the one ``cxr-triage db upgrade`` uses, which must be allowed to
create roles). ``db upgrade --roles`` (compose's ``migrate`` service) does both after the
migration: the groups and their grants, then a login per service whose password is set in
the environment (``CXR_DB_WATCHER_PASSWORD``, ``..._WORKER_``, ``..._DELIVER_``,
``..._WEB_``), named ``watcher``, ``worker``, ``deliver`` and ``web``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli.user_commands import read_password
from worker.cli.worklist_commands import db_app
from worker.settings import DB_LOGIN_PASSWORD_FIELDS, Settings, get_settings

SERVICES = ("watcher", "worker", "deliver", "web", "reader")


def _postgresql(settings: Settings) -> None:
    if not settings.database_url.startswith("postgresql"):
        typer.echo(
            "cxr-triage db: roles exist on PostgreSQL only; SQLite has none (keep its file "
            "readable by the service account only: CXR_UMASK)",
            err=True,
        )
        raise typer.Exit(2)


def apply_roles(settings: Settings) -> list[str]:
    """The groups and grants, then the environment's service logins; returns those logins."""
    from db import roles
    from db.engine import make_engine

    engine = make_engine(settings.database_url)
    made = []
    try:
        with engine.begin() as connection:
            roles.apply(connection)
            for service, field in DB_LOGIN_PASSWORD_FIELDS.items():
                secret = getattr(settings, field)
                if secret is not None:
                    roles.create_login(connection, service, service, secret.get_secret_value())
                    made.append(service)
    finally:
        engine.dispose()
    return made


@db_app.command("roles")
def db_roles(
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the SQL (for psql) instead of running it")
    ] = False,
) -> None:
    """Create the services' group roles with exactly their grants (idempotent; again after
    each upgrade), set every reader login read-only, and create the service logins whose
    password is in the environment (CXR_DB_<SERVICE>_PASSWORD)."""
    from db import roles

    if sql:
        typer.echo(roles.roles_sql(), nl=False)
        return
    get_settings.cache_clear()
    settings = get_settings()
    _postgresql(settings)
    made = apply_roles(settings)
    typer.echo("roles: " + ", ".join(r.group for r in roles.ROLES.values()))
    if made:
        typer.echo("logins: " + ", ".join(made))


@db_app.command("create-login")
def create_login(
    name: Annotated[str, typer.Argument(help="Login name (lower-case letters, digits, _)")],
    role: Annotated[
        str, typer.Option(help="watcher | worker | deliver | web | reader (PACS/RIS-side)")
    ],
) -> None:
    """Create a PostgreSQL login (or update it) in one service's group only; its password
    is read from a prompt or standard input. A reader login is made read-only itself."""
    from db import roles
    from db.engine import make_engine

    if role not in SERVICES:
        raise typer.BadParameter(f"one of {', '.join(SERVICES)}", param_hint="--role")
    get_settings.cache_clear()
    settings = get_settings()
    _postgresql(settings)
    password = read_password(f"Password for {name}")
    if len(password) < 16:
        typer.echo("cxr-triage db: a service password needs at least 16 characters", err=True)
        raise typer.Exit(1)
    engine = make_engine(settings.database_url)
    try:
        with engine.begin() as connection:
            roles.create_login(connection, name, role, password)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    finally:
        engine.dispose()
    typer.echo(f"login {name} in {roles.ROLES[role].group}")
