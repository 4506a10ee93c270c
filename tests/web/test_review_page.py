"""The review page without a browser (issue 22): what each row says, paging and filters,
the live version, the images (thumbnail, film, stored values, heatmap layer) with their
caching, the PACS link, and hostile inputs to each. SQLite and PostgreSQL."""

from __future__ import annotations

import io
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from db.models import ReviewDecision, Status, WorklistEntry
from db.reading import TO_READ, entry_position, reading_list
from db.worklist import Arrival, ScoreValues, admit, get_entry, review
from ingest.readers import read_header, read_image
from tests.support import browser
from tests.support.web import (
    PASSWORD,
    READING_ORDER,
    USERNAME,
    Worklist,
    add_dicom_case,
    add_many,
)
from tests.support.worklist import record_scored, record_unscored
from tests.web.test_pages import csrf, row_ids
from web import present
from web.app import create_app
from web.config import WebConfig, WebConfigError
from web.films import decode_film, display_side
from web.pacs_link import PacsLinkError, check_template, pacs_link

# -- words and numbers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probability", "cutoffs", "said"),
    [
        (0.9999, (), ">99 %"),
        (0.995, (), ">99 %"),
        (0.99, (), "99 %"),
        (0.004, (), "<1 %"),
        (0.01, (), "1 %"),
        (0.88, (), "88 %"),
        (0.067, (0.4, 0.0656), "6.7 %"),  # near the SUSPECT cut-off: one more digit
        (0.065, (0.4, 0.0656), "6.5 %"),
        (0.0657, (0.4, 0.0656), "6.57 %"),  # still the same at one digit: two
        (0.9996, (0.9995,), "99.96 %"),  # a cut-off at the end beats the end's words
        (None, (), ""),
    ],
)
def test_probabilities_are_honest_at_the_ends_and_precise_at_the_cutoffs(
    probability, cutoffs, said
):
    assert present.probability_text(probability, cutoffs) == said


def test_suspect_and_routine_either_side_of_the_cutoff_never_read_alike():
    cut = 0.06558177457952499  # the shipped model's SUSPECT cut-off
    suspect, routine = cut + 0.0012, cut - 0.0008
    assert present.probability_text(suspect, [cut]) != present.probability_text(routine, [cut])
    assert present.cutoff_text(cut) == "6.6 %"


@pytest.mark.parametrize(
    ("years", "said"),
    [(None, ""), (0.02, "7 d"), (0.5, "6 mo"), (1.5, "18 mo"), (3.0, "3 y"), (4.99, "4 y")],
)
def test_ages_as_a_pediatric_reader_says_them(years, said):
    assert present.age_text(years) == said


def test_waiting_times():
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    said = [
        present.waiting_text(now - delta, now)
        for delta in (
            timedelta(seconds=5),
            timedelta(minutes=12),
            timedelta(hours=3, minutes=5),
            timedelta(days=2, hours=4),
        )
    ]
    assert said == ["5 s", "12 min", "3 h 05 min", "2 d 4 h"]
    assert present.waiting_text(now + timedelta(seconds=3), now) == "0 s"  # clock skew


# -- the worklist page ------------------------------------------------------------------------


def _row_html(html: str, row_id: int) -> str:
    match = re.search(rf'<tr class="[^"]*" data-id="{row_id}".*?</tr>', html, re.S)
    assert match, f"row {row_id} not on the page"
    return match.group(0)


def test_each_row_says_why_it_is_where_it_is(logged_in: TestClient, worklist: Worklist):
    case = add_dicom_case(worklist, "legible", 0.97, "urgent", age="018M", sex="M", view="AP")
    html = logged_in.get("/worklist").text
    row = _row_html(html, case)
    assert "18 mo" in row and 'title="male">M</abbr>' in row
    assert "AP" in row and "XR CHEST PA" in row
    assert f">Case {case}</a>" in row and 'class="badge urgent">urgent<' in row
    assert 'class="p urgent"' in row and "97 %" in row
    assert re.search(r'class="waiting"[^>]* data-received="[^"]+"', row)
    # the cut-offs the rows were scored with, stated once above the list
    assert "URGENT at P ≥ 40 %; SUSPECT at 10 % or more; ROUTINE below" in html
    # SUSPECT never says "normal" nor draws a routine-coloured bar
    suspect = _row_html(html, worklist.ids["suspect-31"])
    assert "normal" not in suspect and 'class="p suspect"' in suspect
    # unscored rows say why, in words
    assert "Waiting to be scored" in _row_html(html, worklist.ids["queued"])
    apart = logged_in.get("/worklist", params={"tier": "apart"}).text
    assert "a lateral view" in _row_html(apart, worklist.ids["rejected"])
    # per-tier counts at the top
    assert re.search(r'id="count-urgent">3<', html) and re.search(r'id="count-apart">1<', html)


def test_a_row_scored_before_the_suspect_cutoff_was_stored_takes_the_cards(
    logged_in: TestClient, worklist: Worklist
):
    """Rows from before migration 0011 have no ``suspect_threshold``: the loaded model card
    supplies it when the row names the card's model version and URGENT cut-off."""
    card = logged_in.app.state.card
    assert card is not None
    with worklist.sessions.begin() as session:
        row = session.get(WorklistEntry, worklist.ids["routine-08"])
        row.suspect_threshold = None
        row.model_version = card.model_version
        row.threshold = card.operating_point.threshold
    html = logged_in.get(f"/worklist/{worklist.ids['routine-08']}").text
    expected = present.cutoff_text(card.operating_point.suspect_threshold)
    assert f"SUSPECT at {expected} or more" in html


def test_every_reason_a_row_is_unscored_reads_in_words_on_its_page(
    logged_in: TestClient, worklist: Worklist
):
    with worklist.sessions.begin() as session:
        ids = {}
        for n, (status, reason) in enumerate(
            [
                (Status.FAILED, "processing_error"),
                (Status.REJECTED, "truncated"),
                (Status.REJECTED, "a_reason_from_a_newer_version"),
            ]
        ):
            entry, _ = admit(
                session, Arrival(file_sha256=f"{n + 10:064x}", source_name="x", source_path="/x")
            )
            record_unscored(session, entry, status, reason, "detail", "/q/x")
            ids[reason] = entry.id
    for reason, words in (
        ("processing_error", "it says nothing about the film"),
        ("truncated", "the file is cut short"),
        ("a_reason_from_a_newer_version", "for a reason this version does not know"),
    ):
        page = logged_in.get(f"/worklist/{ids[reason]}").text
        assert words in page, reason
        assert "No film to show" in page


def test_the_page_pages_instead_of_refusing_a_large_limit(logged_in: TestClient, worklist):
    add_many(worklist, 1_200)
    page = logged_in.get("/worklist", params={"limit": 1000})
    assert page.status_code == 200
    assert "A page holds at most 500 entries" in page.text
    assert len(row_ids(page.text)) == 500
    api = logged_in.get("/api/worklist", params={"limit": 1000}).json()
    assert api["limit"] == 500 and len({row["entry_id"] for row in api["rows"]}) == 500
    # every entry is reachable by paging, in order, with its real place
    seen: list[int] = []
    url = "/worklist?limit=500"
    while url:
        html = logged_in.get(url).text
        seen += [int(p) for p in re.findall(r'data-position="(\d+)"', html)]
        found = re.search(r'<a href="([^"]+)" rel="next">', html)
        url = found.group(1).replace("&amp;", "&") if found else ""
    assert seen == list(range(1, 1_206 + 1))


def test_go_to_an_entry_and_page_one_tier(logged_in: TestClient, worklist: Worklist):
    add_many(worklist, 900)
    jump = logged_in.get("/worklist", params={"go": 777, "limit": 50}, follow_redirects=False)
    assert jump.status_code == 303
    assert jump.headers["location"].endswith("offset=750#pos-777")
    html = logged_in.get(jump.headers["location"].split("#")[0]).text
    assert 'id="pos-777"' in html and "Entries 751–800 of 906" in html
    with worklist.sessions() as session:
        whole = reading_list(session, TO_READ, limit=None)
    urgent = [e.position for e in whole.entries if e.tier == "urgent"]
    suspect = [e.position for e in whole.entries if e.tier == "suspect"]
    page = logged_in.get("/worklist", params={"tier": "suspect", "limit": 100, "offset": 100})
    positions = [int(p) for p in re.findall(r'data-position="(\d+)"', page.text)]
    assert positions == suspect[100:200]  # the list's own places, the tier's own stretch
    assert f"of {len(suspect)}" in page.text
    last = logged_in.get("/worklist", params={"tier": "urgent", "offset": len(urgent) - 1})
    assert [int(p) for p in re.findall(r'data-position="(\d+)"', last.text)] == urgent[-1:]
    apart = logged_in.get("/worklist", params={"tier": "apart"}).text
    assert row_ids(apart) == [] and f'data-id="{worklist.ids["rejected"]}"' in apart
    bad = logged_in.get("/worklist", params={"tier": "everything"})
    assert bad.status_code == 200 and 'class="error"' in bad.text


def test_reviewed_rows_stay_reachable_and_the_words_say_so(
    logged_in: TestClient, worklist: Worklist
):
    first = worklist.ids[READING_ORDER[0]]
    with worklist.sessions.begin() as session:
        review(session, first, ReviewDecision.AGREE, USERNAME)
    assert first not in row_ids(logged_in.get("/worklist").text)
    every = logged_in.get("/worklist", params={"reviewed": "all"}).text
    assert first in row_ids(every) and "agree by dr.reader" in _row_html(every, first)
    case = logged_in.get(f"/worklist/{first}").text
    assert "Reviewed: off the list to read" in case
    assert "stays on the reading list either way" not in case
    assert "takes the case off the list to read" in case


def test_previous_and_next_follow_the_reading_order(logged_in: TestClient, worklist: Worklist):
    order = [worklist.ids[name] for name in READING_ORDER]
    html = logged_in.get(f"/worklist/{order[2]}").text
    assert f'id="previous-case" href="/worklist/{order[1]}"' in html
    assert f'id="next-case" href="/worklist/{order[3]}"' in html
    assert "Entry 3 of 6 to read" in html
    first = logged_in.get(f"/worklist/{order[0]}").text
    assert 'id="previous-case"' not in first
    last = logged_in.get(f"/worklist/{order[-1]}").text
    assert 'id="next-case"' not in last
    with worklist.sessions() as session:
        assert [entry_position(session, row) for row in order] == [1, 2, 3, 4, 5, 6]
        assert entry_position(session, worklist.ids["rejected"]) is None
        assert entry_position(session, 987654) is None


# -- the live version --------------------------------------------------------------------------


def test_the_live_version_moves_with_arrivals_finishes_and_reviews(
    logged_in: TestClient, worklist: Worklist
):
    live = logged_in.app.state.live
    live._ttl_s = 0.0  # every call looks (the page shares one answer per half second)

    def version() -> str:
        response = logged_in.get("/worklist/live")
        assert response.status_code == 200 and response.headers["cache-control"] == (
            "private, no-cache"
        )
        return response.json()["version"]

    start = logged_in.get("/worklist/live")
    etag = start.headers["etag"]
    assert start.json()["counts"] == {"urgent": 2, "suspect": 2, "routine": 2, "apart": 1}
    assert start.json()["newest_urgent"] == worklist.ids["urgent-97"]
    unchanged = logged_in.get("/worklist/live", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    versions = [version()]
    with worklist.sessions.begin() as session:  # an arrival
        admit(session, Arrival(file_sha256="1" * 64, source_name="n", source_path="/n"))
    versions.append(version())
    case = add_dicom_case(worklist, "live", 0.93, "urgent")  # a finish (and an arrival)
    versions.append(version())
    assert logged_in.get("/worklist/live").json()["newest_urgent"] == case
    with worklist.sessions.begin() as session:  # a review
        review(session, case, ReviewDecision.AGREE, USERNAME)
    versions.append(version())
    assert len(set(versions)) == 4
    assert logged_in.get("/worklist/live").json()["newest_urgent"] == worklist.ids["urgent-97"]


def test_an_urgent_case_scored_after_a_later_arrival_is_still_announced(
    logged_in: TestClient, worklist: Worklist
):
    """The alert follows the URGENT case scored last, not the highest row id: a file admitted
    first and scored second (a large film, a retry) is a new URGENT case too."""
    logged_in.app.state.live._ttl_s = 0.0
    with worklist.sessions.begin() as session:
        early, _ = admit(session, Arrival(file_sha256="3" * 64, source_name="e", source_path="/e"))
        early_id = early.id
    late = add_dicom_case(worklist, "late", 0.95, "urgent")
    before = logged_in.get("/worklist/live").json()
    assert before["newest_urgent"] == late and early_id < late
    with worklist.sessions.begin() as session:
        scored = ScoreValues(0.91, "pneumonia", "urgent", 0, 0.40, "sepcnn-test-1.0", (), 0.10)
        record_scored(session, session.get(WorklistEntry, early_id), scored, "/a/early")
    after = logged_in.get("/worklist/live").json()
    assert after["newest_urgent"] == early_id
    assert after["newest_urgent_at"] > before["newest_urgent_at"]


def test_the_event_stream_sends_changes_and_ends_with_the_session(worklist: Worklist):
    """Server-sent events on a real server: the snapshot, then a new one after an arrival,
    then ``logout`` once the session is ended elsewhere."""
    with browser.serve(create_app(worklist.config())) as base:
        client = httpx.Client(base_url=base, timeout=20)
        client.post("/login", data={"username": USERNAME, "password": PASSWORD})
        token = csrf(client.get("/worklist").text)
        events: list[str] = []
        done = threading.Event()

        def listen() -> None:
            with client.stream("GET", "/worklist/events") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        events.append(line.removeprefix("event: "))
                        if line == "event: logout":
                            break
            done.set()

        threading.Thread(target=listen, daemon=True).start()
        _wait(lambda: events == ["snapshot"])
        with worklist.sessions.begin() as session:
            admit(session, Arrival(file_sha256="2" * 64, source_name="n", source_path="/n"))
        _wait(lambda: events == ["snapshot", "snapshot"])
        other = httpx.Client(base_url=base, cookies=client.cookies, timeout=20)
        other.post("/logout", data={"csrf_token": token})
        assert done.wait(10), events
        assert events[-1] == "logout"
        assert client.get("/worklist/events", follow_redirects=False).status_code == 303


def _wait(condition, timeout_s: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# -- images -----------------------------------------------------------------------------------


def test_thumbnails_are_small_webp_of_the_plain_film(logged_in: TestClient, worklist: Worklist):
    for name in ("urgent-97", "routine-08"):
        response = logged_in.get(f"/worklist/{worklist.ids[name]}/thumb.webp")
        assert response.status_code == 200 and response.headers["content-type"] == "image/webp"
        assert len(response.content) < 6_000, len(response.content)
        with Image.open(io.BytesIO(response.content)) as thumb:
            assert max(thumb.size) == 96 and thumb.mode in ("L", "RGB")
            pixels = np.asarray(thumb.convert("RGB"), dtype=int)
        # the plain film: grey, no heatmap colour in it
        assert np.abs(pixels[..., 0] - pixels[..., 2]).max() <= 8


def test_the_film_at_the_display_size_and_in_full(logged_in: TestClient, worklist: Worklist):
    case = add_dicom_case(worklist, "film", 0.5, "urgent")
    with worklist.sessions() as session:
        archived = Path(get_entry(session, case).archived_path)
    model_input = np.rint(read_image(archived).pixels).astype(np.uint8)
    full = logged_in.get(f"/worklist/{case}/film.png")
    with Image.open(io.BytesIO(full.content)) as image:
        assert image.mode == "L" and np.array_equal(np.asarray(image), model_input)
    small = logged_in.get(f"/worklist/{case}/film.png", params={"max_side": 300})
    with Image.open(io.BytesIO(small.content)) as image:
        assert max(image.size) <= display_side(300) == 512
    for bad in (0, 10, 70000, "x"):
        assert (
            logged_in.get(f"/worklist/{case}/film.png", params={"max_side": bad}).status_code == 422
        )


def test_the_stored_values_come_whole_and_exact(logged_in: TestClient, worklist: Worklist):
    case = add_dicom_case(worklist, "values", 0.5, "urgent")
    with worklist.sessions() as session:
        archived = Path(get_entry(session, case).archived_path)
    response = logged_in.get(f"/worklist/{case}/film.bin")
    assert response.status_code == 200 and response.headers["content-encoding"] == "gzip"
    assert sorted(v.strip() for v in response.headers["vary"].split(",")) == [
        "Accept-Encoding",
        "Cookie",
    ]
    header, table, values = decode_film(response.content)  # httpx has un-gzipped it
    import pydicom

    stored = pydicom.dcmread(archived).pixel_array
    assert np.array_equal(values, stored) and values.dtype == np.dtype("<u2")
    assert header["inverted"] is True and header["units"] == "stored"
    assert header["slope"] == 1.0 and header["intercept"] == -1000.0
    assert np.array_equal(table[values], np.rint(read_image(archived).pixels))
    assert [w["name"] for w in header["windows"]][-1] == "Full range"
    raw = logged_in.get(f"/worklist/{case}/film.bin", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers  # a client without gzip gets it plain
    assert decode_film(raw.content)[0] == header
    assert read_header(archived).patient_id == "P-values"


def test_the_heatmap_layer_is_on_one_scale_for_every_case(
    logged_in: TestClient, worklist: Worklist
):
    def layer(name: str) -> np.ndarray:
        response = logged_in.get(f"/worklist/{worklist.ids[name]}/heatmap.png")
        assert response.status_code == 200
        with Image.open(io.BytesIO(response.content)) as image:
            assert image.mode == "RGBA"
            return np.asarray(image)

    urgent, routine = layer("urgent-97"), layer("routine-08")
    # the same Grad-CAM map: at P 0.97 its peak is marked, at P 0.08 nothing shows
    assert urgent[..., 3].max() > 200
    assert routine[..., 3].max() == 0
    suspect = layer("suspect-31")  # P 0.31: a faint mark, fainter than the urgent one
    assert 0 < suspect[..., 3].max() < urgent[..., 3].max()
    # viridis at its top is yellow (red and green high, blue low): no red-green pair
    peak = urgent[np.unravel_index(urgent[..., 3].argmax(), urgent.shape[:2])]
    assert peak[1] > 180 and peak[2] < 120
    # a row without a stored heatmap layer has none (its old overlay is linked instead)
    assert logged_in.get(f"/worklist/{worklist.ids['routine-low']}/heatmap.png").status_code == 404
    assert logged_in.get(f"/worklist/{worklist.ids['queued']}/heatmap.png").status_code == 404


def test_images_of_rows_without_a_film_are_404(logged_in: TestClient, worklist: Worklist):
    for name in ("queued", "rejected"):
        for what in ("thumb.webp", "film.png", "film.bin", "heatmap.png"):
            response = logged_in.get(f"/worklist/{worklist.ids[name]}/{what}")
            assert response.status_code == 404, (name, what)
    assert logged_in.get("/worklist/987654/film.bin").status_code == 404


def test_hostile_archive_paths_and_files_show_nothing(
    logged_in: TestClient, worklist: Worklist, tmp_path: Path
):
    """A row pointing outside the archive (a path, a symlink out), at a crafted file or at
    a heatmap bomb: 404, never another file's bytes, never a 500."""
    secret = tmp_path / "secret.jpeg"
    secret.write_bytes(next(iter(worklist.archive.glob("*.jpeg"))).read_bytes())
    link = worklist.archive / "link.jpeg"
    link.symlink_to(secret)
    crafted = worklist.archive / "crafted.dcm"
    crafted.write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 300)
    targets = {
        "outside": str(secret),
        "dotdot": str(worklist.archive / ".." / "secret.jpeg"),
        "symlink": str(link),
        "crafted": str(crafted),
    }
    ids = {}
    with worklist.sessions.begin() as session:
        for name, path in targets.items():
            row = session.get(WorklistEntry, worklist.ids["routine-08"])
            clone = WorklistEntry(
                file_sha256=f"{len(ids) + 40:064x}",
                source_name=name,
                source_path="/x",
                status=Status.DONE,
                probability=0.9,
                priority="urgent",
                priority_rank=0,
                label="pneumonia",
                threshold=0.4,
                model_version=row.model_version,
                flags="",
                archived_path=path,
            )
            session.add(clone)
            session.flush()
            ids[name] = clone.id
    for name, row_id in ids.items():
        for what in ("thumb.webp", "film.png", "film.bin"):
            response = logged_in.get(f"/worklist/{row_id}/{what}")
            assert response.status_code == 404, (name, what, response.status_code)
        assert logged_in.get(f"/worklist/{row_id}").status_code == 200
    # a heatmap file that claims to be enormous
    bomb = worklist.overlays / f"{get_sha(worklist, 'urgent-88')}.heat.png"
    Image.new("L", (4000, 4000)).save(bomb)
    assert logged_in.get(f"/worklist/{worklist.ids['urgent-88']}/heatmap.png").status_code == 404


def get_sha(worklist: Worklist, name: str) -> str:
    with worklist.sessions() as session:
        return get_entry(session, worklist.ids[name]).file_sha256


def test_images_need_a_login(client: TestClient, worklist: Worklist):
    row = worklist.ids["urgent-97"]
    for what in ("thumb.webp", "film.png", "film.bin", "heatmap.png", "live", "events"):
        url = f"/worklist/{row}/{what}" if what not in ("live", "events") else f"/worklist/{what}"
        response = client.get(url, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/login", url


# -- the PACS link -----------------------------------------------------------------------------


def test_the_pacs_link_encodes_what_the_header_says():
    template = "https://pacs.example/ohif/viewer?StudyInstanceUIDs={StudyInstanceUID}&acc={AccessionNumber}"
    link = pacs_link(template, "1.2.3&evil=1#x", 'A/"><script>')
    assert link == (
        "https://pacs.example/ohif/viewer?StudyInstanceUIDs=1.2.3%26evil%3D1%23x"
        "&acc=A%2F%22%3E%3Cscript%3E"
    )
    assert pacs_link(template, None, "A1") == ""  # a value it needs is missing: no link
    assert pacs_link("", "1.2.3", "A1") == ""
    assert pacs_link("https://p.example/{AccessionNumber}", "javascript:alert(1)", "A 1") == (
        "https://p.example/A%201"
    )


@pytest.mark.parametrize(
    "template",
    [
        "javascript:alert(1)//{StudyInstanceUID}",
        "/relative/{StudyInstanceUID}",
        "https://p.example/viewer",  # names no study
        "https://p.example/{PatientName}",
        "https://p.example/{StudyInstanceUID",
        "https://p.example/{StudyInstanceUID}}",
    ],
)
def test_an_unusable_pacs_template_is_refused_at_start(template: str, worklist: Worklist):
    with pytest.raises(PacsLinkError):
        check_template(template)
    with pytest.raises(WebConfigError):
        WebConfig(**{**worklist.config().__dict__, "pacs_viewer_url": template})


def test_the_case_page_links_to_the_pacs_viewer(worklist: Worklist):
    config = WebConfig(
        **{
            **worklist.config().__dict__,
            "pacs_viewer_url": "https://orthanc.example/ui/app/#/filtered-studies?StudyInstanceUID={StudyInstanceUID}",
        }
    )
    case = add_dicom_case(worklist, "pacs", 0.5, "urgent")
    with TestClient(create_app(config)) as client:
        client.post("/login", data={"username": USERNAME, "password": PASSWORD})
        html = client.get(f"/worklist/{case}").text
        uid = read_header(next(worklist.archive.glob("pacs.dcm"))).study_instance_uid
        assert (
            f'href="https://orthanc.example/ui/app/#/filtered-studies?StudyInstanceUID={uid}"'
            in html
        )
        assert 'rel="noopener noreferrer"' in html
        jpeg = client.get(f"/worklist/{worklist.ids['urgent-97']}").text
        assert "Open in PACS viewer" not in jpeg  # no Study Instance UID: no link


def test_the_setting_refuses_a_bad_template(monkeypatch):
    from worker.settings import Settings

    monkeypatch.setenv("CXR_WEB_PACS_VIEWER_URL", "javascript:alert(1)//{StudyInstanceUID}")
    with pytest.raises(ValueError, match="http"):
        Settings()


# -- what the header gives the row -------------------------------------------------------------


def test_admission_keeps_age_sex_view_and_study_description(tmp_path: Path):
    from tests.ingest.dicom_factory import monochrome1_16bit_rescale, write
    from worker.intake import arrival_of

    ds = monochrome1_16bit_rescale(np.zeros((8, 8), dtype=np.uint8) + 9)
    ds.PatientAge, ds.PatientSex, ds.ViewPosition = "018M", "f", "AP-ERECT-PORTABLE-X"
    ds.StudyDescription = "XR CHEST\x00 1 VIEW\x1b"  # control characters are not kept
    path = write(ds, tmp_path / "a.dcm")
    arrival = arrival_of(read_header(path), "a.dcm", path)
    assert arrival.patient_age_years == pytest.approx(1.5)
    assert arrival.patient_sex == "F"
    assert arrival.view_position == "AP-ERECT-PORTABLE-X"[:16]
    assert arrival.study_description == "XR CHEST 1 VIEW"


def test_the_worklist_page_weighs_little(logged_in: TestClient, worklist: Worklist):
    """100 rows: the HTML plus every thumbnail stays far under 500 KB (bench measures it in
    a browser with real films)."""
    add_many(worklist, 100)
    html = logged_in.get("/worklist").content
    thumbs = sum(
        len(logged_in.get(f"/worklist/{worklist.ids[name]}/thumb.webp").content)
        for name in ("urgent-88", "urgent-97", "suspect-31", "routine-low", "routine-08")
    )
    assert len(html) + thumbs / 5 * 100 < 500_000, (len(html), thumbs)


def test_gzip_is_only_the_film_values(logged_in: TestClient, worklist: Worklist):
    """Pages are never compressed (they carry the CSRF token next to text a request can
    choose: no BREACH); the stored values are, and say so."""
    page = logged_in.get("/worklist", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in page.headers
    case = add_dicom_case(worklist, "gz", 0.5, "urgent")
    body = logged_in.get(f"/worklist/{case}/film.bin")
    assert body.headers["content-encoding"] == "gzip"


def test_a_row_held_for_its_retry_says_what_it_waits_for() -> None:
    """A row whose task let it go for a retry (``db.leases.hold``: ``claimed_by`` cleared)
    is not being scored: it waits for the share or the model to come back."""
    held = WorklistEntry(status=Status.PROCESSING, claimed_by=None)
    assert present.why_unscored(held).startswith("Waiting for the share or the model to come back")
    running = WorklistEntry(status=Status.PROCESSING, claimed_by="node-a:12")
    assert present.why_unscored(running).startswith("Being scored now")
