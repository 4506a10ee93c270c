"""The review page over a 100,000-row worklist (PostgreSQL), in Debian's Chromium.

    python bench/bench_review_page.py [--rows 100000] [--runs 7] [--arrivals 10]

Fills a throwaway PostgreSQL database ``cxr_test_<random>`` (migrated to head) with
``--rows`` images the way ``bench/bench_reading_list.py`` does (single-image studies, PA +
lateral, JPEGs, all three tiers, refused, failed, queued); the images of the first page get
real films (the site sample's JPEGs, ``../shared/data/pediatric-cxr-site``: measured on,
never trained on) with the heatmap layer and thumbnail the worker stores. The page is
served by uvicorn on a free port and read by headless Chromium (``/usr/bin/chromium``).
It prints:

1. **first paint** of ``/worklist`` (100 entries): the server's answer (TTFB), first
   contentful paint and the load event, cold (a new browser profile each run) and warm;
2. **page weight**: bytes over the wire for the page and everything it loads (thumbnails,
   stylesheet, script), cold and on a revisit (the images answer 304);
3. **a new case on an open page**: ``--arrivals`` rows committed as ``done`` while the page
   is open (URGENT, so the tier's last page, where the reading order puts them, is open):
   from the commit to the row in the page's DOM (a MutationObserver's clock), and to the
   URGENT alert on page 1; target: under 3 s;
4. **what an idle open page costs**: the server process's CPU over 20 s with one open page.

The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SITE = Path(__file__).resolve().parents[2] / "shared" / "data" / "pediatric-cxr-site"
USERNAME, PASSWORD = "bench.reader", "bench password 22"
#: Installed before the commit: when the row is in the DOM, the page's clock (epoch ms).
WATCH_ROW = """(id) => {
    window.seenAt = null;
    new MutationObserver((_, observer) => {
        if (document.querySelector(`tr[data-id="${id}"]`)) {
            window.seenAt = performance.timeOrigin + performance.now();
            observer.disconnect();
        }
    }).observe(document.body, {childList: true, subtree: true});
}"""
WATCH_ALERT = """() => {
    const box = document.getElementById('urgent-alert');
    box.hidden = true;
    window.alertAt = null;
    new MutationObserver((_, observer) => {
        if (!box.hidden) {
            window.alertAt = performance.timeOrigin + performance.now();
            observer.disconnect();
        }
    }).observe(box, {attributes: true});
}"""


def films_for_first_page(url: str, archive: Path, overlays: Path) -> int:
    """Real films and heatmaps for the images of the first 100 entries."""
    import numpy as np
    from sqlalchemy import update

    from db.engine import make_engine, make_session_factory
    from db.models import Status, WorklistEntry
    from db.reading import reading_list
    from ingest.readers import read_image
    from web.overlays import save_heatmap, save_thumbnail

    jpegs = sorted(SITE.glob("*/*.jpeg"))
    if not jpegs:
        raise SystemExit(f"no site sample at {SITE}")
    yy, xx = np.mgrid[0:192, 0:192]
    heat = np.exp(-((yy - 120) ** 2 + (xx - 60) ** 2) / 900.0)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    with sessions() as session:
        images = reading_list(session, limit=100, count=False).images
        done = [image for image in images if image.status is Status.DONE]
        assignments = []
        for n, image in enumerate(done):
            source = jpegs[n % len(jpegs)]
            target = archive / f"{image.id}.jpeg"
            shutil.copyfile(source, target)
            assignments.append((image.id, str(target)))
            # what the worker's results task stores beside the overlay (worker/publishing.py)
            save_heatmap(heat, overlays, image.file_sha256)
            save_thumbnail(read_image(target, min_side=192).pixels, overlays, image.file_sha256)
    with engine.begin() as connection:
        for row_id, path in assignments:
            connection.execute(
                update(WorklistEntry)
                .where(WorklistEntry.id == row_id)
                .values(archived_path=path, threshold=0.67, suspect_threshold=0.066)
            )
    engine.dispose()
    return len(assignments)


def arrive(url: str, n: int, priority: str = "urgent") -> tuple[int, float]:
    """One scored row committed now; returns its id and the commit's wall-clock time (ms)."""
    from sqlalchemy import insert

    from db.engine import make_engine
    from db.models import WorklistEntry, utcnow

    engine = make_engine(url)
    rank = {"urgent": 0, "suspect": 1, "routine": 2}[priority]
    now = utcnow()
    with engine.begin() as connection:
        row_id = connection.execute(
            insert(WorklistEntry)
            .values(
                file_sha256=f"{10**9 + n:064x}",
                source_name=f"new-{n}.jpeg",
                source_path=f"/inbox/new-{n}.jpeg",
                source_kind="jpeg",
                status="done",
                flags="",
                attempts=1,
                received_at=now - timedelta(seconds=1),
                finished_at=now,
                probability=0.93,
                priority=priority,
                priority_rank=rank,
                label="pneumonia",
                threshold=0.67,
                suspect_threshold=0.066,
                model_version="bench",
            )
            .returning(WorklistEntry.id)
        ).scalar_one()
    committed = time.time() * 1000
    engine.dispose()
    return int(row_id), committed


def _next_id(url: str) -> int:
    """The id the next row will get (rows are only added while the bench runs)."""
    from sqlalchemy import func, select

    from db.engine import make_engine
    from db.models import WorklistEntry

    engine = make_engine(url)
    with engine.connect() as connection:
        found = connection.execute(select(func.max(WorklistEntry.id))).scalar_one()
    engine.dispose()
    return int(found) + 1


def measure_paint(chromium, base: str, login, runs: int) -> None:
    cold, warm = [], []
    for run in range(runs):
        context = chromium.new_context(viewport={"width": 1440, "height": 900})
        page = context.new_page()
        login(page, base, USERNAME, PASSWORD)  # lands on /worklist: the cold visit
        cold.append(_timings(page))
        page.reload()
        page.wait_for_load_state("load")
        warm.append(_timings(page))
        if run == 0:
            _weight(page, base, "revisit")
            fresh = chromium.new_context(viewport={"width": 1440, "height": 900})
            first = fresh.new_page()
            login(first, base, USERNAME, PASSWORD)
            _weight(first, base, "first visit")
            fresh.close()
        context.close()
    for name, found in (("cold", cold), ("warm", warm)):
        columns = zip(*found, strict=True)
        ttfb, fcp, load = (statistics.median(column) for column in columns)
        print(
            f"worklist, 100 entries, {name} (median of {runs}): server answer (TTFB) "
            f"{ttfb:.0f} ms, first contentful paint {fcp:.0f} ms, load {load:.0f} ms"
        )


VISIBLE_LOADED = """() => [...document.querySelectorAll('.thumb img')]
    .filter(i => {
        const r = i.getBoundingClientRect();
        return r.top < innerHeight && r.bottom > 0;
    })
    .every(i => i.complete && i.naturalWidth > 0)"""
ALL_LOADED = """() => [...document.querySelectorAll('.thumb img')]
    .every(i => i.complete && i.naturalWidth > 0)"""


def _timings(page) -> tuple[float, float, float]:
    page.wait_for_function(VISIBLE_LOADED)
    page.wait_for_function(
        "() => performance.getEntriesByName('first-contentful-paint').length", timeout=10_000
    )
    return tuple(
        page.evaluate(
            """() => {
                const nav = performance.getEntriesByType('navigation')[0];
                const fcp = performance.getEntriesByName('first-contentful-paint')[0];
                return [nav.responseStart - nav.requestStart, fcp ? fcp.startTime : NaN,
                        nav.loadEventEnd || performance.now()];
            }"""
        )
    )


def _weight(page, base: str, label: str) -> None:
    """Bytes of the first screen (thumbnails load lazily), then of all 100 rows scrolled."""
    page.wait_for_function(VISIBLE_LOADED)
    page.wait_for_timeout(500)
    _print_weight(page, f"{label}, first screen")
    height = page.evaluate("() => document.body.scrollHeight")
    for y in range(0, height, 700):  # as a reader scrolls: lazy thumbnails load on the way
        page.evaluate(f"() => window.scrollTo(0, {y})")
        page.wait_for_function(VISIBLE_LOADED, timeout=60_000)
    page.wait_for_function(ALL_LOADED, timeout=60_000)
    page.wait_for_timeout(500)
    _print_weight(page, f"{label}, all 100 rows scrolled through")


def _print_weight(page, label: str) -> None:
    entries = page.evaluate(
        """() => [...performance.getEntriesByType('navigation'),
                  ...performance.getEntriesByType('resource')].map(e => ({
            name: e.name, type: e.initiatorType, transfer: e.transferSize, body: e.encodedBodySize
        }))"""
    )
    counted = [e for e in entries if "/events" not in e["name"]]
    total = sum(e["transfer"] for e in counted)
    thumbs = [e for e in counted if e["name"].endswith("thumb.webp")]
    html = next(e for e in counted if e["type"] == "navigation")
    print(
        f"page weight, {label}: {total / 1024:.0f} KB over the wire in {len(counted)} "
        f"responses (HTML {html['body'] / 1024:.0f} KB; {len(thumbs)} thumbnails, "
        f"{sum(e['transfer'] for e in thumbs) / 1024:.0f} KB over the wire, median body "
        f"{statistics.median([e['body'] for e in thumbs] or [0]) / 1024:.1f} KB)"
    )


def measure_arrivals(chromium, base: str, url: str, login, arrivals: int) -> None:
    from db.engine import make_engine, make_session_factory
    from web.live import tier_counts

    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        urgent = tier_counts(session)["urgent"]
    engine.dispose()
    context = chromium.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    login(page, base, USERNAME, PASSWORD)
    top = context.new_page()
    top.goto(f"{base}/worklist")
    rows, alerts = [], []
    for n in range(arrivals):
        offset = (urgent + n) // 100 * 100  # the urgent tier's last page: where it lands
        page.goto(f"{base}/worklist?tier=urgent&offset={offset}")
        page.wait_for_function("() => window.cxrWorklist && window.cxrWorklist.state().version")
        page.wait_for_timeout(700)  # the stream's first snapshot has come
        top.evaluate(WATCH_ALERT)
        expected = _next_id(url)
        page.evaluate(WATCH_ROW, expected)
        row_id, committed = arrive(url, n)
        assert row_id == expected, (row_id, expected)
        page.wait_for_function("() => window.seenAt", timeout=30_000)
        top.wait_for_function("() => window.alertAt", timeout=30_000)
        rows.append(page.evaluate("() => window.seenAt") - committed)
        alerts.append(top.evaluate("() => window.alertAt") - committed)
    print(
        f"a new URGENT case on an open page, {arrivals} arrivals: in the list "
        f"median {statistics.median(rows):.0f} ms, max {max(rows):.0f} ms after its commit; "
        f"URGENT alert on page 1 median {statistics.median(alerts):.0f} ms, "
        f"max {max(alerts):.0f} ms (target: under 3,000 ms)"
    )
    context.close()


def measure_idle(chromium, base: str, login, seconds: float = 20.0) -> None:
    context = chromium.new_context()
    page = context.new_page()
    login(page, base, USERNAME, PASSWORD)
    page.wait_for_timeout(2000)
    cpu, wall = time.process_time(), time.monotonic()
    page.wait_for_timeout(seconds * 1000)
    used = time.process_time() - cpu
    print(
        f"one idle open page for {time.monotonic() - wall:.0f} s: the server process used "
        f"{used * 1000:.0f} ms of CPU ({used / seconds * 100:.2f} % of a core)"
    )
    context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--arrivals", type=int, default=10)
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args()

    from bench_reading_list import fill
    from playwright.sync_api import sync_playwright

    from db import accounts, migrate
    from db.engine import make_engine, make_session_factory
    from db.models import Role
    from tests.conftest import create_pg_database, drop_pg_database
    from tests.support import browser
    from web.app import create_app
    from web.config import WebConfig

    url = create_pg_database()
    folder = Path(tempfile.mkdtemp(prefix="cxr-bench-page-"))
    archive, overlays = folder / "archive", folder / "overlays"
    archive.mkdir()
    try:
        migrate.upgrade(url)
        started = time.perf_counter()
        fill(url, args.rows, 0.0, args.seed)
        films = films_for_first_page(url, archive, overlays)
        print(
            f"filled {args.rows} rows in {time.perf_counter() - started:.1f} s; "
            f"{films} films on the first page"
        )
        print("load average (1, 5, 15 min): {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
        with make_session_factory(make_engine(url)).begin() as session:  # a named account
            accounts.add(session, USERNAME, Role.READER, PASSWORD, actor="bench")
        config = WebConfig(database_url=url, archive_dir=archive, overlay_dir=overlays)
        with browser.serve(create_app(config)) as base, sync_playwright() as playwright:
            chromium = browser.launch(playwright)
            try:
                measure_paint(chromium, base, browser.log_in, args.runs)
                measure_arrivals(chromium, base, url, browser.log_in, args.arrivals)
                measure_idle(chromium, base, browser.log_in)
            finally:
                chromium.close()
        print("load average (1, 5, 15 min): {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    finally:
        drop_pg_database(url)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
