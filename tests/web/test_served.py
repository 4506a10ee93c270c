"""``cxr-triage web`` as it is started in production: a real uvicorn process.

``X-Forwarded-For`` decides which client the login throttle counts and the log names; it
is believed only from the proxies in ``CXR_WEB_TRUSTED_PROXIES`` (none by default).
Compose runs the page with secure cookies.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from db import accounts, migrate
from db.engine import make_engine, make_session_factory
from db.worklist import Arrival, ScoreValues, admit
from tests.corpus import cr_dicom
from tests.ingest.dicom_factory import sample_jpegs
from tests.processes import running, service_env
from tests.reliability.phi_flow import FILE_NAME, PHI
from tests.support import free_port, wait_until
from tests.support.worklist import record_scored

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


def _login(port: int, username: str, password: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/login",
        data=urllib.parse.urlencode({"username": username, "password": password}).encode(),
    )
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


@pytest.mark.slow
def test_an_operator_with_cxr_web_password_still_gets_in_after_the_upgrade(tmp_path: Path):
    """The migration path: the shared account becomes the CXR_WEB_USERNAME account (role
    reviewer) on the first start, with a deprecation warning; a new CXR_WEB_PASSWORD
    replaces its password at the next start."""
    url = f"sqlite:///{tmp_path / 'worklist.sqlite3'}"
    migrate.upgrade(url)
    for number, password in enumerate(("the old shared pw", "the rotated shared pw")):
        port = free_port()
        env = service_env(tmp_path, url, None, CXR_WEB_PASSWORD=password, CXR_WEB_PORT=str(port))
        log = tmp_path / f"web-{number}.log"
        with running(["web"], env, log):
            wait_until(lambda: _up(port), 60, "the web page up", [log])  # noqa: B023
            assert _login(port, "reader", password) == 303
            assert _login(port, "reader", "the old shared pw") == (303 if number == 0 else 401)
        text = log.read_text()
        assert "CXR_WEB_PASSWORD is deprecated" in text
        assert ("created" if number == 0 else "password updated") in text
        assert password not in text
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        account = accounts.find(session, "reader")
        assert account is not None and account.role == "reviewer"
    engine.dispose()


def test_the_log_keeps_the_server_s_address_and_hides_a_phi_laden_dicom(tmp_path: Path) -> None:
    """At DEBUG, the web process logged ``Uvicorn running on [redacted]:[redacted]`` (issue
    21): its own address is configuration and is kept; the values of a PHI-laden DICOM the
    page decodes for its thumbnail (pydicom warns about its malformed birth date, quoting it)
    and its file name still reach no log line."""
    url = f"sqlite:///{tmp_path / 'worklist.sqlite3'}"
    migrate.upgrade(url)
    archive = tmp_path / "archive"
    archive.mkdir()
    source = cr_dicom(sample_jpegs(1)[0], archive / FILE_NAME, **PHI)
    sessions = make_session_factory(make_engine(url))
    with sessions.begin() as session:
        entry, _ = admit(
            session,
            Arrival(
                file_sha256=hashlib.sha256(source.read_bytes()).hexdigest(),
                source_name=FILE_NAME,
                source_path=str(tmp_path / "inbox" / FILE_NAME),
                source_kind="dicom",
                accession_number=PHI["AccessionNumber"],
                patient_id=PHI["PatientID"],
            ),
        )
        record_scored(
            session, entry, ScoreValues(0.9, "pneumonia", "urgent", 0, 0.5, "m-1"), str(source)
        )
        row = entry.id
    port = free_port()
    env = service_env(
        tmp_path,
        url,
        None,
        CXR_WEB_PASSWORD="long enough pw",
        CXR_WEB_PORT=str(port),
        CXR_ARCHIVE=str(archive),
        CXR_LOG_LEVEL="DEBUG",
    )
    log = tmp_path / "web.log"
    with running(["web"], env, log):
        wait_until(lambda: _up(port), 60, "the web page up", [log])
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        login = urllib.parse.urlencode({"username": "reader", "password": "long enough pw"})
        browser.open(f"http://127.0.0.1:{port}/login", data=login.encode(), timeout=10)
        with browser.open(
            f"http://127.0.0.1:{port}/worklist/{row}/image.png?size=full", timeout=30
        ) as image:
            assert image.status == 200 and image.read(8) == b"\x89PNG\r\n\x1a\n"
    text = log.read_text()
    assert f"Uvicorn running on http://127.0.0.1:{port} (Press CTRL+C to quit)" in text, text
    assert "DEBUG" in text
    needles = [*PHI.values(), "Zyxwvutsonian", "Quixotella", "77341928", FILE_NAME]
    assert [needle for needle in needles if needle in text] == []
