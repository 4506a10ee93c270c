"""``web``: the reading room's review page (FastAPI + uvicorn, no TensorFlow in the process)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Annotated

import typer

from web.config import WebConfig, WebConfigError
from worker.cli.app import app
from worker.settings import Settings, get_settings

log = logging.getLogger(__name__)

DEPRECATED_PASSWORD = (
    "CXR_WEB_PASSWORD is deprecated: it keeps one shared account (%r, role %s) for the "
    "upgrade only. Give each person an account (`cxr-triage user add NAME --role reviewer`), "
    "then `cxr-triage user disable %s` and unset CXR_WEB_PASSWORD."
)


def web_config(settings: Settings) -> WebConfig:
    """The page's configuration from the settings."""
    config = WebConfig(
        database_url=settings.database_url,
        archive_dir=settings.archive,
        overlay_dir=settings.overlays,
        secure_cookies=settings.web_secure_cookies,
        model_dir=settings.model_path,
        trusted_proxies=settings.web_trusted_proxies.strip(),
        remote_user_header=settings.web_remote_user_header.strip(),
        pacs_viewer_url=settings.web_pacs_viewer_url,
    )
    if settings.web_session_secret is not None:
        secret = settings.web_session_secret.get_secret_value()
        config = dataclasses.replace(config, session_secret=secret)
    return config


def bootstrap_shared_account(settings: Settings) -> str | None:
    """The migration path from the one shared account: with ``CXR_WEB_PASSWORD`` set, the
    ``CXR_WEB_USERNAME`` account (role reviewer, as the shared account could review) is
    created, or its password set to the environment's, with a deprecation warning. Returns
    what was done (None without the variable). :class:`db.accounts.AccountError` for a
    name or password that cannot be used."""
    if settings.web_password is None:
        return None
    from db import accounts
    from db.engine import make_engine, make_session_factory
    from db.models import Role

    password = settings.web_password.get_secret_value()
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine).begin() as session:
            done = accounts.bootstrap(session, settings.web_username, password, Role.REVIEWER)
    finally:
        engine.dispose()
    name = settings.web_username.strip().lower()
    log.warning(DEPRECATED_PASSWORD, name, Role.REVIEWER.value, name)
    log.warning("CXR_WEB_PASSWORD account %r: %s", name, done)
    return done


def enabled_accounts(settings: Settings) -> int:
    from db import accounts
    from db.engine import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            return accounts.enabled_count(session)
    finally:
        engine.dispose()


@app.command()
def web(
    host: Annotated[str | None, typer.Option(help="Listen address (default CXR_WEB_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default CXR_WEB_PORT)")] = None,
    secure_cookies: Annotated[
        bool | None,
        typer.Option(help="Login cookie over HTTPS only (default CXR_WEB_SECURE_COOKIES)"),
    ] = None,
) -> None:
    """Serve the worklist review page and its JSON API (accounts: `cxr-triage user`)."""
    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from db.accounts import AccountError
    from web.app import create_app
    from worker import service

    get_settings.cache_clear()
    settings = get_settings()
    service.configure_logging(settings.log_level)
    try:
        config = web_config(settings)
        bootstrap_shared_account(settings)
        if enabled_accounts(settings) == 0:
            raise WebConfigError(
                "no enabled account: create one with `cxr-triage user add NAME --role admin` "
                "(or, for the upgrade only, set CXR_WEB_PASSWORD)"
            )
    except (WebConfigError, AccountError) as error:
        typer.echo(f"cxr-triage web: {error}", err=True)
        raise typer.Exit(2) from error
    except SQLAlchemyError as error:
        # A login without the right to write accounts (the `web` database login): the
        # shared account is set up by `cxr-triage db upgrade` (compose: the migrate service).
        typer.echo(
            f"cxr-triage web: cannot read or set up accounts ({type(error).__name__}): run "
            "`cxr-triage db upgrade` first, with CXR_WEB_PASSWORD there if you still use it",
            err=True,
        )
        raise typer.Exit(2) from error
    if secure_cookies is not None:
        config = dataclasses.replace(config, secure_cookies=secure_cookies)
    # X-Forwarded-For names the client only when a proxy we trust sent it (the app applies
    # it, web/proxy.py): otherwise anyone who can reach the port picks the address the
    # login throttle and the logs see.
    uvicorn.run(
        create_app(config),
        host=host or settings.web_host,
        port=port or settings.web_port,
        proxy_headers=False,
        access_log=False,  # URLs carry row ids only, but keep request logs out of the app log
        log_config=None,  # uvicorn's records go through our handlers and the PHI guard
        log_level=settings.log_level.lower(),
        # an open page's live stream (web/live.py) ends within this on shutdown
        timeout_graceful_shutdown=3,
    )
