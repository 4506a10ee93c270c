"""The content check in the pipeline, with the real shipped model and real files: a photograph
and CT pixels in a chest header are rejected ``not_chest_radiograph`` and quarantined; a
chest film with an adult's age in its header is ``outside_training_population``, not
analysed; every outcome is counted for the drift watch, and ``cxr-triage status`` reports
it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import DriftCount, Status, WorklistEntry
from db.reading import reading_list
from ingest.watcher import Origin
from tests.corpus import cr_dicom, dataset_jpegs
from tests.ingest.dicom_factory import base_dataset, set_pixels, write
from tests.nonchest import nonchest_images, to_uint8
from tests.processes import cli, service_env
from worker.intake import Intake
from worker.pipeline import Pipeline
from worker.settings import Settings

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def classifier():  # type: ignore[no-untyped-def]
    from model.predict import Classifier

    return Classifier.load()


def _nonchest(name: str) -> np.ndarray:
    return to_uint8(dict(nonchest_images())[name])


@pytest.fixture
def triaged(
    settings: Settings, sessions: sessionmaker[Session], classifier
) -> dict[str, WorklistEntry]:  # type: ignore[no-untyped-def]
    inbox = settings.inbox
    inbox.mkdir(parents=True)
    chest, other_chest = dataset_jpegs(2)
    Image.fromarray(_nonchest("skimage-brick"), mode="L").save(inbox / "brick.png")
    ct = _nonchest("pydicom-CT_small")
    write(set_pixels(base_dataset(*ct.shape), ct), inbox / "ct-in-chest-header.dcm")
    (inbox / "chest.jpeg").write_bytes(chest.read_bytes())
    cr_dicom(other_chest, inbox / "adult.dcm", PatientAge="045Y")
    sent: list[int] = []
    intake = Intake(settings, sessions, lambda entry_ids, origin: sent.extend(entry_ids))
    for path in sorted(inbox.iterdir()):
        intake.admit(path, Origin.LIVE)
    Pipeline(settings, sessions, lambda: classifier).triage(sent[0], token="task-1")
    with sessions() as session:
        return {r.source_name: r for r in session.scalars(select(WorklistEntry))}


def test_non_chest_images_are_rejected_and_quarantined_with_their_reason(
    triaged: dict[str, WorklistEntry],
) -> None:
    for name in ("brick.png", "ct-in-chest-header.dcm"):
        row = triaged[name]
        assert (row.status, row.reason) == (Status.REJECTED, "not_chest_radiograph")
        assert row.probability is None and row.priority is None  # never silently scored
        archived = Path(row.archived_path or "")
        assert archived.is_file() and archived.parent.name == "not_chest_radiograph"
        sidecar = json.loads(archived.with_name(archived.name + ".json").read_text())
        assert sidecar["reason"] == "not_chest_radiograph"
        assert "frontal chest radiograph" in sidecar["detail"]


def test_a_child_is_scored_and_an_adult_is_not_analysed(
    triaged: dict[str, WorklistEntry],
) -> None:
    child, adult = triaged["chest.jpeg"], triaged["adult.dcm"]
    assert child.status is Status.DONE
    assert "outside_training_population" not in child.flag_list
    assert "content_unchecked" not in child.flag_list
    assert (adult.status, adult.reason) == (Status.REJECTED, "outside_training_population")
    assert adult.probability is None and adult.priority is None


def test_refused_films_are_read_with_suspect_never_below_routine(
    triaged: dict[str, WorklistEntry], sessions: sessionmaker[Session]
) -> None:
    """A film the content check refuses might be a sick child's (issue 19): unknown risk,
    read in the middle tier in arrival order, never behind the films the model called
    routine."""
    with sessions() as session:
        entries = reading_list(session).entries
    tier = {entry.leading.source_name: entry.tier for entry in entries}
    assert set(tier) == {"chest.jpeg", "adult.dcm", "brick.png", "ct-in-chest-header.dcm"}
    assert tier["brick.png"] == tier["ct-in-chest-header.dcm"] == tier["adult.dcm"] == "suspect"
    ranks = [("urgent", "suspect", "routine").index(entry.tier) for entry in entries]
    assert ranks == sorted(ranks)


def test_every_outcome_is_counted_for_the_drift_watch(
    triaged: dict[str, WorklistEntry], sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        counts = {(c.measure, c.bin): c.count for c in session.scalars(select(DriftCount))}
    by_measure: dict[str, int] = {}
    for (measure, _), count in counts.items():
        by_measure[measure] = by_measure.get(measure, 0) + count
    assert by_measure == {"score": 1, "priority": 1, "content": 4, "distance": 4}
    assert counts[("content", 2)] == 2  # the two non-chest images


def test_status_shows_the_drift_line(
    triaged: dict[str, WorklistEntry], settings: Settings, tmp_path: Path
) -> None:
    env = service_env(tmp_path, settings.database_url, None)
    result = cli(["status", "--json"], env)
    assert result.returncode == 0, result.stderr
    drift = json.loads(result.stdout)["drift"]
    # cases are scored rows: the child (the adult was not analysed)
    assert drift["cases"] == 1 and drift["not_chest_radiograph"] == 2
    assert drift["reference"] == "validation" and drift["warnings"] == []
    text = cli(["status"], env).stdout
    assert "drift (7 d, 1 cases vs validation)" in text


def test_a_constant_image_is_never_scored(
    settings: Settings,
    sessions: sessionmaker[Session],
    classifier,  # type: ignore[no-untyped-def]
) -> None:
    """Refused before the model (``blank_image``, ingest) or by the content check."""
    settings.inbox.mkdir(parents=True)
    Image.fromarray(np.full((256, 256), 128, np.uint8), mode="L").save(settings.inbox / "grey.png")
    sent: list[int] = []
    Intake(settings, sessions, lambda entry_ids, origin: sent.extend(entry_ids)).admit(
        settings.inbox / "grey.png", Origin.LIVE
    )
    Pipeline(settings, sessions, lambda: classifier).triage(sent[0], token="t")
    with sessions() as session:
        row = session.get(WorklistEntry, sent[0])
        assert row is not None and row.status is Status.REJECTED
        assert row.reason in {"blank_image", "not_chest_radiograph"}
        assert row.probability is None
