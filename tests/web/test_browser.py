"""A reader in a real browser: log in, see the rows in reading order, open one, review it.

Headless Chromium from Debian's package (``apt-get install chromium``) driven by Playwright;
Playwright's own browser downloads are never used. The page is served by uvicorn on a free
localhost port over a real database. A screenshot of the worklist is saved in the test's
folder, and to ``docs/review-page.png`` when ``CXR_UPDATE_SCREENSHOTS=1`` (the README's).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from db.models import ReviewDecision
from db.worklist import get_entry
from tests.support import free_port
from tests.support.web import PASSWORD, READING_ORDER, USERNAME, Worklist
from web.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "review-page.png"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.is_file(),
        reason="/usr/bin/chromium is missing: apt-get install -y chromium (Debian's package)",
    ),
]


@pytest.fixture
def served(worklist: Worklist) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(worklist.config()), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_reader_logs_in_reads_in_order_and_records_a_review(
    served: str, worklist: Worklist, tmp_path: Path
):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(f"{served}/worklist")
            expect(page).to_have_url(f"{served}/login")
            page.get_by_label("User name").fill(USERNAME)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page).to_have_url(f"{served}/worklist")

            rows = page.locator("table.worklist tbody tr.row")
            expect(rows.first).to_be_visible()
            ids = [int(value) for value in rows.evaluate_all("rs => rs.map(r => r.dataset.id)")]
            assert ids[:5] == [worklist.ids[name] for name in READING_ORDER]
            expect(rows.first.locator(".badge")).to_have_text("urgent")
            page.wait_for_function(
                "() => [...document.querySelectorAll('.thumb img')].slice(0, 5)"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            screenshot = tmp_path / "review-page.png"
            page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.stat().st_size > 10_000

            first = worklist.ids[READING_ORDER[0]]
            rows.first.locator("a.badge").click()
            expect(page).to_have_url(f"{served}/worklist/{first}")
            expect(page.locator("dd.probability")).to_contain_text("97 %")
            expect(page.locator("dd.reviewed")).to_have_text("not yet reviewed")
            page.get_by_role("button", name="Disagree").click()
            # The next case to read opens.
            expect(page).to_have_url(f"{served}/worklist/{worklist.ids[READING_ORDER[1]]}")

            page.goto(f"{served}/worklist")
            remaining = page.locator("table.worklist tbody tr.row")
            expect(remaining.first).to_have_attribute(
                "data-id", str(worklist.ids[READING_ORDER[1]])
            )
        finally:
            browser.close()

    with worklist.sessions() as session:
        entry = get_entry(session, first)
        assert entry.review_decision is ReviewDecision.DISAGREE
        assert entry.reviewed_by == USERNAME
        assert entry.reviewed_at is not None
    if os.environ.get("CXR_UPDATE_SCREENSHOTS") == "1":
        README_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(screenshot, README_SCREENSHOT)
