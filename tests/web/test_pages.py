"""The server-rendered pages: login, list in reading order, a case, its review form."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from db.models import ReviewDecision
from db.worklist import get_entry
from tests.support.web import PASSWORD, READING_ORDER, USERNAME, Worklist, png_size
from web.overlays import FULL_SIDE, THUMBNAIL_SIDE


def row_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr class="row [^"]*" data-id="(\d+)"', html)]


def csrf(html: str) -> str:
    return html.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def test_pages_redirect_to_login_without_a_session(client: TestClient, worklist: Worklist):
    for url in ("/worklist", f"/worklist/{worklist.ids['urgent-97']}", "/worklist/1/image.png"):
        response = client.get(url, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/login", url


def test_wrong_password_is_refused_without_a_session(client: TestClient):
    response = client.post(
        "/login", data={"username": USERNAME, "password": "nope"}, follow_redirects=False
    )
    assert response.status_code == 401
    assert "Wrong user name or password" in response.text
    assert client.get("/worklist", follow_redirects=False).status_code == 303


def test_worklist_page_lists_rows_in_reading_order(logged_in: TestClient, worklist: Worklist):
    response = logged_in.get("/worklist")
    assert response.status_code == 200
    ids = row_ids(response.text)
    assert ids == [worklist.ids[name] for name in READING_ORDER]
    # the list apart is its own view, counted and linked from the reading list's
    assert "1 entry listed apart" in response.text
    apart_view = logged_in.get("/worklist", params={"tier": "apart"}).text
    apart = re.findall(r'<tr class="apart [^"]*" data-id="(\d+)"', apart_view)
    assert apart == [str(worklist.ids["rejected"])]
    assert "Entries 1–6 of 6" in response.text
    assert "NOT FOR DIAGNOSTIC USE" in response.text
    assert "ACC-003" in response.text  # the urgent 0.97 row's accession
    assert 'data-flag="age_outside_training_range">age outside 1-5 years</span>' in response.text
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_filters_on_the_page(logged_in: TestClient, worklist: Worklist):
    response = logged_in.get("/worklist", params={"status": "rejected"})
    assert row_ids(response.text) == [] and "1 entry listed apart" in response.text
    response = logged_in.get("/worklist", params={"status": "rejected", "tier": "apart"})
    assert f'data-id="{worklist.ids["rejected"]}"' in response.text
    assert "Not the device&#39;s to read: a lateral view" in response.text  # the reason, in words
    bad = logged_in.get("/worklist", params={"since": "yesterday-ish"})
    assert bad.status_code == 200 and "yesterday-ish" in bad.text  # the error names it


def test_review_form_records_the_reader_and_opens_the_next_case(
    logged_in: TestClient, worklist: Worklist
):
    first = worklist.ids["urgent-88"]
    page = logged_in.get(f"/worklist/{first}")
    assert page.status_code == 200 and "88 %" in page.text
    response = logged_in.post(
        f"/worklist/{first}/review",
        data={"decision": "agree", "csrf_token": csrf(page.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/worklist/{worklist.ids['urgent-97']}?saved={first}"
    # the next case confirms what the database holds
    confirmed = logged_in.get(response.headers["location"]).text
    assert f"Review saved: <strong>agree</strong> on case {first} by {USERNAME}" in confirmed
    with worklist.sessions() as session:
        entry = get_entry(session, first)
        assert (entry.review_decision, entry.reviewed_by) == (ReviewDecision.AGREE, USERNAME)
    assert first not in row_ids(logged_in.get("/worklist").text)
    assert first in row_ids(logged_in.get("/worklist", params={"reviewed": "all"}).text)


def test_review_form_without_the_csrf_token_is_refused(logged_in: TestClient, worklist):
    row = worklist.ids["urgent-97"]
    for token in ("", "forged-token"):
        response = logged_in.post(
            f"/worklist/{row}/review", data={"decision": "agree", "csrf_token": token}
        )
        assert response.status_code == 403
    with worklist.sessions() as session:
        assert get_entry(session, row).reviewed_at is None


def test_thumbnails_show_the_stored_overlay_or_the_plain_radiograph(logged_in, worklist):
    overlay = logged_in.get(f"/worklist/{worklist.ids['urgent-97']}/image.png")
    assert overlay.status_code == 200 and overlay.headers["content-type"] == "image/png"
    assert max(png_size(overlay.content)) == THUMBNAIL_SIDE
    full = logged_in.get(
        f"/worklist/{worklist.ids['urgent-97']}/image.png", params={"size": "full"}
    )
    assert THUMBNAIL_SIDE < max(png_size(full.content)) <= FULL_SIDE
    plain = logged_in.get(f"/worklist/{worklist.ids['routine-08']}/image.png")
    assert plain.status_code == 200 and max(png_size(plain.content)) == THUMBNAIL_SIDE
    none = logged_in.get(f"/worklist/{worklist.ids['queued']}/image.png")
    assert none.status_code == 404


def test_logout_ends_the_session(logged_in: TestClient):
    page = logged_in.get("/worklist")
    response = logged_in.post(
        "/logout", data={"csrf_token": csrf(page.text)}, follow_redirects=False
    )
    assert response.status_code == 303
    assert logged_in.get("/worklist", follow_redirects=False).status_code == 303


def test_unknown_case_is_404(logged_in: TestClient):
    assert logged_in.get("/worklist/987654").status_code == 404
    assert PASSWORD not in logged_in.get("/worklist").text
