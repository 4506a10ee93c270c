"""The reading list's first page on a 100,000-row worklist (PostgreSQL): time and plan.

    python bench/bench_reading_list.py [--rows 100000] [--runs 21] [--reviewed 0.0]

Fills a throwaway database ``cxr_bench_<random>`` (migrated to head) with ``--rows`` images:
a realistic mix of single-image studies, PA + lateral studies (the lateral not the device's
to read), studies of two frontal images, JPEGs without any identifier, scored in all three
tiers, refused for a reason of the image, failed, queued and processing; ``--reviewed`` of
them already reviewed. Then, warm, the median of ``--runs`` of:

1. ``db.reading.reading_list(limit=50, count=False)``: the first 50 entries with their
   images (what a page needs to draw);
2. the same with the two totals (``count=True``: the whole list is walked for them);
3. the view as a PACS-side tool should read it: ``SELECT * FROM reading_list LIMIT 50``
   (its rows come in reading order) and ``... WHERE position > 5000 LIMIT 50``;
4. entries 5,001-5,050 through the function (``offset=5000``);
5. the view read the way that numbers the whole list first (``ORDER BY position LIMIT 50``,
   and ``WHERE position <= 50`` without a LIMIT): what a tool pays for not using LIMIT;

and prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the first page's leading-image query and of the
view's first page. The database is dropped at the end; the server's settings (JIT
included) are left as they are.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VIEW_PAGE = "SELECT * FROM reading_list LIMIT 50"
VIEW_DEEP = "SELECT * FROM reading_list WHERE position > 5000 LIMIT 50"
VIEW_WHOLE = (
    "SELECT * FROM reading_list ORDER BY position LIMIT 50",
    "SELECT * FROM reading_list WHERE position <= 50",
)


def fill(url: str, rows: int, reviewed: float, seed: int) -> None:
    """``rows`` images, inserted in batches of 10,000 (the generated columns compute)."""
    from sqlalchemy import insert

    from db.engine import make_engine
    from db.models import WorklistEntry

    rng = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    engine = make_engine(url)
    batch: list[dict[str, object]] = []
    n = 0
    study = 0
    with engine.begin() as connection:
        while n < rows:
            study += 1
            kind = rng.random()
            patient = f"P{rng.randrange(rows // 2):07d}"
            uid = f"1.2.826.0.1.3680043.10.{study}"
            if kind < 0.55:
                images = [("frontal", uid)]
            elif kind < 0.85:
                images = [("frontal", uid), ("lateral", uid)]
            elif kind < 0.90:
                images = [("frontal", uid), ("frontal", uid)]
            else:
                images = [("frontal", None)]  # a JPEG: no study, no patient
            for view, study_uid in images:
                n += 1
                received = start + timedelta(seconds=n * 2 + rng.random())
                batch.append(_row(rng, n, view, study_uid, patient, received, reviewed))
                if len(batch) == 10_000:
                    connection.execute(insert(WorklistEntry), batch)
                    batch.clear()
        if batch:
            connection.execute(insert(WorklistEntry), batch)
        connection.exec_driver_sql("ANALYZE worklist")
    engine.dispose()


def _row(
    rng: random.Random,
    n: int,
    view: str,
    study_uid: str | None,
    patient: str,
    received: datetime,
    reviewed: float,
) -> dict[str, object]:
    row: dict[str, object] = {
        "file_sha256": f"{n:064x}",
        "source_name": f"f{n}.dcm",
        "source_path": f"/inbox/f{n}.dcm",
        "source_kind": "dicom" if study_uid else "jpeg",
        "sop_instance_uid": f"{study_uid}.{n}" if study_uid else None,
        "study_instance_uid": study_uid,
        "patient_id": patient if study_uid else None,
        "accession_number": f"A{n:09d}"[:16] if study_uid else None,
        "status": "done",
        "flags": "",
        "attempts": 1,
        "received_at": received,
        "probability": None,
        "label": None,
        "priority": None,
        "priority_rank": None,
        "reason": None,
        "reviewed_at": None,
    }
    draw = rng.random()
    if view == "lateral":
        row.update(status="rejected", reason="lateral_view")
    elif draw < 0.03:
        row.update(status="queued", attempts=0)
    elif draw < 0.04:
        row.update(status="processing")
    elif draw < 0.06:
        row.update(status="rejected", reason="not_chest_radiograph")
    elif draw < 0.065:
        row.update(status="failed", reason="processing_error")
    elif draw < 0.08:
        row.update(status="rejected", reason=rng.choice(["wrong_modality", "not_chest"]))
    else:
        rank = rng.choices([0, 1, 2], weights=[25, 15, 60])[0]
        row.update(
            probability=rng.random(),
            priority=("urgent", "suspect", "routine")[rank],
            priority_rank=rank,
            label="pneumonia" if rank == 0 else "normal",
        )
    if rng.random() < reviewed:
        row["reviewed_at"] = received + timedelta(hours=1)
    return row


def median_ms(call: Callable[[], object], runs: int) -> float:
    call()  # warm: plans cached, pages in shared buffers
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--reviewed", type=float, default=0.0, help="share already reviewed")
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args()

    from sqlalchemy import text

    from db import migrate
    from db.engine import make_engine, make_session_factory
    from db.reading import TO_READ, leading_images, reading_list
    from tests.conftest import create_pg_database, drop_pg_database

    url = create_pg_database()
    try:
        migrate.upgrade(url)
        started = time.perf_counter()
        fill(url, args.rows, args.reviewed, args.seed)
        print(f"filled {args.rows} rows in {time.perf_counter() - started:.1f} s")
        print("load average (1, 5, 15 min): {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        with sessions() as session:
            page = reading_list(session, limit=50)
            print(
                f"reading list: {page.total} entries ({len(page.images)} images on the first "
                f"page), {page.apart_total} listed apart"
            )
            first = median_ms(lambda: reading_list(session, limit=50, count=False), args.runs)
            counted = median_ms(lambda: reading_list(session, limit=50), args.runs)
            view = median_ms(lambda: session.execute(text(VIEW_PAGE)).all(), args.runs)
            view_deep = median_ms(lambda: session.execute(text(VIEW_DEEP)).all(), args.runs)
            deep = median_ms(
                lambda: reading_list(session, offset=5000, limit=50, count=False), args.runs
            )
            whole = [
                median_ms(lambda sql=sql: session.execute(text(sql)).all(), 3)  # type: ignore[misc]
                for sql in VIEW_WHOLE
            ]
            print(f"first page, 50 entries with their images: {first:.1f} ms (median)")
            print(f"first page with both totals:              {counted:.1f} ms")
            print(f"entries 5,001-5,050:                      {deep:.1f} ms")
            print(f"view: {VIEW_PAGE}: {view:.1f} ms")
            print(f"view: {VIEW_DEEP}: {view_deep:.1f} ms")
            for sql, ms in zip(VIEW_WHOLE, whole, strict=True):
                print(f"view: {sql}: {ms:.1f} ms (numbers the whole list)")
            query = leading_images(TO_READ).limit(50)
            compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
            for title, sql in (("leading images, first 50", str(compiled)), ("view", VIEW_PAGE)):
                plan = session.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")).scalars()
                print(f"\nEXPLAIN ANALYZE: {title}")
                print("\n".join(plan))
        engine.dispose()
    finally:
        drop_pg_database(url)


if __name__ == "__main__":
    main()
