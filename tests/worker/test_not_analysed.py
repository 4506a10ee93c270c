"""The PACS learns about every film it sent (issue 19, part 4): a DICOM whose header makes it
the device's to read (CR/DX frontal chest) but that was not scored gets a "not analysed" SR
with the reason in words, tracked for delivery like any result; a file that is not the
device's to read (a lateral, a CT, a hand, DX for processing) gets nothing. Real files
through the real intake and pipeline (rejections need no model), then the results task."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import ResultKind, ResultObject, ResultState, Status, WorklistEntry
from db.worklist import get_entry
from ingest.errors import reason_in_words
from ingest.watcher import Origin
from pacs import codes
from pacs.identity import SR_SERIES_DESCRIPTION, ResultUIDs
from pacs.not_analysed import is_device_to_read, words_for
from tests.corpus import cr_dicom, ct_dicom, dataset_jpegs, lateral_dicom
from tests.fakes import FakeScorer
from tests.ingest.dicom_factory import base_dataset, set_pixels, write
from tests.pacs import sr_tree
from tests.support.worklist import record_unscored
from worker.intake import Intake
from worker.pipeline import Pipeline, Scorer
from worker.publishing import NOT_WRITTEN, publish_rows
from worker.settings import Settings


def _no_model() -> Scorer:
    raise AssertionError("the model must not be loaded for files that cannot be scored")


def blank_pa(path: Path) -> Path:
    ds = set_pixels(base_dataset(64, 64), np.full((64, 64), 128, dtype=np.uint8))
    ds.PatientID = "BLANK-1"
    return write(ds, path)


def truncated_pa(jpeg: Path, path: Path) -> Path:
    whole = cr_dicom(jpeg, path.with_name("whole.tmp"))
    data = whole.read_bytes()
    whole.unlink()
    path.write_bytes(data[: len(data) - 5000])  # the header whole, the pixels cut short
    return path


FILES = {
    # the device's to read, not scored: a "not analysed" SR each
    "blank.dcm": ("blank_image", True),
    "truncated.dcm": ("truncated", True),
    "multiframe.dcm": ("multi_frame", True),
    "no-view.dcm": ("blank_image", True),  # no View Position: scored as frontal, so the device's
    # not the device's to read: nothing
    "lateral.dcm": ("lateral_view", False),
    "ct.dcm": ("wrong_sop_class", False),
    "hand.dcm": ("not_chest", False),
    "processing.dcm": ("dx_for_processing", False),
}


@pytest.fixture
def unscored(settings: Settings, sessions: sessionmaker[Session]) -> dict[str, int]:
    """Each file of :data:`FILES` admitted and triaged by the real pipeline; row ids by name,
    after checking that the pipeline handed every one of them to ``on_unscored``."""
    inbox = settings.inbox
    inbox.mkdir(parents=True)
    jpegs = dataset_jpegs(4)
    blank_pa(inbox / "blank.dcm")
    truncated_pa(jpegs[0], inbox / "truncated.dcm")
    cr_dicom(jpegs[1], inbox / "multiframe.dcm", NumberOfFrames=2)
    no_view = blank_pa(inbox / "no-view.dcm")
    ds = pydicom.dcmread(no_view)
    del ds.ViewPosition
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.PixelData = np.full((64, 64), 90, dtype=np.uint8).tobytes()
    ds.save_as(no_view, enforce_file_format=True)
    lateral_dicom(jpegs[2], inbox / "lateral.dcm")
    ct_dicom(inbox / "ct.dcm")
    cr_dicom(jpegs[3], inbox / "hand.dcm", BodyPartExamined="HAND")
    cr_dicom(
        jpegs[3],
        inbox / "processing.dcm",
        SOPClassUID="1.2.840.10008.5.1.4.1.1.1.1.1",
        Modality="DX",
    )
    sent: list[int] = []
    intake = Intake(settings, sessions, lambda ids, origin: sent.extend(ids))
    for path in sorted(inbox.iterdir()):
        intake.admit(path, Origin.LIVE)
    handed: list[int] = []
    pipeline = Pipeline(settings, sessions, _no_model, on_unscored=handed.extend)
    for index, entry_id in enumerate(sent):
        pipeline.triage(entry_id, token=f"task-{index}")
    with sessions() as session:
        rows = {r.source_name: r for r in session.scalars(select(WorklistEntry))}
    assert {name: rows[name].reason for name in FILES} == {
        name: reason for name, (reason, _) in FILES.items()
    }
    assert sorted(handed) == sorted(r.id for r in rows.values())
    return {name: row.id for name, row in rows.items()}


def objects(sessions: sessionmaker[Session]) -> dict[int, list[ResultObject]]:
    found: dict[int, list[ResultObject]] = {}
    with sessions() as session:
        for obj in session.scalars(select(ResultObject)):
            found.setdefault(obj.entry_id, []).append(obj)
    return found


def test_each_unscored_film_of_the_device_gets_a_not_analysed_sr_and_no_other_file_does(
    settings: Settings, sessions: sessionmaker[Session], unscored: dict[str, int]
) -> None:
    scorer = FakeScorer()
    assert publish_rows(settings, sessions, scorer, list(unscored.values())).pending == []
    found = objects(sessions)
    expected = {unscored[name] for name, (_, devices) in FILES.items() if devices}
    assert set(found) == expected
    for name, (reason, devices) in FILES.items():
        if not devices:
            continue
        [obj] = found[unscored[name]]
        assert (obj.kind, obj.state, obj.attempts) == (ResultKind.SR, ResultState.PENDING, 0)
        sr = pydicom.dcmread(obj.path or "")
        with sessions() as session:
            entry = get_entry(session, unscored[name])
            assert entry is not None
            original = pydicom.dcmread(entry.archived_path or "", stop_before_pixels=True)
        assert sr.SOPInstanceUID == obj.sop_instance_uid
        assert sr.StudyInstanceUID == original.StudyInstanceUID  # into the source study
        assert sr.PatientID == original.PatientID
        assert sr.SeriesDescription == SR_SERIES_DESCRIPTION
        scored_uids = ResultUIDs.derive(
            original.SOPInstanceUID, original.StudyInstanceUID, scorer.version
        )
        assert sr.SeriesInstanceUID == scored_uids.sr_series  # beside the scored SRs
        assert sr.SOPInstanceUID != scored_uids.sr_instance  # never the scored SR itself
        summary = sr_tree.only(sr, "DCM", "111017")
        assert sr_tree.coded_value(summary) == ("DCM", "111245")  # no algorithm succeeded
        [comment] = sr_tree.find(sr, "DCM", "121106")
        assert comment.TextValue == words_for(reason)
        assert comment.TextValue.startswith(f"{reason_in_words(reason)} (reason code {reason})")
        assert comment.TextValue.startswith("Not analysed: ")
        assert sr_tree.find(sr, "DCM", "122157") == []  # no probability
        assert sr_tree.find(sr, "SCT", "260870009") == []  # no priority
        referenced = sr.CurrentRequestedProcedureEvidenceSequence[0]
        image = referenced.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert image.ReferencedSOPInstanceUID == original.SOPInstanceUID
    # a redelivered results task rewrites the same objects: nothing new, nothing twice
    publish_rows(settings, sessions, scorer, list(unscored.values()))
    assert {k: len(v) for k, v in objects(sessions).items()} == dict.fromkeys(expected, 1)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy not installed")
def test_dciodvfy_finds_no_errors_in_a_not_analysed_sr(
    settings: Settings, sessions: sessionmaker[Session], unscored: dict[str, int]
) -> None:
    publish_rows(settings, sessions, FakeScorer(), [unscored["truncated.dcm"]])
    [obj] = objects(sessions)[unscored["truncated.dcm"]]
    result = subprocess.run(["dciodvfy", "-new", obj.path or ""], capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert "ComprehensiveSR" in output
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        ("not_chest_radiograph", Status.REJECTED),
        ("outside_training_population", Status.REJECTED),
        ("processing_error", Status.FAILED),
        ("too_many_attempts", Status.FAILED),
    ],
)
def test_the_models_and_the_workers_reasons_get_their_words(
    settings: Settings, sessions: sessionmaker[Session], unscored: dict[str, int], reason, status
) -> None:
    """The content check's refusal, the population reason (issue-reasons adds it), and the
    worker's own failures, on a film that is the device's (the model is not needed here)."""
    row = unscored["blank.dcm"]
    with sessions.begin() as session:
        entry = get_entry(session, row)
        assert entry is not None
        record_unscored(session, entry, status, reason, "detail", entry.archived_path or "")
    publish_rows(settings, sessions, FakeScorer(), [row])
    [obj] = objects(sessions)[row]
    [comment] = sr_tree.find(pydicom.dcmread(obj.path or ""), "DCM", "121106")
    assert reason_in_words(reason) in comment.TextValue
    assert f"reason code {reason}" in comment.TextValue


def test_settings_turn_either_kind_of_result_off(
    settings: Settings, sessions: sessionmaker[Session], unscored: dict[str, int], tmp_path
) -> None:
    off = settings.model_copy(update={"results_not_analysed": False})
    publish_rows(off, sessions, FakeScorer(), list(unscored.values()))
    assert objects(sessions) == {}
    # scored results off: a scored DICOM gets its overlay for the page, and no SR/SC
    from db.worklist import ScoreValues
    from tests.support.worklist import record_scored

    scored_file = settings.archive / "scored.dcm"
    scored_file.parent.mkdir(parents=True, exist_ok=True)
    cr_dicom(dataset_jpegs(1)[0], scored_file)
    row = unscored["hand.dcm"]
    with sessions.begin() as session:
        entry = get_entry(session, row)
        assert entry is not None
        entry.status = Status.QUEUED
        record_scored(
            session,
            entry,
            ScoreValues(0.9, "pneumonia", "urgent", 0, 0.5, "fake-1.0"),
            str(scored_file),
        )
    quiet = settings.model_copy(update={"results_scored": False})
    publish_rows(quiet, sessions, FakeScorer(), [row])
    assert objects(sessions) == {}
    assert any(settings.overlays.iterdir())


def test_a_not_analysed_sr_that_cannot_be_written_is_failed_in_words(
    settings: Settings, sessions: sessionmaker[Session], unscored: dict[str, int]
) -> None:
    settings.outbox.parent.mkdir(parents=True, exist_ok=True)
    settings.outbox.write_text("a file where the outbox folder should be")
    row = unscored["blank.dcm"]
    publish_rows(settings, sessions, FakeScorer(), [row])
    [obj] = objects(sessions)[row]
    assert (obj.kind, obj.state, obj.reason) == (ResultKind.SR, ResultState.FAILED, NOT_WRITTEN)


@pytest.mark.parametrize(
    ("changes", "devices"),
    [
        ({}, True),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.1", "Modality": "DX"}, True),
        ({"BodyPartExamined": None}, True),
        ({"BodyPartExamined": "THORAX"}, True),
        ({"ViewPosition": "AP"}, True),
        ({"ViewPosition": "RL"}, False),
        ({"ViewPosition": "LAO"}, False),
        ({"BodyPartExamined": "SKULL"}, False),
        ({"Modality": "CT"}, False),
        ({"PresentationIntentType": "FOR PROCESSING"}, False),
    ],
)
def test_the_device_reads_frontal_chest_cr_and_dx_by_the_header(changes, devices, tmp_path):
    from ingest.readers import read_header

    ds = set_pixels(base_dataset(8, 8), np.zeros((8, 8), dtype=np.uint8))
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    if "SOPClassUID" in changes:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    assert is_device_to_read(read_header(write(ds, tmp_path / "x.dcm"))) is devices


def test_the_words_table_covers_every_reason_a_film_of_the_device_can_have() -> None:
    from ingest.errors import Reason
    from pacs.not_analysed import NOT_THE_DEVICES

    for reason in Reason:
        if reason not in NOT_THE_DEVICES:
            assert words_for(reason.value).startswith("Not analysed: "), reason
    assert "reason code mystery" in words_for("mystery")
    assert codes.NOT_ANALYSED.value == "111245"


@pytest.mark.parametrize("content", ["random", "header-cut", "deflate-bomb"])
def test_a_hostile_quarantined_file_gets_no_sr_and_breaks_nothing(
    settings: Settings, sessions: sessionmaker[Session], unscored: dict[str, int], content, tmp_path
) -> None:
    """The not-analysed path re-reads the quarantined original: whatever it has become, the
    row gets no SR (or one that fails in words), and its batch-mates theirs."""
    from tests.reliability.bombs import deflate_bomb

    victim, mate = unscored["blank.dcm"], unscored["truncated.dcm"]
    with sessions() as session:
        entry = get_entry(session, victim)
        assert entry is not None
        path = Path(entry.archived_path or "")
    if content == "random":
        path.write_bytes(np.random.default_rng(3).bytes(5000))
    elif content == "header-cut":
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(deflate_bomb(tmp_path / "bomb.dcm", 256 * 1024**2).read_bytes())
    publish_rows(settings, sessions, FakeScorer(), [victim, mate])
    found = objects(sessions)
    assert victim not in found or all(o.state is ResultState.FAILED for o in found[victim])
    assert [o.state for o in found[mate]] == [ResultState.PENDING]
