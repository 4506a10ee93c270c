"""The session cookie's ``Secure`` attribute when the page is served with secure cookies.

Behind the TLS proxy every login comes from an ``https://`` page and the cookie is HTTPS-only.
The administrator's first login, though, is on the host itself, before any proxy exists
(compose publishes the page on ``127.0.0.1:8080``): over plain ``http://`` a browser or an
HTTP client that follows the standard drops an HTTPS-only cookie (Safari, ``curl``, Python's
cookie jar), and the login silently bounces back to the login form.

So one exception: the response to a login whose page was loaded from a loopback address over
``http://`` (the browser's own ``Origin`` header says so, and a proxy passes it unchanged)
sets the cookie without ``Secure``. The browser then holds it for ``127.0.0.1`` or
``localhost`` only, which never leaves the machine. Every other response, and every login from
any other origin, keeps ``Secure``; a request without an ``Origin`` keeps it too.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders

SESSION_COOKIE = "cxr_session"


def _http_host(origin: str | None) -> str | None:
    """The host of an ``http://`` origin; ``None`` for any other scheme, or for text that is
    no URL (the header is the client's: anything may come)."""
    try:
        parts = urlsplit(origin or "")
        host = parts.hostname
    except ValueError:
        return None
    return host if parts.scheme == "http" and host else None


def loopback_http(origin: str | None) -> bool:
    """True for ``http://localhost[:port]``, ``http://127.x.y.z[:port]``, ``http://[::1][:port]``."""
    host = _http_host(origin)
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http(origin: str | None) -> bool:
    """The page that sent the request was loaded over plain ``http://``."""
    return _http_host(origin) is not None


def without_secure(headers: MutableHeaders, cookie: str = SESSION_COOKIE) -> None:
    """Drop the ``Secure`` attribute from the ``Set-Cookie`` headers of ``cookie`` only."""
    values = headers.getlist("set-cookie")
    if not any(v.startswith(f"{cookie}=") for v in values):
        return
    del headers["set-cookie"]
    for value in values:
        if value.startswith(f"{cookie}="):
            value = "; ".join(
                part for part in value.split("; ") if part.strip().lower() != "secure"
            )
        headers.append("set-cookie", value)
