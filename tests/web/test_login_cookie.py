"""The administrator's first login on the host works with secure cookies (issue 21).

Compose serves the page with HTTPS-only session cookies and publishes it on 127.0.0.1:8080;
before the TLS proxy exists, the first login is over ``http://127.0.0.1``. A client that
follows the cookie standard (here httpx's, as Safari or curl) does not send an HTTPS-only
cookie over plain HTTP, so the login bounced back to the form. From a loopback ``http://``
page the login cookie is now set without ``Secure`` (it never leaves the machine); from any
other origin it stays HTTPS-only.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.support.web import PASSWORD, USERNAME, Worklist
from web.app import create_app
from web.cookies import loopback_http


@pytest.fixture
def secure(worklist: Worklist) -> Iterator[TestClient]:
    config = dataclasses.replace(worklist.config(), secure_cookies=True)
    with TestClient(create_app(config), base_url="http://127.0.0.1:8080") as client:
        yield client


def _login(client: TestClient, origin: str | None) -> str:
    headers = {"Origin": origin} if origin else {}
    response = client.post(
        "/login",
        data={"username": USERNAME, "password": PASSWORD},
        headers=headers,
        follow_redirects=False,
    )
    assert response.status_code == 303
    (cookie,) = [v for v in response.headers.get_list("set-cookie") if "cxr_session=" in v]
    return cookie.lower()


def test_a_first_login_on_the_host_over_http_sticks(secure: TestClient) -> None:
    cookie = _login(secure, "http://127.0.0.1:8080")
    assert "secure" not in cookie.split("; ") and "httponly" in cookie
    assert secure.get("/worklist", follow_redirects=False).status_code == 200


@pytest.mark.parametrize(
    "origin",
    [
        "https://cxr.hospital.example",
        "http://cxr-host:8080",
        "null",
        None,
        "http://[::1",  # not a URL: urlsplit raises
        "javascript:alert(1)",
        "http://127.0.0.1.evil.example",
    ],
)
def test_every_other_login_keeps_the_cookie_https_only(
    secure: TestClient, origin: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="web.app"):
        cookie = _login(secure, origin)
    assert "secure" in cookie.split("; ")
    # the standard cookie jar does not send it back over plain HTTP
    assert secure.get("/worklist", follow_redirects=False).status_code == 303
    told = "will not keep the HTTPS-only session cookie" in caplog.text
    assert told is (origin in ("http://cxr-host:8080", "http://127.0.0.1.evil.example"))


@pytest.mark.parametrize(
    ("origin", "loopback"),
    [
        ("http://localhost:8080", True),
        ("http://127.0.0.5", True),
        ("http://[::1]:8080", True),
        ("https://127.0.0.1:8443", False),
        ("http://127.0.0.1.evil.example", False),
        ("http://localhost.evil.example", False),
        ("http://[::1", False),
        ("http://user@127.0.0.1:8080@evil.example", False),
        ("", False),
    ],
)
def test_only_a_loopback_http_origin_counts(origin: str, loopback: bool) -> None:
    assert loopback_http(origin) is loopback
