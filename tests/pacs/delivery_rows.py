"""Worklist rows with real SR/SC files in an outbox, tracked ``pending`` (delivery tests)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db.models import utcnow
from db.results import record_written
from db.worklist import Arrival, ScoreValues, admit
from pacs.outbox import write_results
from tests.support.pacs import ROUTINE, URGENT, radiograph
from tests.support.worklist import record_scored


def add_rows(
    sessions: sessionmaker[Session], tmp_path: Path, reference_grey, overlay, count: int
) -> list[int]:
    """``count`` scored DICOM rows with their SR and SC written and tracked ``pending``."""
    ids = []
    small = reference_grey[::8, ::8].copy()
    overlay = overlay.resize((small.shape[1], small.shape[0]))
    for index in range(count):
        prediction = URGENT if index % 2 == 0 else ROUTINE
        source = tmp_path / "archive" / f"{index}.dcm"
        source.parent.mkdir(parents=True, exist_ok=True)
        radiograph(small, instance_number=index + 1).save_as(source, enforce_file_format=True)
        written = write_results(source, prediction, overlay, tmp_path / "outbox")
        with sessions.begin() as session:
            entry, _ = admit(session, Arrival(f"{index:064d}", source.name, str(source), "dicom"))
            scored = ScoreValues(
                prediction.probability,
                prediction.label.value,
                prediction.priority.value,
                prediction.priority.rank,
                prediction.threshold,
                prediction.model_version,
            )
            record_scored(session, entry, scored, str(source))
            record_written(session, entry.id, written, utcnow())
            ids.append(entry.id)
    return ids
