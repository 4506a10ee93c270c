"""``create_app``: the review page's FastAPI application, wired from a :class:`WebConfig`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import MutableHeaders
from starlette.middleware.sessions import SessionMiddleware
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db.engine import make_engine, make_session_factory
from model.card import SHIPPED_DIR, ModelCard
from web import admin_api, api, cookies, drift_header, pages, present
from web.auth import Gate, LoginRequiredError, Person, ProxyUserRefusedError, api_user
from web.config import WebConfig
from web.films import Films
from web.live import LiveState
from web.overlays import Thumbnails
from web.proxy import TrustedProxyMiddleware
from web.sessions import SessionStore

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    # Pages show patient identifiers: never cached by shared caches, framed or leaked.
    "Content-Security-Policy": (
        # Scripts: this server's own files only (web/static), never inline, never a CDN.
        "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; form-action 'self'; "
        "base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class SecurityHeadersMiddleware:
    """Every response the routes, the exception handlers or the middlewares send carries
    :data:`SECURITY_HEADERS` (a response that set its own value keeps it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                # What the server sends depends on who is logged in: no cache may answer
                # another session from it (images are cached privately, revalidated).
                if "cookie" not in headers.get("vary", "").lower():
                    headers.append("Vary", "Cookie")
            await send(message)

        await self.app(scope, receive, send_with_headers)


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
    app.state.films = Films(config.overlay_dir, config.archive_dir)
    app.state.live = LiveState(app.state.sessions)
    app.state.card = _card(config.model_dir)
    app.state.templates = Jinja2Templates(env=_environment())
    app.state.live_sessions = SessionStore(config.session_max_age_s)
    app.state.gate = Gate(config)
    app.state.drift_reference = drift_header.load_reference(config.model_dir)
    app.add_middleware(
        SessionMiddleware,
        secret_key=config.session_secret,
        session_cookie=cookies.SESSION_COOKIE,
        max_age=config.session_max_age_s,
        same_site="strict",
        https_only=config.secure_cookies,
    )
    app.add_middleware(TrustedProxyMiddleware, trusted_hosts=config.trusted_proxies)
    app.add_middleware(SecurityHeadersMiddleware)
    app.include_router(pages.router)
    app.include_router(api.router)
    app.include_router(admin_api.router)
    app.mount("/static", StaticFiles(packages=[("web", "static")]), name="static")

    @app.exception_handler(LoginRequiredError)
    def _to_login(request: Request, exc: LoginRequiredError) -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(ProxyUserRefusedError)
    def _no_account(request: Request, exc: ProxyUserRefusedError) -> Response:
        return HTMLResponse(
            "<!doctype html><title>No account</title><p>You are signed in, but there is no "
            "enabled cxr-triage account for you: ask an administrator.</p>",
            status.HTTP_403_FORBIDDEN,
        )

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> Response:
        """FastAPI's 422, without the ``input`` it echoes: the input may be what made the
        request invalid (a lone surrogate cannot even be encoded: that 422 became a 500),
        and a reader's note is patient data that has no business in an error."""
        errors = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(Exception)
    def _internal_error(request: Request, exc: Exception) -> Response:
        """A 500 is answered by Starlette's outermost middleware, past every other one: its
        response must carry the security headers itself."""
        return PlainTextResponse(
            "Internal Server Error", status.HTTP_500_INTERNAL_SERVER_ERROR, SECURITY_HEADERS
        )

    if config.secure_cookies:

        @app.middleware("http")
        async def _login_cookie_on_loopback(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            response = await call_next(request)
            if request.method == "POST" and request.url.path == "/login":
                _login_cookie(request, response)
            return response

    @app.get("/api/openapi.json", include_in_schema=False)
    def _openapi(reader: Annotated[Person, Depends(api_user)]) -> dict[str, Any]:
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


def _login_cookie(request: Request, response: Response) -> None:
    """A login from this machine's own browser over ``http://127.0.0.1`` gets a cookie it can
    keep (:mod:`web.cookies`); a login from any other plain-``http://`` page cannot keep an
    HTTPS-only cookie, and the operator is told why instead of a silent bounce to the form."""
    origin = request.headers.get("origin")
    if cookies.loopback_http(origin):
        cookies.without_secure(response.headers)
    elif cookies.plain_http(origin) and response.status_code == status.HTTP_303_SEE_OTHER:
        log.warning(  # the Origin header is the client's text: not logged
            "a login from a plain-HTTP page of another host: the browser will not keep the "
            "HTTPS-only session cookie (CXR_WEB_SECURE_COOKIES); open the page through the "
            "TLS proxy"
        )


def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("web", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = _when
    environment.filters["percent"] = _percent
    environment.globals.update(
        probability_text=present.probability_text,
        cutoff_text=present.cutoff_text,
        age_text=present.age_text,
        waiting_text=present.waiting_text,
        why_unscored=present.why_unscored,
        badge=present.badge,
        sex_words=present.SEX_WORDS,
        flag_words=present.FLAG_WORDS,
    )
    return environment


def _card(model_dir: Path | None) -> ModelCard | None:
    """The model card the page states the cut-offs from when a row predates their column."""
    try:
        return ModelCard.load(model_dir if model_dir is not None else SHIPPED_DIR)
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("no model card for the review page: %s", error)
        return None


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def _percent(value: float | None) -> str:
    return f"{value * 100:.0f} %" if value is not None else ""
