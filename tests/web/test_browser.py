"""A reader in a real browser: Debian's headless Chromium (``apt-get install chromium``)
driven by Playwright (never Playwright's own browser downloads), the page served by uvicorn
on a free localhost port over a real database (tests/support/browser.py).

What a radiologist does with the page: log in, read the list in order, see a new case
arrive and an URGENT one announced while the page stays open, page to entry 5,000, read a
film (heatmap layer on and off, window/level), review from the keyboard, and do it on a
phone. axe-core (npm, ``.ci/run`` installs it) checks every page for serious and critical
violations. Screenshots at desktop and phone size go to ``$CXR_ARTEFACTS`` (default
``var/artefacts``); ``CXR_UPDATE_SCREENSHOTS=1`` also refreshes the README's.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from db.models import ReviewDecision
from db.worklist import get_entry, review_history
from tests.support import browser
from tests.support.web import (
    PASSWORD,
    READING_ORDER,
    USERNAME,
    Worklist,
    add_dicom_case,
    add_many,
)
from web.app import create_app

DOCS = Path(__file__).resolve().parents[2] / "docs"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not browser.CHROMIUM.is_file(),
        reason="/usr/bin/chromium is missing: apt-get install -y chromium (Debian's package)",
    ),
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


@pytest.fixture
def served(worklist: Worklist) -> Iterator[str]:
    with browser.serve(create_app(worklist.config())) as base:
        yield base


@pytest.fixture
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = browser.launch(playwright)
        try:
            yield launched
        finally:
            launched.close()


def _new_page(chromium: Any, **options: Any) -> Any:
    """A page whose script errors are collected in ``page.errors`` (none are expected)."""
    page = chromium.new_page(**({"viewport": browser.DESKTOP} | options))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    return page


def _page(chromium: Any, base: str, **options: Any) -> Any:
    page = _new_page(chromium, **options)
    browser.log_in(page, base, USERNAME, PASSWORD)
    return page


def _no_axe_violations(page: Any, what: str) -> None:
    found = browser.axe_violations(page)
    assert not found, f"axe-core on {what}:\n{browser.describe(found)}"


def test_reader_logs_in_reads_in_order_and_records_a_review(
    served: str, worklist: Worklist, chromium: Any
):
    from playwright.sync_api import expect

    page = _new_page(chromium)
    page.goto(f"{served}/worklist")
    expect(page).to_have_url(f"{served}/login")
    _no_axe_violations(page, "the login page")
    browser.log_in(page, served, USERNAME, PASSWORD)

    rows = page.locator("table.worklist tbody tr.row")
    expect(rows.first).to_be_visible()
    ids = [int(value) for value in rows.evaluate_all("rs => rs.map(r => r.dataset.id)")]
    assert ids == [worklist.ids[name] for name in READING_ORDER]
    expect(rows.first.locator(".badge")).to_have_text("urgent")
    # the row id `cxr-triage review ID` takes is on the row, and is its one link
    expect(rows.first.locator("a.open")).to_have_text(f"Case {ids[0]}")
    assert rows.first.locator("a").count() == 1
    page.wait_for_function(
        "() => [...document.querySelectorAll('.thumb img')].slice(0, 5)"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    _no_axe_violations(page, "the worklist")

    first = worklist.ids[READING_ORDER[0]]
    rows.first.locator("a.open").click()
    expect(page).to_have_url(f"{served}/worklist/{first}")
    expect(page.locator("dd.probability")).to_contain_text("88 %")
    expect(page.locator("dd.reviewed")).to_have_text("not yet reviewed")
    page.get_by_role("button", name="Disagree").click()
    # the next case to read opens and says the review was saved
    following = worklist.ids[READING_ORDER[1]]
    expect(page).to_have_url(f"{served}/worklist/{following}?saved={first}")
    expect(page.locator("#saved")).to_contain_text(f"disagree on case {first}")

    page.goto(f"{served}/worklist")
    remaining = page.locator("table.worklist tbody tr.row")
    expect(remaining.first).to_have_attribute("data-id", str(following))
    # reviewed rows stay reachable
    page.goto(f"{served}/worklist?reviewed=all")
    expect(page.locator(f'tr[data-id="{first}"] td.review')).to_contain_text("disagree")
    assert not page.errors
    with worklist.sessions() as session:
        entry = get_entry(session, first)
        assert entry.review_decision is ReviewDecision.DISAGREE
        assert entry.reviewed_by == USERNAME


def test_an_open_worklist_shows_new_cases_and_announces_an_urgent_one(
    served: str, worklist: Worklist, chromium: Any
):
    from playwright.sync_api import expect

    page = _page(chromium, served)
    page.get_by_label("Sound for a new URGENT case").check()  # off by default
    page.wait_for_function("() => window.cxrWorklist.state().beeps === 1")  # the test tone
    page.evaluate("() => { window.notReloaded = true; }")
    urgent_before = int(page.locator("#count-urgent").inner_text())
    expect(page.locator("#urgent-alert")).to_be_hidden()

    routine = add_dicom_case(worklist, "late-routine", 0.05, "routine", source_index=2)
    expect(page.locator(f'tr[data-id="{routine}"]')).to_be_visible(timeout=10_000)
    expect(page.locator("#urgent-alert")).to_be_hidden()  # no alarm for a routine case

    urgent = add_dicom_case(worklist, "late-urgent", 0.93, "urgent", age="002Y", sex="M")
    row = page.locator(f'tr[data-id="{urgent}"]')
    expect(row).to_be_visible(timeout=10_000)
    expect(page.locator("#urgent-alert")).to_be_visible()
    expect(page.locator("#urgent-alert")).to_contain_text(f"case {urgent}")
    expect(page.locator("#count-urgent")).to_have_text(str(urgent_before + 1))
    expect(row.locator("td.patient")).to_contain_text("2 y")
    expect(row.locator("td.study")).to_contain_text("XR CHEST PA")
    assert page.evaluate("() => window.cxrWorklist.state().beeps") == 2
    assert page.evaluate("() => window.notReloaded === true"), "the page reloaded"
    assert page.title().startswith(f"({urgent_before + 1} urgent)")
    # the new urgent case is placed by the reading order: after the older urgent ones
    positions = page.locator("tr.row").evaluate_all("rs => rs.map(r => r.dataset.id)")
    assert positions.index(str(urgent)) == urgent_before
    _no_axe_violations(page, "the worklist with the URGENT alert")
    page.locator("#urgent-alert a.open").click()
    page.wait_for_url(f"{served}/worklist/{urgent}")
    assert not page.errors


def test_paging_reaches_entry_5000(served: str, worklist: Worklist, chromium: Any):
    from playwright.sync_api import expect

    add_many(worklist, 5_100)
    page = _page(chromium, served)
    expect(page.locator("#paging-words")).to_contain_text("Entries 1–100 of 5,106")
    page.locator("#go-to").fill("5000")
    page.locator("#go-to").press("Enter")
    page.wait_for_url("**offset=4900**#pos-5000")
    target = page.locator('tr[data-position="5000"]')
    expect(target).to_be_visible()
    expect(target).to_have_class("row priority-routine selected")
    expect(page.locator("#paging-words")).to_contain_text("Entries 4,901–5,000 of 5,106")
    page.get_by_role("link", name="last »").click()
    expect(page.locator("#paging-words")).to_contain_text("Entries 5,101–5,106 of 5,106")
    # one tier at a time, its entries at their places in the whole list
    page.goto(f"{served}/worklist?tier=urgent&offset=1600")
    positions = page.locator("tr.row").evaluate_all("rs => rs.map(r => +r.dataset.position)")
    assert positions and all(p <= 1702 for p in positions)
    tiers = page.locator("tr.row").evaluate_all("rs => rs.map(r => r.dataset.tier)")
    assert set(tiers) == {"urgent"}
    # more than a page asked for: a page, said in words, never a refusal
    page.goto(f"{served}/worklist?limit=1000")
    expect(page.locator(".notice")).to_contain_text("at most 500")
    assert page.locator("tr.row").count() == 500
    _no_axe_violations(page, "a deep worklist page")


def test_the_viewer_draws_the_film_with_a_heatmap_layer_and_window_level(
    served: str, worklist: Worklist, chromium: Any
):
    from playwright.sync_api import expect

    case = add_dicom_case(worklist, "viewer", 0.97, "urgent", age="003Y")
    page = _page(chromium, served)
    page.goto(f"{served}/worklist/{case}")
    page.wait_for_function("() => window.cxrViewer && window.cxrViewer.state().heatLoaded")
    canvas = page.locator("canvas.film-canvas")
    expect(canvas).to_be_visible()
    box = canvas.bounding_box()
    assert page.evaluate("() => window.cxrViewer.state().heatOn") is True
    # the synthetic heatmap's hot spot: 30 % across, 65 % down the film
    x, y = _film_point(page, 0.3, 0.65)
    with_heat = page.evaluate(f"() => window.cxrViewer.pixel({x}, {y})")
    assert with_heat[1] > with_heat[2] or with_heat[0] != with_heat[1], "no colour at the spot"
    page.keyboard.press("h")
    page.wait_for_function("() => !window.cxrViewer.state().heatOn")
    page.wait_for_timeout(100)
    plain = page.evaluate(f"() => window.cxrViewer.pixel({x}, {y})")
    assert plain[0] == plain[1] == plain[2], "the plain film is grey"
    assert plain != with_heat
    page.get_by_label("Heatmap").check()
    page.wait_for_function("() => window.cxrViewer.state().heatOn")

    # window/level: the header's window (key 2) loads the stored values at full resolution
    page.keyboard.press("2")
    page.wait_for_function("() => window.cxrViewer.state().film === 'ready'")
    page.wait_for_function("() => window.cxrViewer.state().window !== null")
    expect(page.locator("#wl-readout")).to_contain_text("modality units")
    before = page.evaluate("() => window.cxrViewer.state().window")
    page.get_by_label("Heatmap").uncheck()
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    level_before = page.evaluate(f"() => window.cxrViewer.pixel({x}, {y})")
    page.mouse.move(*centre)
    page.mouse.down()
    page.mouse.move(centre[0] - 150, centre[1] + 60, steps=6)
    page.mouse.up()
    page.wait_for_timeout(150)
    after = page.evaluate("() => window.cxrViewer.state().window")
    assert after["high"] - after["low"] < before["high"] - before["low"], "narrower window"
    level_after = page.evaluate(f"() => window.cxrViewer.pixel({x}, {y})")
    assert level_after != level_before
    expect(page.locator("#wl-preset")).to_have_value("custom")
    page.keyboard.press("1")  # back to what the model saw
    page.wait_for_function("() => window.cxrViewer.state().window === null")
    page.keyboard.press("+")
    page.keyboard.press("+")
    assert page.evaluate("() => window.cxrViewer.state().scale") > 1.5 * _fit_scale(page)
    page.keyboard.press("0")
    _no_axe_violations(page, "the case page")
    assert not page.errors


def _film_point(page: Any, fx: float, fy: float) -> tuple[float, float]:
    """Canvas pixel (device pixels) of the point at fractions (fx, fy) of the film."""
    return page.evaluate(
        f"""() => {{
            const c = document.querySelector('canvas.film-canvas');
            const img = document.getElementById('film');
            const s = window.cxrViewer.state();
            const dpr = window.devicePixelRatio || 1;
            const w = img.naturalWidth * s.scale, h = img.naturalHeight * s.scale;
            const left = (c.clientWidth - w) / 2, top = (c.clientHeight - h) / 2;
            return [dpr * (left + {fx} * w), dpr * (top + {fy} * h)];
        }}"""
    )


def _fit_scale(page: Any) -> float:
    return page.evaluate(
        """() => {
            const c = document.querySelector('canvas.film-canvas');
            const img = document.getElementById('film');
            return Math.min(c.clientWidth / img.naturalWidth, c.clientHeight / img.naturalHeight);
        }"""
    )


def test_a_reading_flow_on_the_keyboard(served: str, worklist: Worklist, chromium: Any):
    from playwright.sync_api import expect

    page = _page(chromium, served)
    order = [worklist.ids[name] for name in READING_ORDER]
    # the skip link is the first stop and lands on the content
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    # j selects rows, Enter opens the selected one
    page.keyboard.press("j")
    page.keyboard.press("j")
    expect(page.locator(f'tr[data-id="{order[1]}"]')).to_have_class("row priority-urgent selected")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{served}/worklist/{order[1]}")
    page.keyboard.press("n")
    page.wait_for_url(f"{served}/worklist/{order[2]}")
    page.keyboard.press("p")
    page.wait_for_url(f"{served}/worklist/{order[1]}")
    page.keyboard.press("p")
    page.wait_for_url(f"{served}/worklist/{order[0]}")
    # a key in the note is text, not a decision
    page.locator("#note").fill("")
    page.locator("#note").press("a")
    expect(page.locator("#note")).to_have_value("a")
    page.locator("#note").fill("")
    page.locator("h1").click()
    page.keyboard.press("a")  # agree, saved at once; the next case to read opens
    page.wait_for_url(f"{served}/worklist/{order[1]}?saved={order[0]}")
    expect(page.locator("#saved")).to_contain_text(f"agree on case {order[0]}")
    page.keyboard.press("d")
    page.wait_for_url(f"{served}/worklist/{order[2]}?saved={order[1]}")
    page.keyboard.press("s")
    page.wait_for_url(f"{served}/worklist/{order[3]}?saved={order[2]}")
    expect(page.locator("#saved")).to_contain_text("acknowledged")
    page.keyboard.press("u")
    page.wait_for_url(f"{served}/worklist")
    with worklist.sessions() as session:
        decisions = [review_history(session, row)[-1].decision for row in order[:3]]
    assert decisions == [
        ReviewDecision.AGREE,
        ReviewDecision.DISAGREE,
        ReviewDecision.ACKNOWLEDGED,
    ]
    assert not page.errors


def test_on_a_phone_the_film_fills_the_width_and_the_list_fits(
    served: str, worklist: Worklist, chromium: Any
):
    from playwright.sync_api import expect

    case = add_dicom_case(worklist, "phone", 0.91, "urgent", age="004Y", sex="F")
    folder = browser.artefacts()
    desktop = _page(chromium, served)
    desktop.wait_for_function(
        "() => [...document.querySelectorAll('.thumb img')].every(i => i.complete)"
    )
    desktop.screenshot(path=str(folder / "worklist-desktop.png"), full_page=True)
    desktop.goto(f"{served}/worklist/{case}")
    desktop.wait_for_function("() => window.cxrViewer && window.cxrViewer.state().heatLoaded")
    desktop.screenshot(path=str(folder / "case-desktop.png"))

    phone = _page(
        chromium,
        served,
        viewport=browser.PHONE,
        device_scale_factor=3,
        is_mobile=True,
        has_touch=True,
    )
    width = browser.PHONE["width"]
    assert phone.evaluate("() => document.documentElement.scrollWidth") <= width
    banner = phone.locator("header.top").bounding_box()
    assert banner["height"] < 60
    expect(phone.locator("header.top")).to_contain_text("NOT FOR DIAGNOSTIC USE")
    card = phone.locator("tr.row").first.bounding_box()
    assert card["x"] >= 0 and card["x"] + card["width"] <= width
    _no_axe_violations(phone, "the worklist on a phone")
    phone.screenshot(path=str(folder / "worklist-phone.png"), full_page=True)

    phone.goto(f"{served}/worklist/{case}")
    phone.wait_for_function("() => window.cxrViewer && window.cxrViewer.state().heatLoaded")
    film = phone.locator("canvas.film-canvas").bounding_box()
    assert film["width"] >= width - 24, film
    assert film["height"] >= 0.8 * film["width"], film
    assert film["y"] < 844, "the film starts on the first screen"
    assert phone.evaluate("() => document.documentElement.scrollWidth") <= width
    _no_axe_violations(phone, "the case page on a phone")
    phone.screenshot(path=str(folder / "case-phone.png"))
    for name in ("worklist-desktop", "case-desktop", "worklist-phone", "case-phone"):
        assert (folder / f"{name}.png").stat().st_size > 10_000, name
    if os.environ.get("CXR_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(folder / "worklist-desktop.png", DOCS / "review-page.png")
        shutil.copyfile(folder / "case-desktop.png", DOCS / "review-case.png")
    assert not desktop.errors and not phone.errors


def test_axe_finds_nothing_serious_on_the_remaining_pages(
    served: str, worklist: Worklist, chromium: Any
):
    page = _page(chromium, served)
    for url in (
        "/worklist?tier=apart",
        "/worklist?tier=suspect&reviewed=all",
        "/worklist?since=not-a-date",  # the error shown above the list
        f"/worklist/{worklist.ids['rejected']}",  # no film: why, in words
        f"/worklist/{worklist.ids['queued']}",
        f"/worklist/{worklist.ids['routine-low']}",  # no heatmap stored
    ):
        page.goto(f"{served}{url}")
        page.wait_for_load_state("load")
        _no_axe_violations(page, url)
    assert not page.errors


def test_the_accessibility_check_can_fail(chromium: Any, database_url: str):
    """The axe-core check finds what it should: grey on grey, an image without a name."""
    page = _new_page(chromium)
    page.set_content(
        '<html lang="en"><body><main><p style="color:#777;background:#888">faint</p>'
        '<input type="text"></main></body></html>'
    )
    found = {violation["id"] for violation in browser.axe_violations(page)}
    assert {"color-contrast", "label"} <= found
