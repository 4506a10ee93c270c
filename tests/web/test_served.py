"""``cxr-triage web`` as it is started in production: a real uvicorn process.

``X-Forwarded-For`` decides which client the login throttle counts and the log names; it
is believed only from the proxies in ``CXR_WEB_TRUSTED_PROXIES`` (none by default).
Compose runs the page with secure cookies.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from db import migrate
from tests.processes import running, service_env
from tests.support import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
FORGED = "203.0.113.77"


def _failed_login(port: int) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/login",
        data=urllib.parse.urlencode({"username": "x", "password": "wrong-pass"}).encode(),
        headers={"X-Forwarded-For": FORGED},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def _up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
            return True
    except OSError:
        return False


def _client_seen(tmp_path: Path, **extra: str) -> str:
    """The failed-login log line of ``cxr-triage web`` after a request with a forged XFF."""
    url = f"sqlite:///{tmp_path / 'worklist.sqlite3'}"
    migrate.upgrade(url)
    port = free_port()
    env = service_env(
        tmp_path, url, None, CXR_WEB_PASSWORD="long enough pw", CXR_WEB_PORT=str(port), **extra
    )
    log = tmp_path / "web.log"
    with running(["web"], env, log):
        wait_until(lambda: _up(port), 60, "the web page up", [log])
        assert _failed_login(port) == 401
        wait_until(lambda: "failed form login" in log.read_text(), 10, "the log line", [log])
    return next(line for line in log.read_text().splitlines() if "failed form login" in line)


@pytest.mark.slow
def test_x_forwarded_for_is_ignored_unless_the_proxy_is_trusted(tmp_path: Path) -> None:
    untrusted = _client_seen(tmp_path / "untrusted")
    assert "from 127.0.0.1" in untrusted and FORGED not in untrusted
    trusted = _client_seen(tmp_path / "trusted", CXR_WEB_TRUSTED_PROXIES="127.0.0.1")
    assert f"from {FORGED}" in trusted


def test_compose_serves_the_page_with_secure_cookies_and_metrics_stay_local() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    web = compose["services"]["web"]
    secure = "--secure-cookies" in web["command"] or str(
        web["environment"].get("CXR_WEB_SECURE_COOKIES", "")
    ).lower() in ("1", "true", "yes")
    assert secure, "compose must serve the login cookie over HTTPS only"
    assert "--no-secure-cookies" not in web["command"]
    proxies = str(web["environment"].get("CXR_WEB_TRUSTED_PROXIES", ""))
    assert proxies in ("", "${CXR_WEB_TRUSTED_PROXIES:-}"), "trusts no proxy unless told"

    worker_env = compose["services"]["worker"]["environment"]
    assert worker_env.get("CXR_METRICS_ADDRESS", "127.0.0.1") == "127.0.0.1"
