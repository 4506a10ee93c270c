"""``web``: the reading room's review page (FastAPI + uvicorn, no TensorFlow in the process)."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from web.config import WebConfig, WebConfigError
from worker.cli.app import app
from worker.settings import Settings, get_settings


def web_config(settings: Settings) -> WebConfig:
    """The page's configuration from the settings; :class:`WebConfigError` without a password."""
    password = settings.web_password.get_secret_value() if settings.web_password else ""
    config = WebConfig(
        database_url=settings.db_url,
        archive_dir=settings.archive_dir,
        overlay_dir=settings.overlay_dir,
        username=settings.web_username,
        password=password,
        secure_cookies=settings.web_secure_cookies,
        model_dir=settings.model_path,
    )
    if settings.web_session_secret is not None:
        secret = settings.web_session_secret.get_secret_value()
        config = dataclasses.replace(config, session_secret=secret)
    return config


@app.command()
def web(
    host: Annotated[str | None, typer.Option(help="Listen address (default CXR_WEB_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default CXR_WEB_PORT)")] = None,
    secure_cookies: Annotated[
        bool | None,
        typer.Option(help="Login cookie over HTTPS only (default CXR_WEB_SECURE_COOKIES)"),
    ] = None,
) -> None:
    """Serve the worklist review page and its JSON API (login: CXR_WEB_USERNAME/PASSWORD)."""
    import uvicorn

    from web.app import create_app
    from worker import service

    get_settings.cache_clear()
    settings = get_settings()
    try:
        config = web_config(settings)
    except WebConfigError as error:
        typer.echo(f"cxr-triage web: {error}", err=True)
        raise typer.Exit(2) from error
    service.configure_logging(settings.log_level)
    if secure_cookies is not None:
        config = dataclasses.replace(config, secure_cookies=secure_cookies)
    # X-Forwarded-For names the client only when a proxy we trust sent it: otherwise anyone
    # who can reach the port picks the address the login throttle and the logs see.
    trusted = settings.web_trusted_proxies.strip()
    uvicorn.run(
        create_app(config),
        host=host or settings.web_host,
        port=port or settings.web_port,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        access_log=False,  # URLs carry row ids only, but keep request logs out of the app log
        log_config=None,  # uvicorn's records go through our handlers and the PHI guard
        log_level=settings.log_level.lower(),
    )
