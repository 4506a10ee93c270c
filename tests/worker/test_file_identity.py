"""The right result on the right patient: a file replaced under its name while it is scored.

Modalities re-send under the same name. Here patient A's radiograph is admitted and claimed,
and while the model scores it the sender replaces ``scan.dcm`` with patient B's radiograph
(two ways: a new file renamed over the name, and the old file rewritten in place). The
replacement happens inside the scorer call, the one moment between reading and filing, so
the race is hit every time; everything else (the files, the intake, the pipeline, the model,
the SR/SC writer, the databases) is the real thing.

What must hold: A's row archives A's bytes; B's bytes become a row of their own with B's
patient; each original is filed exactly once; every SR and SC carries the patient of the
image it was computed from.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Status, WorklistEntry
from ingest.staging import staging_dir
from ingest.watcher import Origin
from model.prediction import Prediction
from tests.ingest.dicom_factory import native_8bit, write
from tests.models import untrained_classifier
from worker.intake import Admission, Intake
from worker.pipeline import Pipeline, Scorer
from worker.publishing import Remaining, publish_rows
from worker.settings import Settings


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return untrained_classifier()  # type: ignore[no-any-return]


class ResendingScorer:
    """The real scorer; the first time it is asked to predict, the sender re-sends."""

    def __init__(self, scorer: Scorer, resend: Callable[[], None]) -> None:
        self.scorer = scorer
        self.resend: Callable[[], None] | None = resend

    @property
    def version(self) -> str:
        return self.scorer.version

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        if self.resend is not None:
            self.resend, resend = None, self.resend
            resend()
        return self.scorer.predict(images)

    def heatmaps(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.scorer.heatmaps(images)

    def warm_up(self, batch_size: int) -> None:
        self.scorer.warm_up(batch_size)


def patient_radiograph(path: Path, reference: np.ndarray, patient_id: str) -> bytes:
    ds = native_8bit(reference)
    ds.PatientID = patient_id
    ds.PatientName = f"Patient^{patient_id}"
    return write(ds, path).read_bytes()


def rename_over(path: Path, content: bytes) -> None:
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(content)
    partial.rename(path)


def rewrite_in_place(path: Path, content: bytes) -> None:
    with path.open("r+b" if path.exists() else "wb") as stream:  # the same inode if it is there
        stream.truncate(0)
        stream.write(content)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.tf
@pytest.mark.parametrize("resend", [rename_over, rewrite_in_place])
def test_a_file_replaced_while_scored_keeps_each_patient_on_its_own_row_and_results(
    settings: Settings,
    sessions: sessionmaker[Session],
    scorer: Scorer,
    tmp_path: Path,
    resend: Callable[[Path, bytes], None],
) -> None:
    rng = np.random.default_rng(12)
    grey_a, grey_b = (rng.integers(0, 256, (256, 256), dtype=np.uint8) for _ in range(2))
    inbox = settings.inbox
    inbox.mkdir(parents=True)
    patient_a = patient_radiograph(inbox / "scan.dcm", grey_a, "PAT-A")
    patient_b = patient_radiograph(tmp_path / "b.dcm", grey_b, "PAT-B")
    intake = Intake(settings, sessions, lambda entry_id, origin: None)
    assert intake.admit(inbox / "scan.dcm", Origin.LIVE) is Admission.QUEUED
    published: list[int] = []

    resending = ResendingScorer(scorer, lambda: resend(inbox / "scan.dcm", patient_b))
    Pipeline(settings, sessions, lambda: resending, on_scored=published.extend).triage(
        1, token="task-a"
    )
    # The watcher finds the re-sent file: it is patient B's, and must become a row of its own.
    assert intake.admit(inbox / "scan.dcm", Origin.LIVE) is Admission.QUEUED
    Pipeline(settings, sessions, lambda: scorer, on_scored=published.extend).triage(
        2, token="task-b"
    )
    assert publish_rows(settings, sessions, scorer, published) == Remaining()

    with sessions() as session:
        rows = list(session.scalars(select(WorklistEntry).order_by(WorklistEntry.id)))
    assert [(r.status, r.patient_id) for r in rows] == [
        (Status.DONE, "PAT-A"),
        (Status.DONE, "PAT-B"),
    ]
    assert [r.file_sha256 for r in rows] == [
        hashlib.sha256(content).hexdigest() for content in (patient_a, patient_b)
    ]
    for row in rows:  # each row archived its own bytes, the patient it was admitted with
        archived = Path(row.archived_path or "")
        assert sha256(archived) == row.file_sha256
        assert pydicom.dcmread(archived, stop_before_pixels=True).PatientID == row.patient_id
    archive = sorted(p for p in settings.archive.rglob("*") if p.is_file())
    assert sorted(sha256(p) for p in archive) == sorted(r.file_sha256 for r in rows)
    assert [p for p in inbox.rglob("*") if p.is_file()] == []
    assert not any(staging_dir(inbox).iterdir())

    studies = {  # each result's patient, by the study of the image it was computed from
        pydicom.dcmread(row.archived_path or "").StudyInstanceUID: row.patient_id for row in rows
    }
    results = sorted(settings.outbox.glob("*.dcm"))
    assert len(results) == 4, "an SR and an SC per row"
    for path in results:
        result = pydicom.dcmread(path)
        assert result.PatientID == studies[result.StudyInstanceUID], path.name
    assert sorted(pydicom.dcmread(p).PatientID for p in results) == ["PAT-A"] * 2 + ["PAT-B"] * 2
    assert os.listdir(settings.outbox)  # the SR/SC were written, not skipped


def test_a_folder_that_took_the_files_name_is_left_alone(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    """Hostile: after admission the file is replaced by a folder of the same name holding
    other arrivals. The row fails (its file left the inbox); the folder is not taken."""
    inbox = settings.inbox
    inbox.mkdir(parents=True)
    patient_radiograph(inbox / "scan.dcm", np.zeros((64, 64), np.uint8), "PAT-A")
    intake = Intake(settings, sessions, lambda entry_id, origin: None)
    assert intake.admit(inbox / "scan.dcm", Origin.LIVE) is Admission.QUEUED
    (inbox / "scan.dcm").unlink()
    (inbox / "scan.dcm").mkdir()
    (inbox / "scan.dcm" / "other.dcm").write_bytes(b"another arrival")

    def no_model() -> Scorer:
        raise AssertionError("nothing here is scorable")

    (outcome,) = Pipeline(settings, sessions, no_model).triage(1, token="t")
    assert (outcome.status, outcome.destination) == (Status.FAILED, None)
    assert (inbox / "scan.dcm" / "other.dcm").read_bytes() == b"another arrival"
    assert not staging_dir(inbox).exists()


@pytest.mark.tf
def test_a_file_rewritten_through_an_open_handle_while_scored_is_not_filed_as_the_row(
    settings: Settings, sessions: sessionmaker[Session], scorer: Scorer, tmp_path: Path
) -> None:
    """A sender that still holds the file open rewrites the very inode the worker staged.
    Staging cannot stop that; the fingerprint check after scoring must: the old row keeps
    no result, and the new bytes go back to the inbox to become patient B's row."""
    rng = np.random.default_rng(13)
    inbox = settings.inbox
    inbox.mkdir(parents=True)
    patient_radiograph(inbox / "scan.dcm", rng.integers(0, 256, (256, 256), np.uint8), "PAT-A")
    patient_b = patient_radiograph(
        tmp_path / "b.dcm", rng.integers(0, 256, (256, 256), np.uint8), "PAT-B"
    )
    intake = Intake(settings, sessions, lambda entry_id, origin: None)
    assert intake.admit(inbox / "scan.dcm", Origin.LIVE) is Admission.QUEUED
    published: list[int] = []
    with (inbox / "scan.dcm").open("r+b") as held:  # opened before the worker staged it

        def rewrite() -> None:
            held.seek(0)
            held.truncate(0)
            held.write(patient_b)
            held.flush()

        resending = ResendingScorer(scorer, rewrite)
        (outcome,) = Pipeline(
            settings, sessions, lambda: resending, on_scored=published.extend
        ).triage(1, token="task-a")
    assert (outcome.status, outcome.destination) == (Status.FAILED, None)
    assert "rewritten" in (outcome.detail or "")
    assert (inbox / "scan.dcm").read_bytes() == patient_b, "back in the inbox, a new arrival"
    assert intake.admit(inbox / "scan.dcm", Origin.LIVE) is Admission.QUEUED
    Pipeline(settings, sessions, lambda: scorer, on_scored=published.extend).triage(2, "task-b")
    assert published == [2]
    with sessions() as session:
        rows = list(session.scalars(select(WorklistEntry).order_by(WorklistEntry.id)))
    assert [(r.status, r.patient_id) for r in rows] == [
        (Status.FAILED, "PAT-A"),
        (Status.DONE, "PAT-B"),
    ]
    archived = [p for p in settings.archive.rglob("*") if p.is_file()]
    assert [sha256(p) for p in archived] == [hashlib.sha256(patient_b).hexdigest()]
    assert pydicom.dcmread(archived[0], stop_before_pixels=True).PatientID == "PAT-B"
