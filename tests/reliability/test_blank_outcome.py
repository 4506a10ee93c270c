"""Blank images end as ``rejected``/``blank_image`` rows, quarantined, and the model is never
loaded for them (issue 12: an all-black image and a NaN Rescale Slope were scored URGENT)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Status, WorklistEntry
from ingest.watcher import Origin
from tests.corpus import cr_dicom, dataset_jpegs
from tests.ingest.dicom_factory import base_dataset, set_pixels, write
from worker.intake import Intake
from worker.pipeline import Pipeline
from worker.scoring import Scorer
from worker.settings import Settings


def _no_model() -> Scorer:
    raise AssertionError("the model must not see a blank image")


def test_blank_dicoms_and_rasters_are_rejected_before_the_model(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    inbox = settings.inbox
    jpeg = dataset_jpegs(1)[0]
    files = [
        cr_dicom(jpeg, inbox / "nan-slope.dcm", RescaleSlope="NaN", RescaleIntercept="0"),
        cr_dicom(jpeg, inbox / "zero-slope.dcm", RescaleSlope="0", RescaleIntercept="-1024"),
        write(
            set_pixels(base_dataset(256, 256), np.zeros((256, 256), dtype=np.uint8)),
            inbox / "black.dcm",
        ),
    ]
    for name, value in (("white.png", 255), ("black.jpeg", 0)):
        Image.fromarray(np.full((256, 256), value, dtype=np.uint8), mode="L").save(inbox / name)
        files.append(inbox / name)
    sent: list[int] = []
    intake = Intake(settings, sessions, lambda entry_ids, origin: sent.extend(entry_ids))
    assert intake([(path, Origin.LIVE) for path in files]) == []
    Pipeline(settings, sessions, _no_model).triage(sent[0], token="task-1")
    with sessions() as session:
        rows = list(session.scalars(select(WorklistEntry)))
    assert len(rows) == len(files)
    for row in rows:
        assert (row.status, row.reason) == (Status.REJECTED, "blank_image"), row.source_name
        assert row.probability is None and row.priority is None
        archived = Path(row.archived_path or "")
        assert archived.parent == settings.quarantine / "blank_image"
        sidecar = json.loads(Path(f"{archived}.json").read_text())
        assert sidecar["reason"] == "blank_image" and sidecar["detail"]
    assert not [p for p in inbox.rglob("*") if p.is_file()]  # (the empty staging folder stays)
