"""``create_app``: the review page's FastAPI application, wired from a :class:`WebConfig`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.middleware.sessions import SessionMiddleware
from starlette.templating import Jinja2Templates

from db.engine import make_engine, make_session_factory
from web import api, drift, pages
from web.auth import LoginRequiredError, api_user
from web.config import WebConfig
from web.overlays import Thumbnails
from web.sessions import SessionStore
from web.throttle import LoginThrottle

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    # Pages show patient identifiers: never cached by shared caches, framed or leaked.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'none'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_app(config: WebConfig) -> FastAPI:
    app = FastAPI(
        title="cxr-triage worklist",
        description="Pediatric chest X-ray triage worklist. Research/triage aid, "
        "not for diagnostic use.",
        # The schema lists every route and parameter: served below, behind the API's login;
        # no interactive docs (they load scripts from a CDN, which the CSP forbids anyway).
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    engine = make_engine(config.database_url)
    app.state.config = config
    app.state.engine = engine
    app.state.sessions = make_session_factory(engine)
    app.state.thumbnails = Thumbnails(config.overlay_dir, config.archive_dir)
    app.state.templates = Jinja2Templates(env=_environment())
    app.state.live_sessions = SessionStore(config.session_max_age_s)
    app.state.throttle = LoginThrottle(
        config.login_free_failures, config.login_backoff_base_s, config.login_backoff_max_s
    )
    app.state.drift_reference = drift.load_reference(config.model_dir)
    app.add_middleware(
        SessionMiddleware,
        secret_key=config.session_secret,
        session_cookie="cxr_session",
        max_age=config.session_max_age_s,
        same_site="strict",
        https_only=config.secure_cookies,
    )
    app.include_router(pages.router)
    app.include_router(api.router)
    app.mount("/static", StaticFiles(packages=[("web", "static")]), name="static")

    @app.exception_handler(LoginRequiredError)
    def _to_login(request: Request, exc: LoginRequiredError) -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.middleware("http")
    async def _headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.get("/api/openapi.json", include_in_schema=False)
    def _openapi(reader: Annotated[str, Depends(api_user)]) -> dict[str, Any]:
        return app.openapi()

    @app.get("/healthz", include_in_schema=False)
    def _health() -> JSONResponse:
        """For the compose health check: no login, no patient data. 503 when the worklist
        database does not answer, since the page is then useless to the reading room."""
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as error:
            log.warning("health check: database unreachable (%s)", type(error).__name__)
            return JSONResponse(
                {"status": "database unreachable"}, status.HTTP_503_SERVICE_UNAVAILABLE
            )
        return JSONResponse({"status": "ok"})

    return app


def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("web", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = _when
    environment.filters["percent"] = _percent
    return environment


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def _percent(value: float | None) -> str:
    return f"{value * 100:.0f} %" if value is not None else ""
