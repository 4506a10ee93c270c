"""Real-world source headers: results are valid whatever the radiograph's header holds.

Each test writes a radiograph with a defect seen in the field (no Part-10 file meta, an
ISO-formatted birth date, a Latin-1 name, values no VR allows), builds the SR and SC for it
and checks what they carry; dciodvfy (dicom3tools) validates both objects where installed.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

from pacs.outbox import write_results
from pacs.source import SourceHeaderError, read_source, reference_dataset
from tests.support.pacs import URGENT, radiograph

needs_dciodvfy = pytest.mark.skipif(
    shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy not installed"
)


def dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True)
    return [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]


def write_with(
    tmp_path: Path,
    reference_grey: np.ndarray,
    change: Callable[[Dataset], None],
    *,
    file_meta: bool = True,
) -> Path:
    """A radiograph with ``change`` applied, written without pydicom's value checks (the
    invalid values are the point)."""
    ds = radiograph(reference_grey[::4, ::4].copy(), instance_number=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config.settings.writing_validation_mode = config.IGNORE
        try:
            change(ds)
            path = tmp_path / "inbox" / "source.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            if file_meta:
                ds.save_as(path, enforce_file_format=True)
            else:  # a raw dataset: no preamble, no (0002,xxxx) group, implicit VR
                raw = Dataset()
                raw.update(ds)
                dcmwrite(path, raw, implicit_vr=True, little_endian=True)
        finally:
            config.settings.writing_validation_mode = config.WARN
    return path


def results_for(source: Path, tmp_path: Path, overlay) -> tuple[Dataset, Dataset, list[Path]]:
    paths = [Path(o.path) for o in write_results(source, URGENT, overlay, tmp_path / "outbox")]
    return pydicom.dcmread(paths[0]), pydicom.dcmread(paths[1]), paths


def test_a_source_without_file_meta_gets_valid_results(tmp_path, reference_grey, overlay):
    source = write_with(tmp_path, reference_grey, lambda ds: None, file_meta=False)
    assert source.read_bytes()[128:132] != b"DICM"
    sr, sc, _ = results_for(source, tmp_path, overlay)
    original = pydicom.dcmread(source, force=True)
    assert sr.StudyInstanceUID == sc.StudyInstanceUID == original.StudyInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert (
        evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        == original.SOPInstanceUID
    )
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID


def test_iso_dates_and_times_are_repaired_not_copied(tmp_path, reference_grey, overlay):
    def iso(ds: Dataset) -> None:
        ds.PatientBirthDate = "2021-01-15"
        ds.StudyDate = "2024.01.31"  # ACR-NEMA style
        ds.StudyTime = "10:30:00"

    sr, sc, _ = results_for(write_with(tmp_path, reference_grey, iso), tmp_path, overlay)
    for result in (sr, sc):
        assert result.PatientBirthDate == "20210115"
        assert result.StudyDate == "20240131"
        assert result.StudyTime == "103000"


def test_values_no_repair_can_save_are_left_out(tmp_path, reference_grey, overlay):
    def invalid(ds: Dataset) -> None:
        ds.PatientBirthDate = "2021-13-45"  # no such month or day
        ds.StudyTime = "half past ten"
        ds.PatientSex = "MALE"  # not one of M, F, O
        ds.PatientName = "A" * 70 + "^Anna"  # a component longer than 64
        ds.PatientAge = "5Y"  # AS is nnnY
        ds["PatientWeight"] = DataElement(0x00101030, "DS", "16")
        ds["PatientWeight"]._value = "sixteen"  # pydicom refuses to make such a DS itself
        ds.ReferringPhysicianName = "Referrer\x07^Rita"  # a control character: repaired

    sr, sc, _ = results_for(write_with(tmp_path, reference_grey, invalid), tmp_path, overlay)
    for result in (sr, sc):
        for keyword in ("PatientBirthDate", "StudyTime", "PatientSex", "PatientName"):
            assert keyword in result and not result[keyword].value, keyword  # Type 2: empty
        assert "PatientAge" not in result and "PatientWeight" not in result
        assert str(result.ReferringPhysicianName) == "Referrer^Rita"


def test_a_latin1_name_arrives_in_utf8(tmp_path, reference_grey, overlay):
    def latin1(ds: Dataset) -> None:
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName = "Müller^Jürgen"
        ds.StudyDescription = "Thorax ap/pa, Säugling"

    sr, sc, _ = results_for(write_with(tmp_path, reference_grey, latin1), tmp_path, overlay)
    for result in (sr, sc):
        assert result.SpecificCharacterSet == "ISO_IR 192"
        assert str(result.PatientName) == "Müller^Jürgen"
        assert result.StudyDescription == "Thorax ap/pa, Säugling"


def test_an_unknown_character_set_still_gives_results(tmp_path, reference_grey, overlay):
    def unknown(ds: Dataset) -> None:
        ds.SpecificCharacterSet = "ISO_IR 999"  # no such character set
        ds.PatientName = "Doe^Jane"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that it falls back to the default
        sr, sc, _ = results_for(write_with(tmp_path, reference_grey, unknown), tmp_path, overlay)
    assert str(sr.PatientName) == str(sc.PatientName) == "Doe^Jane"
    assert "SpecificCharacterSet" not in sr  # all ASCII: the default repertoire


def test_a_lower_case_body_part_is_upper_cased(tmp_path, reference_grey, overlay):
    def lower(ds: Dataset) -> None:
        ds.BodyPartExamined = "chest"
        del ds.Modality

    _, sc, _ = results_for(write_with(tmp_path, reference_grey, lower), tmp_path, overlay)
    assert sc.BodyPartExamined == "CHEST"


@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"])
def test_a_source_with_an_invalid_uid_is_refused_naming_the_tag(tmp_path, reference_grey, keyword):
    def broken(ds: Dataset) -> None:
        setattr(ds, keyword, "1.2.3.secret-value")

    source = write_with(tmp_path, reference_grey, broken)
    with pytest.raises(SourceHeaderError, match=f"{keyword} is not a valid UID") as caught:
        read_source(source)
    assert "secret" not in str(caught.value)


def test_a_source_with_an_empty_uid_is_refused(tmp_path, reference_grey):
    source = write_with(tmp_path, reference_grey, lambda ds: setattr(ds, "StudyInstanceUID", ""))
    with pytest.raises(SourceHeaderError, match=r"\(0020,000D\) StudyInstanceUID"):
        read_source(source)


def test_a_truncated_source_is_refused_with_the_ingest_reason(tmp_path, reference_grey):
    source = write_with(tmp_path, reference_grey, lambda ds: None)
    source.write_bytes(source.read_bytes()[:200])
    with pytest.raises(SourceHeaderError, match="not a readable DICOM"):
        read_source(source)


def test_padding_on_uids_is_stripped_not_refused(source_file):
    source = pydicom.dcmread(source_file, stop_before_pixels=True)
    uid = source.SOPInstanceUID
    source["SOPInstanceUID"].value = f"{uid}\x00"
    assert reference_dataset(source).SOPInstanceUID == uid


@needs_dciodvfy
@pytest.mark.parametrize("file_meta", [True, False])
def test_dciodvfy_finds_no_errors_for_a_source_full_of_defects(
    tmp_path, reference_grey, overlay, file_meta
):
    def defects(ds: Dataset) -> None:
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName = "Müller^Jürgen"
        ds.PatientBirthDate = "2021-01-15"
        ds.StudyTime = "10:30"
        ds.PatientSex = "male"
        ds.PatientAge = "3 years"
        ds.BodyPartExamined = "Chest"
        ds.AccessionNumber = "ACC\x1b4242"
        ds.InstitutionName = "X" * 80  # LO holds at most 64

    source = write_with(tmp_path, reference_grey, defects, file_meta=file_meta)
    _, _, paths = results_for(source, tmp_path, overlay)
    for path in paths:
        assert dciodvfy_errors(path) == [], path.name
