"""The JSON API against a real worklist database: auth, reading order, filters, review."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from db.models import ReviewDecision
from db.worklist import get_entry
from tests.support.web import PASSWORD, READING_ORDER, USERNAME, Worklist
from web.auth import CSRF_HEADER

BASIC = (USERNAME, PASSWORD)


def test_every_api_route_needs_credentials(client: TestClient, worklist: Worklist):
    row = worklist.ids["urgent-97"]
    for method, url in (
        ("GET", "/api/worklist"),
        ("GET", f"/api/worklist/{row}"),
        ("POST", f"/api/worklist/{row}/review"),
    ):
        response = client.request(method, url, json={"decision": "agree"})
        assert response.status_code == 401, url
        assert response.headers["www-authenticate"].startswith("Basic")
    assert client.get("/api/worklist", auth=(USERNAME, "wrong password")).status_code == 401
    assert client.get("/api/worklist", auth=("someone", PASSWORD)).status_code == 401
    with worklist.sessions() as session:
        assert get_entry(session, row).reviewed_at is None


def test_worklist_is_the_reading_list_with_files_not_read_listed_apart(client, worklist):
    response = client.get("/api/worklist", auth=BASIC)
    assert response.status_code == 200
    body = response.json()
    rows = body["rows"]
    assert [row["id"] for row in rows] == [worklist.ids[name] for name in READING_ORDER]
    assert [row["position"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert [row["tier"] for row in rows] == ["urgent"] * 2 + ["suspect"] * 2 + ["routine"] * 2
    assert all(row["entry_id"] == row["id"] and row["role"] == "leading" for row in rows)
    assert [row["id"] for row in body["apart"]] == [worklist.ids["rejected"]]
    assert body["apart"][0]["tier"] == "apart" and body["apart"][0]["position"] is None
    assert (body["total"], body["apart_total"], body["offset"]) == (6, 1, 0)
    first = rows[0]
    assert first["priority"] == "urgent" and first["probability"] == 0.88
    assert first["label"] == "pneumonia" and first["model_version"] == "sepcnn-test-1.0"
    assert first["image_url"] == f"/worklist/{first['id']}/image.png"
    assert rows[2]["flags"] == ["age_outside_training_range", "eligibility_unverified"]


def test_filters_narrow_the_list(client, worklist):
    rejected = client.get("/api/worklist", params={"status": "rejected"}, auth=BASIC).json()
    assert rejected["rows"] == []
    assert [row["id"] for row in rejected["apart"]] == [worklist.ids["rejected"]]
    assert rejected["apart"][0]["reason"] == "lateral_view"
    one = client.get("/api/worklist", params={"accession_number": "ACC-002"}, auth=BASIC).json()
    assert [row["id"] for row in one["rows"]] == [worklist.ids["suspect-31"]]
    limited = client.get("/api/worklist", params={"limit": 2}, auth=BASIC).json()
    assert len(limited["rows"]) == 2 and limited["total"] == 6
    paged = client.get("/api/worklist", params={"limit": 2, "offset": 2}, auth=BASIC).json()
    assert [row["position"] for row in paged["rows"]] == [3, 4]
    assert paged["apart"] == [] and paged["apart_total"] == 1
    too_deep = client.get("/api/worklist", params={"offset": -1}, auth=BASIC)
    assert too_deep.status_code == 422
    bad = client.get("/api/worklist", params={"status": "bogus"}, auth=BASIC)
    assert bad.status_code == 422 and "bogus" in bad.text


def test_review_writes_the_row_and_leaves_it_on_the_worklist(client, worklist):
    row = worklist.ids["suspect-31"]
    response = client.post(f"/api/worklist/{row}/review", json={"decision": "disagree"}, auth=BASIC)
    assert response.status_code == 200
    assert response.json()["review_decision"] == "disagree"
    with worklist.sessions() as session:
        entry = get_entry(session, row)
        assert entry.review_decision is ReviewDecision.DISAGREE
        assert entry.reviewed_by == USERNAME
        assert entry.reviewed_at is not None
    to_read = client.get("/api/worklist", auth=BASIC).json()["rows"]
    assert row not in [r["id"] for r in to_read]
    everything = client.get("/api/worklist", params={"reviewed": "all"}, auth=BASIC).json()
    assert row in [r["id"] for r in everything["rows"]]


def test_review_of_an_unknown_row_or_decision_is_refused(client, worklist):
    assert (
        client.post("/api/worklist/999999/review", json={"decision": "agree"}, auth=BASIC)
    ).status_code == 404
    row = worklist.ids["urgent-88"]
    response = client.post(f"/api/worklist/{row}/review", json={"decision": "maybe"}, auth=BASIC)
    assert response.status_code == 422
    with worklist.sessions() as session:
        assert get_entry(session, row).review_decision is None


def test_a_form_post_cannot_review_through_the_api(client, worklist):
    """A cross-site HTML form can only send form data: the API takes JSON only."""
    row = worklist.ids["urgent-88"]
    response = client.post(f"/api/worklist/{row}/review", data={"decision": "agree"}, auth=BASIC)
    assert response.status_code == 422


def test_session_writes_need_the_csrf_header(logged_in: TestClient, worklist):
    row = worklist.ids["urgent-88"]
    assert logged_in.get(f"/api/worklist/{row}").status_code == 200  # reads need no token
    refused = logged_in.post(f"/api/worklist/{row}/review", json={"decision": "agree"})
    assert refused.status_code == 403
    page = logged_in.get(f"/worklist/{row}").text
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    accepted = logged_in.post(
        f"/api/worklist/{row}/review", json={"decision": "agree"}, headers={CSRF_HEADER: token}
    )
    assert accepted.status_code == 200
    with worklist.sessions() as session:
        assert get_entry(session, row).review_decision is ReviewDecision.AGREE


def test_health_check_needs_no_login_and_shows_no_rows(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_the_api_and_the_cli_show_a_row_with_the_same_fields(
    client: TestClient, worklist: Worklist, tmp_path: Path
):
    """One row schema (db.schema.WorklistRow): ``cxr-triage worklist --json`` prints what
    ``GET /api/worklist`` answers, but the page links, which only the page can resolve, and
    the file names, which the API keeps to itself (they may carry a patient's name)."""
    body = client.get("/api/worklist", params={"reviewed": "all"}, auth=BASIC).json()
    api = body["rows"] + body["apart"]  # the CLI prints the reading list, then the list apart
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    printed = subprocess.run(
        [sys.executable, "-m", "worker.cli", "worklist", "--json", "--include-reviewed"],
        env={**clean, "CXR_DATA_DIR": str(tmp_path), "CXR_DATABASE_URL": worklist.url},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = json.loads(printed.stdout)
    assert len(rows) == len(api) == len(worklist.ids)
    for row in api:
        assert row.pop("image_url") == f"/worklist/{row['id']}/image.png"
        assert row.pop("page_url") == f"/worklist/{row['id']}"
    for row in rows:
        assert row.pop("source_name") and "archived_path" in row
        row.pop("archived_path")
    assert rows == api


def test_the_api_never_shows_file_names_or_server_paths(client: TestClient, worklist: Worklist):
    """Senders name files after patients; the API row carries no name or path of a file."""
    body = client.get("/api/worklist", params={"reviewed": "all"}, auth=BASIC).json()
    rows = body["rows"] + body["apart"]
    one = client.get(f"/api/worklist/{rows[0]['id']}", auth=BASIC).json()
    for row in (*rows, one):
        assert not {"source_name", "archived_path", "source_path"} & row.keys()
        files = [
            value
            for key, value in row.items()
            if key != "image_url"
            and isinstance(value, str)
            and value.endswith((".dcm", ".jpg", ".jpeg", ".png"))
        ]
        assert not files, files
