"""Adult chest radiographs from real equipment, through the real pipeline and the shipped
model: every encoding of the film is ``outside_training_population`` when the header gives
an adult's age (not analysed, quarantined with that reason), never ``not_chest_radiograph``;
without an age the pixels alone keep it a chest film (scored, flagged). Non-chest pixels in
an adult's chest header are still named for what they are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Status, WorklistEntry
from ingest.watcher import Origin
from tests import adults
from tests.corpus import cr_dicom, dataset_jpegs
from tests.ingest.dicom_factory import base_dataset, set_pixels, write
from tests.nonchest import nonchest_images, to_uint8
from worker.intake import Intake
from worker.pipeline import Pipeline
from worker.settings import Settings

pytestmark = [
    pytest.mark.tf,
    pytest.mark.skipif(not adults.available(), reason="pydicom-data is not installed"),
]


@pytest.fixture(scope="module")
def classifier():  # type: ignore[no-untyped-def]
    from model.predict import Classifier

    return Classifier.load()


def _triage(
    settings: Settings, sessions: sessionmaker[Session], classifier
) -> dict[str, WorklistEntry]:  # type: ignore[no-untyped-def]
    sent: list[int] = []
    intake = Intake(settings, sessions, lambda entry_ids, origin: sent.extend(entry_ids))
    for path in sorted(settings.inbox.iterdir()):
        intake.admit(path, Origin.LIVE)
    pipeline = Pipeline(settings, sessions, lambda: classifier)
    for entry_id in sent:
        pipeline.triage(entry_id, token=f"task-{entry_id}")
    with sessions() as session:
        return {r.source_name: r for r in session.scalars(select(WorklistEntry))}


def test_an_adult_chest_film_in_every_encoding_is_outside_the_population_not_analysed(
    settings: Settings, sessions: sessionmaker[Session], classifier
) -> None:  # type: ignore[no-untyped-def]
    files = adults.adult_chest_files(settings.inbox)  # the header's birth date: 1940
    assert len(files) == 7
    rows = _triage(settings, sessions, classifier)
    for name in files:
        row = rows[name]
        assert (row.status, row.reason) == (Status.REJECTED, "outside_training_population"), name
        assert row.probability is None and row.priority is None  # not analysed
        filed = Path(row.archived_path or "")
        assert filed.parent.name == "outside_training_population"
        sidecar = json.loads(filed.with_name(filed.name + ".json").read_text())
        assert sidecar["reason"] == "outside_training_population"
        assert "adult" in sidecar["detail"] and "children aged 1-5" in sidecar["detail"]


def test_without_an_age_the_adult_film_is_scored_as_a_chest_film_and_flagged(
    settings: Settings, sessions: sessionmaker[Session], classifier
) -> None:  # type: ignore[no-untyped-def]
    """The pixels alone cannot call it an adult (it sits in the children's far tail), but they
    never call it something other than a chest radiograph."""
    files = adults.adult_chest_files(settings.inbox, PatientBirthDate=None)
    rows = _triage(settings, sessions, classifier)
    for name in files:
        row = rows[name]
        assert row.reason != "not_chest_radiograph", name
        assert row.status is Status.DONE, name
        assert "outside_training_population" in row.flag_list, name


def test_non_chest_pixels_in_an_adult_chest_header_are_not_a_chest_radiograph(
    settings: Settings, sessions: sessionmaker[Session], classifier
) -> None:  # type: ignore[no-untyped-def]
    """The pixels are judged before the age: the reason never calls a CT slice a chest film."""
    settings.inbox.mkdir(parents=True)
    for name in ("pydicom-CT_small", "skimage-page", "pydicom-RG3_UNCR"):
        grey = dict(nonchest_images()).get(name)
        if grey is None:
            continue
        pixels = to_uint8(grey)
        ds = set_pixels(base_dataset(*pixels.shape), pixels)
        ds.PatientAge = "052Y"
        write(ds, settings.inbox / f"{name}.dcm")
    rows = _triage(settings, sessions, classifier)
    assert len(rows) >= 2
    for row in rows.values():
        assert (row.status, row.reason) == (Status.REJECTED, "not_chest_radiograph")


def test_children_outside_one_to_five_are_still_scored_and_flagged(
    settings: Settings, sessions: sessionmaker[Session], classifier
) -> None:  # type: ignore[no-untyped-def]
    settings.inbox.mkdir(parents=True)
    chest = dataset_jpegs(1)[0]
    for age in ("008Y", "016Y", "017Y"):
        cr_dicom(chest, settings.inbox / f"child-{age}.dcm", PatientAge=age)
    cr_dicom(chest, settings.inbox / "adult-018Y.dcm", PatientAge="018Y")
    rows = _triage(settings, sessions, classifier)
    for age in ("008Y", "016Y", "017Y"):
        row = rows[f"child-{age}.dcm"]
        assert row.status is Status.DONE
        assert "outside_training_population" in row.flag_list
    assert rows["adult-018Y.dcm"].reason == "outside_training_population"


def test_the_predict_command_names_the_adult_film_s_reason(tmp_path: Path) -> None:
    files = adults.adult_chest_files(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "predict", "--json", str(files["RG1_J2KI.dcm"])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    (result,) = json.loads(done.stdout)
    assert (result["status"], result["reason"]) == ("rejected", "outside_training_population")
