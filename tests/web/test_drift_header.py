"""The worklist page's header carries the drift watch's line and, when due, its warning."""

from __future__ import annotations

from fastapi.testclient import TestClient

from db.drift import add_counts
from db.models import utcnow
from model.card import SHIPPED_DIR, ModelCard
from model.drift import score_bin
from tests.web.conftest import Worklist


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
