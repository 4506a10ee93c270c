"""The review pages and the content check: the drift line (and its warning) in the worklist
header, the population flag and the content rejection explained on the case page."""

from __future__ import annotations

from fastapi.testclient import TestClient

from db.drift_counts import add_counts
from db.models import Status, utcnow
from db.worklist import Arrival, ScoreValues, admit
from model.card import SHIPPED_DIR, ModelCard
from model.drift import score_bin
from tests.support.web import Worklist
from tests.support.worklist import record_scored, record_unscored


def test_no_cases_yet_says_so(worklist: Worklist, logged_in: TestClient) -> None:
    page = logged_in.get("/worklist").text
    assert 'id="drift"' in page and "no scored case yet" in page
    assert "Drift warning" not in page


def test_an_urgent_share_outside_its_band_is_a_warning_on_the_page(
    worklist: Worklist, logged_in: TestClient
) -> None:
    version = ModelCard.load(SHIPPED_DIR).model_version
    with worklist.sessions.begin() as session:  # 200 cases today, every one URGENT
        add_counts(
            session,
            utcnow().date(),
            version,
            {("score", score_bin(0.99)): 200, ("priority", 0): 200, ("content", 0): 200},
        )
    page = logged_in.get("/worklist").text
    assert "200 cases vs validation" in page and "URGENT 100%" in page
    assert 'role="alert">Drift warning: URGENT share 100% over 200 cases' in page


def test_the_case_page_explains_the_population_flag_and_the_content_rejection(
    worklist: Worklist, logged_in: TestClient
) -> None:
    with worklist.sessions.begin() as session:
        adult, _ = admit(
            session, Arrival(file_sha256="a" * 64, source_name="adult.dcm", source_path="/x/a")
        )
        flags = ("age_outside_training_range", "outside_training_population")
        record_scored(
            session, adult, ScoreValues(0.7, "pneumonia", "urgent", 0, 0.4, "m", flags), "/a/adult"
        )
        brick, _ = admit(
            session, Arrival(file_sha256="b" * 64, source_name="brick.png", source_path="/x/b")
        )
        record_unscored(
            session, brick, Status.REJECTED, "not_chest_radiograph", "not a chest", "/q/b"
        )
        ids = adult.id, brick.id
    adult_page = logged_in.get(f"/worklist/{ids[0]}").text
    assert (
        'id="outside-population"' in adult_page and "Outside the training population" in adult_page
    )
    brick_page = logged_in.get(f"/worklist/{ids[1]}").text
    # the reason in words where the film would be and on the Status line, from the one table
    # of reasons (ingest.errors), not a third time from a sentence of the page's own
    assert brick_page.count("does not look like a frontal chest radiograph") == 2
    assert 'id="outside-population"' not in brick_page
