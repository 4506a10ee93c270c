"""Red-team findings on the review page (issue 12, "Web and logs"), each reproduced first.

Login throttling and its log, logout that ends the session on the server, crafted filters
and ids answered 4xx (never 500), the OpenAPI schema behind a login, a health check that
sees the database, radiographs that are never cached, and an append-only review history.
"""

from __future__ import annotations

import logging
import re
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from db.models import ReviewDecision
from db.worklist import get_entry, review, review_history
from tests.support.web import PASSWORD, USERNAME, Worklist
from tests.web.test_pages import csrf
from web.app import SECURITY_HEADERS, create_app
from web.auth import CSRF_HEADER

BASIC = (USERNAME, PASSWORD)


def form_login(client: TestClient, username: str, password: str) -> int:
    response = client.post(
        "/login", data={"username": username, "password": password}, follow_redirects=False
    )
    return response.status_code


# -- throttling and logging failed logins -------------------------------------------------


def test_200_wrong_passwords_then_the_right_one_is_not_accepted_at_once(
    client: TestClient, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.WARNING, logger="web"):
        codes = [form_login(client, USERNAME, f"guess-{n}") for n in range(200)]
        assert form_login(client, USERNAME, PASSWORD) == 429
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
    assert client.get("/worklist", follow_redirects=False).status_code == 303
    # Basic auth shares the same throttle: the right password is refused too, with Retry-After.
    refused = client.get("/api/worklist", auth=BASIC)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    text = caplog.text
    assert "failed form login" in text and "locked" in text
    assert USERNAME not in text and "guess-" not in text and PASSWORD not in text


def test_the_right_password_is_accepted_once_the_backoff_has_passed(worklist: Worklist):
    config = worklist.config()
    config = type(config)(**{**config.__dict__, "login_backoff_base_s": 0.2})
    with TestClient(create_app(config)) as client:
        for n in range(5):
            assert form_login(client, USERNAME, f"guess-{n}") == 401
        refused = client.post("/login", data={"username": USERNAME, "password": PASSWORD})
        assert refused.status_code == 429 and "try again in" in refused.text
        time.sleep(float(refused.headers["retry-after"]) + 0.1)
        assert form_login(client, USERNAME, PASSWORD) == 303


def test_the_per_user_throttle_holds_across_client_addresses(worklist: Worklist):
    """An attacker with many addresses still meets the per-user count."""
    app = create_app(worklist.config())
    for n in range(6):
        with TestClient(app, client=(f"198.51.100.{n}", 40000)) as client:
            form_login(client, USERNAME, f"guess-{n}")
    with TestClient(app, client=("198.51.100.99", 40000)) as client:
        assert form_login(client, USERNAME, PASSWORD) == 429


def test_failed_basic_logins_are_logged_without_the_name_or_password(
    client: TestClient, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.WARNING, logger="web"):
        assert client.get("/api/worklist", auth=("mallory-x", "pw-12345")).status_code == 401
    assert "failed basic login" in caplog.text
    assert "mallory-x" not in caplog.text and "pw-12345" not in caplog.text


# -- logout ends the session on the server ------------------------------------------------


def test_the_cookie_of_a_logged_out_session_reads_and_writes_nothing(
    logged_in: TestClient, worklist: Worklist
):
    row = worklist.ids["urgent-97"]
    page = logged_in.get(f"/worklist/{row}").text
    token = csrf(page)
    stolen = dict(logged_in.cookies)  # what an attacker copied before the reader logged out
    assert logged_in.post("/logout", data={"csrf_token": token}).status_code == 200
    logged_in.cookies.clear()
    logged_in.cookies.update(stolen)
    assert logged_in.get("/worklist", follow_redirects=False).status_code == 303
    assert logged_in.get(f"/api/worklist/{row}").status_code == 401
    posted = logged_in.post(
        f"/worklist/{row}/review",
        data={"decision": "agree", "csrf_token": token},
        follow_redirects=False,
    )
    assert posted.status_code == 303 and posted.headers["location"] == "/login"
    api = logged_in.post(
        f"/api/worklist/{row}/review", json={"decision": "agree"}, headers={CSRF_HEADER: token}
    )
    assert api.status_code == 401
    with worklist.sessions() as session:
        assert get_entry(session, row).reviewed_at is None


# -- crafted filters and ids ---------------------------------------------------------------

CRAFTED_FILTERS = [
    {"since": "1000000d"},
    {"since": "99999999999999999999999m"},
    {"since": "9999-12-31T23:59:59-23:59"},
    {"patient_id": "PID\x00-1"},
    {"accession_number": "\x00"},
    {"status": "done\x00"},
    {"limit": "0"},
    {"limit": "-5"},
    {"limit": "5" * 5000},
]
HUGE_IDS = [2**63, 2**63 - 1 + 10, 2**64, -(2**63) - 1]


@pytest.mark.parametrize("params", CRAFTED_FILTERS, ids=lambda p: repr(p)[:30])
def test_crafted_filters_are_4xx_with_a_message(logged_in: TestClient, params):
    api = logged_in.get("/api/worklist", params=params)
    assert 400 <= api.status_code < 500, api.text
    assert api.json()["detail"]
    page = logged_in.get("/worklist", params=params)
    assert page.status_code in (200, 422), page.text  # the page shows the error above the list
    if page.status_code == 200:
        assert 'class="error"' in page.text


@pytest.mark.parametrize("entry_id", HUGE_IDS)
def test_ids_beyond_bigint_are_4xx(logged_in: TestClient, entry_id: int, worklist: Worklist):
    token = csrf(logged_in.get("/worklist").text)
    for method, url, kwargs in (
        ("GET", f"/api/worklist/{entry_id}", {}),
        ("POST", f"/api/worklist/{entry_id}/review", {"json": {"decision": "agree"}}),
        ("GET", f"/worklist/{entry_id}", {}),
        ("GET", f"/worklist/{entry_id}/image.png", {}),
        ("POST", f"/worklist/{entry_id}/review", {"data": {"decision": "agree"}}),
    ):
        headers = {CSRF_HEADER: token}
        if "data" in kwargs:
            kwargs["data"]["csrf_token"] = token
        response = logged_in.request(method, url, headers=headers, **kwargs)
        assert 400 <= response.status_code < 500, (url, response.status_code)


def test_a_note_with_a_nul_byte_is_refused(logged_in: TestClient, worklist: Worklist):
    row = worklist.ids["urgent-88"]
    response = logged_in.post(
        f"/api/worklist/{row}/review",
        json={"decision": "agree", "note": "bad\x00note"},
        auth=BASIC,
    )
    assert response.status_code == 422


# -- schema, health, caching ---------------------------------------------------------------


def test_the_openapi_schema_and_docs_need_a_login(client: TestClient):
    assert client.get("/api/openapi.json").status_code == 401
    for url in ("/docs", "/redoc", "/api/docs"):
        assert client.get(url).status_code in (401, 404), url
    schema = client.get("/api/openapi.json", auth=BASIC)
    assert schema.status_code == 200 and "/api/worklist" in schema.json()["paths"]


def test_health_check_fails_when_the_database_is_unreachable(worklist: Worklist):
    config = worklist.config()
    down = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    broken = type(config)(**{**config.__dict__, "database_url": down})
    with TestClient(create_app(broken)) as client:
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "database unreachable"
    assert "127.0.0.1" not in response.text and "nobody" not in response.text


def test_radiographs_are_kept_private_and_revalidated_every_time(
    logged_in: TestClient, worklist: Worklist
):
    """Patient images: never in a shared cache, never reused without the server checking
    the session (``private, no-cache``, ``Vary: Cookie``); an unchanged one costs a 304."""
    row = worklist.ids["urgent-97"]
    for url in (
        f"/worklist/{row}/image.png",
        f"/worklist/{row}/thumb.webp",
        f"/worklist/{row}/film.png?max_side=512",
        f"/worklist/{row}/heatmap.png",
    ):
        response = logged_in.get(url)
        assert response.status_code == 200, url
        assert response.headers["cache-control"] == "private, no-cache", url
        assert response.headers["vary"] == "Cookie", url
        etag = response.headers.get("etag")
        if etag:
            again = logged_in.get(url, headers={"If-None-Match": etag})
            assert again.status_code == 304 and again.content == b"", url
    token = csrf(logged_in.get("/worklist").text)
    logged_in.post("/logout", data={"csrf_token": token})
    # a logged-out browser presenting its copy's validator gets the login form, not a 304
    gone = logged_in.get(
        f"/worklist/{row}/thumb.webp", headers={"If-None-Match": etag}, follow_redirects=False
    )
    assert gone.status_code == 303 and gone.headers["location"] == "/login"


# -- review history ------------------------------------------------------------------------


def test_a_re_review_keeps_the_earlier_decision_in_the_history(
    logged_in: TestClient, worklist: Worklist
):
    row = worklist.ids["suspect-31"]
    first = logged_in.post(
        f"/api/worklist/{row}/review", json={"decision": "agree", "note": "lobar"}, auth=BASIC
    )
    assert first.status_code == 200
    page = logged_in.get(f"/worklist/{row}")
    second = logged_in.post(
        f"/worklist/{row}/review",
        data={
            "decision": "disagree",
            "note": "on second look: <b>atelectasis</b>",
            "csrf_token": csrf(page.text),
        },
        follow_redirects=False,
    )
    assert second.status_code == 303
    with worklist.sessions() as session:
        entry = get_entry(session, row)
        assert entry.review_decision is ReviewDecision.DISAGREE  # the row keeps the latest
        history = review_history(session, row)
    assert [(h.decision, h.reviewed_by, h.note) for h in history] == [
        (ReviewDecision.AGREE, USERNAME, "lobar"),
        (ReviewDecision.DISAGREE, USERNAME, "on second look: <b>atelectasis</b>"),
    ]
    assert history[0].reviewed_at <= history[1].reviewed_at
    api = logged_in.get(f"/api/worklist/{row}", auth=BASIC).json()
    assert [r["decision"] for r in api["reviews"]] == ["agree", "disagree"]
    assert api["reviews"][0]["note"] == "lobar" and api["reviews"][0]["reviewed_by"] == USERNAME
    html = logged_in.get(f"/worklist/{row}").text
    assert "lobar" in html and "&lt;b&gt;atelectasis&lt;/b&gt;" in html
    history_html = html.split('<ol class="review-history">', 1)[1].split("</ol>", 1)[0]
    decisions = re.findall(r'<span class="decision">(\w+)</span>', history_html)
    assert decisions == ["agree", "disagree"]


def test_the_review_history_cannot_be_rewritten(worklist: Worklist):
    row = worklist.ids["urgent-88"]
    with worklist.sessions.begin() as session:
        review(session, row, ReviewDecision.AGREE, USERNAME, note="first read")
    for statement in (
        "UPDATE review_history SET decision = 'disagree'",
        "DELETE FROM review_history",
    ):
        with (
            pytest.raises(DBAPIError, match="append-only"),
            worklist.sessions.begin() as session,
        ):
            session.execute(text(statement))
    with worklist.sessions() as session:
        assert [h.note for h in review_history(session, row)] == ["first read"]


# -- every error carries the security headers (issue 20) ----------------------------------


def _has_security_headers(response) -> bool:
    return all(response.headers.get(name) == value for name, value in SECURITY_HEADERS.items())


def test_a_note_with_a_lone_surrogate_is_a_422_with_the_security_headers(
    logged_in: TestClient, worklist: Worklist
):
    """A JSON note holding "\\ud800" reached the database, which cannot store it: a 500
    without the security headers (issue 20)."""
    row = worklist.ids["urgent-88"]
    for body in (
        b'{"decision": "agree", "note": "x\\ud800y"}',
        b'{"decision": "agree", "note": "\\udfff"}',
    ):
        response = logged_in.post(
            f"/api/worklist/{row}/review",
            content=body,
            headers={"content-type": "application/json"},
            auth=BASIC,
        )
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "note"]
        assert "\\ud8" not in response.text and _has_security_headers(response)
    paired = logged_in.post(  # a valid pair is one character, and welcome
        f"/api/worklist/{row}/review",
        content=b'{"decision": "agree", "note": "ok \\ud83d\\ude00"}',
        headers={"content-type": "application/json"},
        auth=BASIC,
    )
    assert paired.status_code == 200 and paired.json()["reviews"][-1]["note"] == "ok \U0001f600"


def test_every_error_response_carries_the_security_headers(worklist: Worklist):
    with TestClient(create_app(worklist.config())) as client:
        answers = [
            client.get("/api/worklist"),  # 401
            client.get("/no-such-page"),  # 404
            client.put("/login"),  # 405
            client.get("/api/worklist", params={"limit": "x"}, auth=BASIC),  # 422
            client.get("/api/audit", auth=BASIC),  # 403
        ]
        assert [r.status_code for r in answers] == [401, 404, 405, 422, 403]
        assert all(_has_security_headers(r) for r in answers)
    config = worklist.config()
    down = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    broken = type(config)(**{**config.__dict__, "database_url": down})
    with TestClient(create_app(broken), raise_server_exceptions=False) as client:
        crashed = client.post("/login", data={"username": USERNAME, "password": PASSWORD})
    assert crashed.status_code == 500 and _has_security_headers(crashed)
    assert "nobody" not in crashed.text and "127.0.0.1" not in crashed.text


def test_the_note_check_refuses_lone_surrogates_whatever_the_route():
    from web.params import check_note

    with pytest.raises(ValueError, match="surrogate"):
        check_note("left \ud800 alone")
    assert check_note(" fine \U0001f600 ") == "fine \U0001f600"
