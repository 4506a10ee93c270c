"""Each row's SR/SC state is shown where operators look: the API, the review page, the CLI.

A real worklist database (SQLite and PostgreSQL) with tracked result objects in each state;
an error text holding markup is shown as text, never as markup.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from db.models import ResultKind, utcnow
from db.results import (
    WrittenObject,
    mark_attempt,
    mark_stored,
    record_unpublishable,
    record_written,
)
from tests.processes import cli, cli_json, service_env
from tests.support.web import PASSWORD, USERNAME, Worklist

HOSTILE = "PACS said <script>alert(1)</script>"


def track(worklist: Worklist) -> dict[str, int]:
    """urgent-97: stored; suspect-31: pending after 3 attempts; routine-08: failed."""
    ids = {name: worklist.ids[name] for name in ("urgent-97", "suspect-31", "routine-08")}
    now = utcnow()
    with worklist.sessions.begin() as session:
        for name, entry_id in ids.items():
            objects = [
                WrittenObject(kind, f"2.25.{entry_id}{index}", f"/outbox/{name}-{kind.value}.dcm")
                for index, kind in enumerate((ResultKind.SR, ResultKind.SC))  # the PACS pair
            ]
            record_written(session, entry_id, objects, now)
        session.flush()
        from db.results import objects_of

        found = objects_of(session, ids.values())
        mark_stored(session, [o.id for o in found[ids["urgent-97"]]], now)
        for obj in found[ids["suspect-31"]]:
            for _ in range(3):
                mark_attempt(session, obj.id, now, HOSTILE, now + timedelta(seconds=60))
        record_unpublishable(
            session,
            ids["routine-08"],
            "source_unreferenceable",
            "the source's (0020,000D) StudyInstanceUID is not a valid UID",
            now,
        )
    return ids


def test_the_api_gives_each_rows_results_and_their_states(client, worklist):
    ids = track(worklist)
    body = client.get("/api/worklist", auth=(USERNAME, PASSWORD)).json()
    rows = {row["id"]: row for row in body["rows"] + body["apart"]}
    assert rows[ids["urgent-97"]]["results"] == "stored"
    assert rows[ids["suspect-31"]]["results"] == "pending (3 attempts)"
    assert rows[ids["routine-08"]]["results"] == "failed: source_unreferenceable"
    assert rows[worklist.ids["rejected"]]["results"] == ""  # nothing to send for it
    pending = rows[ids["suspect-31"]]["result_objects"]
    assert [(o["kind"], o["state"], o["attempts"]) for o in pending] == [
        ("sr", "pending", 3),
        ("sc", "pending", 3),
    ]
    assert pending[0]["last_error"] == HOSTILE
    one = client.get(f"/api/worklist/{ids['routine-08']}", auth=(USERNAME, PASSWORD)).json()
    assert one["result_objects"][0]["reason"] == "source_unreferenceable"
    assert "(0020,000D)" in one["result_objects"][0]["last_error"]


def test_the_pages_show_results_and_escape_error_text(logged_in, worklist):
    ids = track(worklist)
    listing = logged_in.get("/worklist").text
    assert "PACS: failed: source_unreferenceable" in listing
    assert "PACS: pending (3 attempts)" in listing
    case = logged_in.get(f"/worklist/{ids['suspect-31']}").text
    assert "SR pending" in case and "SC pending" in case
    assert "<script>alert(1)</script>" not in case
    assert "&lt;script&gt;" in case
    failed = logged_in.get(f"/worklist/{ids['routine-08']}").text
    assert "SR failed (source_unreferenceable)" in failed
    assert "(0020,000D) StudyInstanceUID is not a valid UID" in failed


def test_the_cli_worklist_shows_results_in_every_format(worklist, tmp_path):
    ids = track(worklist)
    env = service_env(tmp_path, worklist.url, None, COLUMNS="250")
    rows = {row["id"]: row for row in cli_json(["worklist", "--json"], env)}
    assert rows[ids["routine-08"]]["results"] == "failed: source_unreferenceable"
    assert rows[ids["urgent-97"]]["results"] == "stored"
    table = cli(["worklist"], env).stdout
    assert "PACS results" in table and "failed: source_unreferenceable" in table
    status = cli_json(["status", "--json"], env)
    assert status["results"] == {"pending": 2, "stored": 2, "failed": 2}
    parsed = list(csv.DictReader(io.StringIO(cli(["worklist", "--csv"], env).stdout)))
    assert {row["results"] for row in parsed} >= {"stored", "pending (3 attempts)"}
