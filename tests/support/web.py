"""The review page's test worklist: real dataset radiographs, scored, rejected and waiting
rows in a real database (SQLite, or PostgreSQL where the services run)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from db import accounts
from db.engine import make_engine, make_session_factory
from db.models import Role, Status
from db.worklist import Arrival, ScoreValues, admit
from model.overlay import overlay_heatmap
from tests.ingest.dicom_factory import jpeg_grey, sample_jpegs
from tests.support.pacs import synthetic_heatmap
from tests.support.worklist import record_scored, record_unscored
from web.config import WebConfig
from web.overlays import save_heatmap, save_overlay, save_thumbnail

#: The accounts every seeded worklist has: a reviewer (the page's usual user), a reader who
#: may not record reviews, and an admin.
USERNAME = "dr.reader"
PASSWORD = "correct horse battery"
READER_ONLY = "clerk"
ADMIN = "security.officer"
OTHER_PASSWORD = "another long passphrase"
ACCOUNTS = (
    (USERNAME, Role.REVIEWER, PASSWORD),
    (READER_ONLY, Role.READER, OTHER_PASSWORD),
    (ADMIN, Role.ADMIN, OTHER_PASSWORD),
)

#: (name, probability, priority, rank, label) of the scored rows, in arrival order. The
#: reading list (db/reading.py) is then: the two urgent rows oldest first, whatever their
#: probability; the suspect row and the queued row (not yet known: read with SUSPECT), oldest
#: first; the two routine rows, oldest first. The lateral (not the device's to read, no
#: study to belong to) is listed apart.
SCORED = (
    ("routine-low", 0.03, "routine", 2, "normal"),
    ("urgent-88", 0.88, "urgent", 0, "pneumonia"),
    ("suspect-31", 0.31, "suspect", 1, "normal"),
    ("urgent-97", 0.97, "urgent", 0, "pneumonia"),
    ("routine-08", 0.08, "routine", 2, "normal"),
)
READING_ORDER = ("urgent-88", "urgent-97", "suspect-31", "queued", "routine-low", "routine-08")


@dataclass
class Worklist:
    sessions: sessionmaker[Session]
    ids: dict[str, int]  # source name -> row id
    archive: Path
    overlays: Path
    url: str

    def config(self) -> WebConfig:
        return WebConfig(
            database_url=self.url,
            archive_dir=self.archive,
            overlay_dir=self.overlays,
        )


def seed_accounts(session: Session) -> None:
    """The reviewer, reader and admin of :data:`ACCOUNTS`."""
    for name, role, password in ACCOUNTS:
        accounts.add(session, name, role, password, actor="test")


def seed(url: str, tmp_path: Path) -> Worklist:
    sources = sample_jpegs(per_class=3)
    archive, overlays = tmp_path / "archive", tmp_path / "overlays"
    archive.mkdir()
    sessions = make_session_factory(make_engine(url))
    ids: dict[str, int] = {}
    with sessions.begin() as session:
        seed_accounts(session)
        for index, (name, probability, priority, rank, label) in enumerate(SCORED):
            jpeg = sources[index]
            sha = hashlib.sha256(jpeg.read_bytes()).hexdigest()
            archived = archive / f"{name}.jpeg"
            archived.write_bytes(jpeg.read_bytes())
            entry, _ = admit(
                session,
                Arrival(
                    file_sha256=sha,
                    source_name=f"{name}.jpeg",
                    source_path=str(tmp_path / "inbox" / f"{name}.jpeg"),
                    source_kind="jpeg",
                    accession_number=f"ACC-{index:03d}",
                    patient_id=f"PID-{index:03d}",
                ),
            )
            flags = ("eligibility_unverified",)  # a JPEG has no header to check
            if name == "suspect-31":
                flags += ("age_outside_training_range",)
            scored = ScoreValues(
                probability, label, priority, rank, 0.40, "sepcnn-test-1.0", flags, 0.10
            )
            record_scored(session, entry, scored, str(archived))
            ids[name] = entry.id
            if priority == "urgent":  # the worker stored their heatmap overlays
                grey = jpeg_grey(jpeg).astype(np.float32)
                save_overlay(overlay_heatmap(grey, synthetic_heatmap()), overlays, sha)
            if name != "routine-low":  # and the heatmap itself (not for rows scored before)
                save_heatmap(synthetic_heatmap(), overlays, sha)
        rejected, _ = admit(
            session,
            Arrival(file_sha256="e" * 64, source_name="lateral.dcm", source_path="/x/lateral.dcm"),
        )
        record_unscored(
            session, rejected, Status.REJECTED, "lateral_view", "(0018,5101) LL", "/q/lateral"
        )
        ids["rejected"] = rejected.id
        waiting, _ = admit(
            session, Arrival(file_sha256="f" * 64, source_name="new.dcm", source_path="/x/new")
        )
        ids["queued"] = waiting.id
    return Worklist(sessions, ids, archive, overlays, url)


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def add_dicom_case(
    worklist: Worklist,
    name: str,
    probability: float,
    priority: str,
    *,
    age: str = "003Y",
    sex: str = "F",
    view: str = "PA",
    description: str = "XR CHEST PA",
    source_index: int = 0,
    heatmap: bool = True,
) -> int:
    """A scored 16-bit DICOM (MONOCHROME1, rescale, a header window) admitted the way the
    worker admits it (``worker.intake.arrival_of`` on ingest's header), archived, with its
    heatmap stored. Returns its row id."""
    from ingest.readers import read_header, read_image
    from tests.ingest.dicom_factory import monochrome1_16bit_rescale, write
    from worker.intake import arrival_of

    sources = sample_jpegs(per_class=3)
    ds = monochrome1_16bit_rescale(jpeg_grey(sources[source_index % len(sources)]))
    ds.PatientAge, ds.PatientSex, ds.ViewPosition = age, sex, view
    ds.StudyDescription = description
    ds.AccessionNumber = f"A{name}"[:16]
    ds.PatientID = f"P-{name}"
    path = write(ds, worklist.archive / f"{name}.dcm")
    header = read_header(path)
    rank = {"urgent": 0, "suspect": 1, "routine": 2}[priority]
    label = "pneumonia" if priority == "urgent" else "normal"
    with worklist.sessions.begin() as session:
        entry, _ = admit(session, arrival_of(header, path.name, path))
        scored = ScoreValues(probability, label, priority, rank, 0.40, "sepcnn-test-1.0", (), 0.10)
        record_scored(session, entry, scored, str(path))
        row_id = entry.id
    if heatmap:  # what the worker's results task stores (worker/publishing.py)
        save_heatmap(synthetic_heatmap(), worklist.overlays, header.file_sha256)
        save_thumbnail(read_image(path).pixels, worklist.overlays, header.file_sha256)
    return row_id


def add_many(worklist: Worklist, count: int, *, start: int = 0) -> None:
    """``count`` scored JPEG-like rows (no files: no thumbnails), oldest first, in every tier:
    enough for paging to entry 5,000. One multi-row INSERT per 1,000 (the generated tier and
    study key are the database's)."""
    from datetime import timedelta

    from sqlalchemy import insert

    from db.models import WorklistEntry, utcnow

    base = utcnow() - timedelta(hours=6)
    tiers = [("urgent", 0, 0.9), ("suspect", 1, 0.2), ("routine", 2, 0.04)]
    rows = []
    for n in range(start, start + count):
        priority, rank, probability = tiers[n % 3]
        rows.append(
            {
                "file_sha256": f"{n:064x}",
                "source_name": f"bulk-{n}.jpeg",
                "source_path": f"/inbox/bulk-{n}.jpeg",
                "source_kind": "jpeg",
                "status": Status.DONE,
                "priority": priority,
                "priority_rank": rank,
                "probability": probability,
                "label": "pneumonia" if rank == 0 else "normal",
                "threshold": 0.40,
                "suspect_threshold": 0.10,
                "model_version": "sepcnn-test-1.0",
                "flags": "eligibility_unverified",
                "attempts": 1,
                "received_at": base + timedelta(seconds=n),
                "finished_at": base + timedelta(seconds=n, milliseconds=500),
                "accession_number": f"B{n:07d}",
                "patient_id": f"PB-{n}",
            }
        )
    engine = worklist.sessions.kw["bind"]
    with engine.begin() as connection:
        for first in range(0, len(rows), 1000):
            connection.execute(insert(WorklistEntry), rows[first : first + 1000])
