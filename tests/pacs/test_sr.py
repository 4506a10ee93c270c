"""The SR, written for a real radiograph and read back with pydicom: identity and codes."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ComprehensiveSRStorage

from model.content_check import ContentVerdict
from model.prediction import Priority
from pacs import codes
from pacs.identity import NOT_FOR_DIAGNOSTIC_USE, SR_SERIES_NUMBER, ResultUIDs
from pacs.source import SourceHeaderError, read_source, reference_dataset
from pacs.sr import build_report
from tests.pacs import sr_tree
from tests.support.pacs import ACCESSION, PATIENT_ID, PATIENT_NAME, ROUTINE, STUDY_ID, URGENT


def written_report(source_file: Path, tmp_path: Path, prediction=URGENT) -> pydicom.Dataset:
    reference = read_source(source_file)
    uids = ResultUIDs.derive(
        reference.SOPInstanceUID, reference.StudyInstanceUID, prediction.model_version
    )
    path = tmp_path / "sr.dcm"
    build_report(reference, prediction, uids).save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def test_report_joins_the_source_study_in_a_series_of_its_own(source_file, tmp_path):
    source = pydicom.dcmread(source_file, stop_before_pixels=True)
    sr = written_report(source_file, tmp_path)
    assert sr.SOPClassUID == ComprehensiveSRStorage
    assert sr.Modality == "SR"
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    assert sr.SOPInstanceUID != source.SOPInstanceUID
    assert sr.SeriesNumber == SR_SERIES_NUMBER
    assert sr.InstanceNumber == 3  # the source's
    assert str(sr.PatientName) == PATIENT_NAME
    assert sr.PatientID == PATIENT_ID
    assert sr.PatientBirthDate == "20210315"
    assert sr.PatientSex == "F"
    assert sr.IssuerOfPatientID == "TEST-HOSPITAL"
    assert sr.AccessionNumber == ACCESSION
    assert sr.StudyID == STUDY_ID
    assert sr.StudyDate == source.StudyDate
    assert sr.StudyTime == source.StudyTime
    assert sr.StudyDescription == "XR CHEST PA"
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_report_codes_probability_label_priority_threshold_and_model(source_file, tmp_path):
    sr = written_report(source_file, tmp_path)
    assert sr_tree.concept(sr) == ("DCM", "126000")  # Imaging Measurement Report
    group = sr_tree.only(sr, "DCM", "125007")  # the measurement group
    finding = sr_tree.only(group, "DCM", "121071")
    assert sr_tree.coded_value(finding) == ("SCT", "233604007")  # Pneumonia
    probability = sr_tree.only(group, "DCM", "122157")
    assert sr_tree.numeric_value(probability) == pytest.approx(URGENT.probability)
    unit = probability.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
    assert (unit.CodingSchemeDesignator, unit.CodeValue) == ("UCUM", "1")
    threshold = sr_tree.only(group, "DCM", "122411")
    assert sr_tree.numeric_value(threshold) == pytest.approx(URGENT.threshold)
    label = sr_tree.only(group, "SCT", "233604007")
    assert sr_tree.coded_value(label) == ("SCT", "52101004")  # Present
    priority = sr_tree.only(group, "SCT", "260870009")
    assert sr_tree.coded_value(priority) == ("SCT", "103391001")  # Urgent, a standard code
    summary = sr_tree.only(group, "DCM", "111017")  # CAD Processing and Findings Summary
    assert sr_tree.coded_value(summary) == ("DCM", "111242")  # succeeded, with findings
    version = sr_tree.only(group, "DCM", "111003")  # Algorithm Version
    assert version.TextValue == URGENT.model_version
    procedure = sr_tree.only(sr, "DCM", "121058")
    assert sr_tree.coded_value(procedure) == ("SCT", "399208008")
    declared = {item.CodingSchemeDesignator for item in sr.CodingSchemeIdentificationSequence}
    assert codes.LOCAL_SCHEME in declared


def test_normal_label_is_coded_absent_and_routine(source_file, tmp_path):
    sr = written_report(source_file, tmp_path, ROUTINE)
    group = sr_tree.only(sr, "DCM", "125007")
    assert sr_tree.coded_value(sr_tree.only(group, "SCT", "233604007")) == ("SCT", "272519000")
    priority = sr_tree.only(group, "SCT", "260870009")
    assert sr_tree.coded_value(priority) == ("SCT", "50811001")  # Routine, a standard code
    summary = sr_tree.only(group, "DCM", "111017")
    assert sr_tree.coded_value(summary) == ("DCM", "111241")  # succeeded, without findings
    assert sr_tree.numeric_value(sr_tree.only(group, "DCM", "122157")) == pytest.approx(0.08)


def test_report_states_the_population_caveat_only_when_flagged(source_file, tmp_path):
    flagged = replace(URGENT, content=ContentVerdict.OUTSIDE_POPULATION)
    group = sr_tree.only(written_report(source_file, tmp_path, flagged), "DCM", "125007")
    caveat = sr_tree.only(group, codes.LOCAL_SCHEME, "POPULATION")
    assert sr_tree.coded_value(caveat) == (codes.LOCAL_SCHEME, "OUTSIDE")
    for plain in (URGENT, replace(URGENT, content=ContentVerdict.IN_POPULATION)):
        group = sr_tree.only(written_report(source_file, tmp_path, plain), "DCM", "125007")
        assert sr_tree.find(group, codes.LOCAL_SCHEME, "POPULATION") == []


def test_report_says_research_unverified_not_for_diagnostic_use(source_file, tmp_path):
    sr = written_report(source_file, tmp_path)
    assert NOT_FOR_DIAGNOSTIC_USE in sr.SeriesDescription
    assert len(sr.SeriesDescription) <= 64
    assert sr.ContentQualification == "RESEARCH"
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.PreliminaryFlag == "PRELIMINARY"
    assert sr.CompletionFlag == "COMPLETE"


def test_missing_type2_patient_attributes_become_empty(source_file, tmp_path):
    source = pydicom.dcmread(source_file, stop_before_pixels=True)
    del source.PatientName, source.StudyID, source.ReferringPhysicianName
    reference = reference_dataset(source)
    uids = ResultUIDs.derive(source.SOPInstanceUID, source.StudyInstanceUID, "v1")
    path = tmp_path / "sr.dcm"
    build_report(reference, URGENT, uids).save_as(path, enforce_file_format=True)
    sr = pydicom.dcmread(path)
    assert "PatientName" in sr and not sr.PatientName
    assert "StudyID" in sr and not sr.StudyID
    assert sr.PatientID == PATIENT_ID


def test_source_without_study_instance_uid_is_refused(source_file):
    source = pydicom.dcmread(source_file, stop_before_pixels=True)
    del source.StudyInstanceUID
    with pytest.raises(SourceHeaderError, match="StudyInstanceUID"):
        reference_dataset(source)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy not installed")
def test_dciodvfy_finds_no_errors_in_the_report(source_file, tmp_path):
    written_report(source_file, tmp_path)
    result = subprocess.run(
        ["dciodvfy", "-new", str(tmp_path / "sr.dcm")], capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    assert "ComprehensiveSR" in output
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert not errors, "\n".join(errors)


def test_only_the_suspect_tier_keeps_a_private_code(source_file, tmp_path):
    suspect = replace(URGENT, priority=Priority.SUSPECT)
    group = sr_tree.only(written_report(source_file, tmp_path, suspect), "DCM", "125007")
    priority = sr_tree.only(group, "SCT", "260870009")
    assert sr_tree.coded_value(priority) == (codes.LOCAL_SCHEME, "SUSPECT")
    tiers = (Priority.URGENT, Priority.ROUTINE)
    assert {codes.PRIORITY_VALUES[p].scheme_designator for p in tiers} == {"SCT"}


def comments(sr: pydicom.Dataset) -> list[str]:
    return [item.TextValue for item in sr_tree.find(sr, "DCM", "121106")]


def report_for(source_file: Path, tmp_path: Path, **header: object) -> pydicom.Dataset:
    """The SR of ``source_file`` with header attributes changed (``None`` deletes one)."""
    ds = pydicom.dcmread(source_file)
    for keyword, value in header.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    changed = tmp_path / "changed.dcm"
    ds.save_as(changed, enforce_file_format=True)
    return written_report(changed, tmp_path)


@pytest.mark.parametrize(
    ("header", "caveat"),
    [
        ({"PatientAge": None, "PatientBirthDate": None}, "Patient age unknown"),
        ({"PatientAge": None, "PatientBirthDate": "", "StudyDate": "20240101"}, "unknown"),
        ({"PatientAge": "034Y"}, "Patient age 34.0 years is outside the training population"),
        ({"PatientAge": "006M"}, "Patient age 0.5 years is outside"),
        ({"PatientAge": None, "PatientBirthDate": "19800101"}, "years is outside"),
        ({"PatientAge": "006Y"}, "Patient age 6.0 years is outside"),
    ],
    ids=["no-age", "empty-birth-date", "adult", "infant", "adult-by-birth-date", "six"],
)
def test_report_carries_the_age_caveat_when_the_age_is_missing_or_outside_1_to_5(
    source_file, tmp_path, header, caveat
):
    sr = report_for(source_file, tmp_path, **header)
    [text] = comments(sr)
    assert caveat in text
    assert "trained on children aged 1-5 years; the probability may not hold" in text


@pytest.mark.parametrize(
    "header",
    [{"PatientAge": "003Y"}, {"PatientAge": "012M"}, {"PatientAge": None}],
    ids=["three", "one-by-months", "by-birth-date"],
)
def test_report_has_no_age_caveat_inside_the_training_range(source_file, tmp_path, header):
    # the fixture's birth date 2021-03-15 and study date make a child of 1-5 years
    assert comments(report_for(source_file, tmp_path, **header)) == []
