"""The reverse proxy in front of the page: which client it speaks for, and whether it may
say who is logged in.

uvicorn's own ``--proxy-headers`` replaces the peer's address with the ``X-Forwarded-For``
client before the application runs, so the application can no longer tell whether a
request came through the trusted proxy at all. Here the same uvicorn middleware runs inside
the application, after this one has noted (``request.state.trusted_proxy``) whether the
direct peer is one of ``CXR_WEB_TRUSTED_PROXIES``: only then is the remote-user header
believed (:func:`web.auth.current_person`).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

TRUSTED_PROXY = "trusted_proxy"


class TrustedProxyMiddleware(ProxyHeadersMiddleware):
    """uvicorn's proxy-header handling, plus a note of whether the peer was trusted."""

    def __init__(self, app: ASGIApp, trusted_hosts: str) -> None:
        super().__init__(app, trusted_hosts=trusted_hosts)  # type: ignore[arg-type]
        self.enabled = bool(trusted_hosts.strip())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            host = client[0] if client else None
            trusted = self.enabled and host in self.trusted_hosts
            scope.setdefault("state", {})[TRUSTED_PROXY] = trusted
            if not trusted:
                await self.app(scope, receive, send)  # type: ignore[arg-type]
                return
        await super().__call__(scope, receive, send)  # type: ignore[arg-type]
