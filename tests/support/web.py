"""The review page's test worklist: real dataset radiographs, scored, rejected and waiting
rows in a real database (SQLite, or PostgreSQL where the services run)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_session_factory
from db.models import Status
from db.worklist import Arrival, Scored, admit, record_scored, record_unscored
from model.overlay import overlay_heatmap
from tests.ingest.dicom_factory import jpeg_grey, sample_jpegs
from tests.support.pacs import synthetic_heatmap
from web.config import WebConfig
from web.overlays import save_overlay

USERNAME = "dr.reader"
PASSWORD = "correct horse battery"

#: (name, probability, priority, rank, label) of the scored rows, in arrival order. Reading
#: order is then: urgent 0.97, urgent 0.88, suspect 0.31, routine 0.08, routine 0.03.
SCORED = (
    ("routine-low", 0.03, "routine", 2, "normal"),
    ("urgent-88", 0.88, "urgent", 0, "pneumonia"),
    ("suspect-31", 0.31, "suspect", 1, "normal"),
    ("urgent-97", 0.97, "urgent", 0, "pneumonia"),
    ("routine-08", 0.08, "routine", 2, "normal"),
)
READING_ORDER = ("urgent-97", "urgent-88", "suspect-31", "routine-08", "routine-low")


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
            username=USERNAME,
            password=PASSWORD,
        )


def seed(url: str, tmp_path: Path) -> Worklist:
    sources = sample_jpegs(per_class=3)
    if len(sources) < 6:
        pytest.skip("the pediatric-cxr dataset is not present (set CXR_TEST_DATASET)")
    archive, overlays = tmp_path / "archive", tmp_path / "overlays"
    archive.mkdir()
    sessions = make_session_factory(make_engine(url))
    ids: dict[str, int] = {}
    with sessions.begin() as session:
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
            scored = Scored(probability, label, priority, rank, 0.40, "sepcnn-test-1.0", flags)
            record_scored(session, entry, scored, str(archived))
            ids[name] = entry.id
            if priority == "urgent":  # the worker stored their heatmap overlays
                grey = jpeg_grey(jpeg).astype(np.float32)
                save_overlay(overlay_heatmap(grey, synthetic_heatmap()), overlays, sha)
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
