"""Header fields: identity, age from Patient's Age or birth date, dates, lenient parsing."""

from __future__ import annotations

from datetime import date, time
from pathlib import Path

import numpy as np
import pytest

from ingest import IngestError, Reason, read_header
from ingest.metadata import parse_as, parse_da, parse_tm
from tests.ingest.dicom_factory import native_8bit, write

TINY = np.zeros((4, 4), dtype=np.uint8)


def test_header_fields_are_read_without_decoding_pixels(tmp_path: Path) -> None:
    ds = native_8bit(TINY)
    path = write(ds, tmp_path / "a.dcm")
    md = read_header(path)
    assert md.sop_instance_uid == ds.SOPInstanceUID
    assert md.study_instance_uid == ds.StudyInstanceUID
    assert md.series_instance_uid == ds.SeriesInstanceUID
    assert (md.accession_number, md.patient_id) == ("ACC0001", "TEST-0001")
    assert (md.modality, md.body_part_examined, md.view_position) == ("CR", "CHEST", "PA")
    assert md.patient_age_years == pytest.approx(3.0)
    assert md.patient_sex == "F"
    assert md.study_date == date(2024, 1, 31) and md.study_time == time(10, 15, 30)
    assert (md.institution_name, md.manufacturer) == ("Test Hospital", "cxr-triage tests")
    assert md.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert (md.rows, md.columns) == (4, 4)


def test_age_from_birth_date_when_patients_age_is_absent(tmp_path: Path) -> None:
    ds = native_8bit(TINY)
    del ds.PatientAge
    ds.PatientBirthDate = "20200731"
    md = read_header(write(ds, tmp_path / "a.dcm"))
    assert md.patient_age_years == pytest.approx(3.5, abs=0.01)


def test_uid_longer_than_64_characters_is_corrupt(tmp_path: Path) -> None:
    ds = native_8bit(TINY)
    ds.SOPInstanceUID = "1." + "2" * 70
    with pytest.raises(IngestError) as caught:
        read_header(write(ds, tmp_path / "a.dcm"))
    assert caught.value.reason is Reason.CORRUPT
    assert "2222" not in caught.value.message


@pytest.mark.parametrize(
    ("value", "years"),
    [
        ("004Y", 4.0),
        ("018M", 1.5),
        ("052W", 0.997),
        ("010D", 0.027),
        ("4Y", 4.0),
        ("", None),
        ("abc", None),
    ],
)
def test_age_strings(value: str, years: float | None) -> None:
    result = parse_as(value)
    assert result == (pytest.approx(years, abs=0.001) if years is not None else None)


def test_dates_and_times_parse_leniently() -> None:
    assert parse_da("2024.01.31") == date(2024, 1, 31)
    assert parse_da("20241399") is None
    assert parse_tm("0930") == time(9, 30)
    assert parse_tm("235959.123") == time(23, 59, 59, 123000)
    assert parse_tm("25") is None


def test_over_long_identifiers_are_cut_to_their_vr_length(tmp_path) -> None:
    from ingest import read_header
    from tests.ingest.dicom_factory import base_dataset, set_pixels, write

    ds = set_pixels(base_dataset(8, 8), np.zeros((8, 8), dtype=np.uint8))
    ds.AccessionNumber = "A" * 40  # SH: 16 at most; non-conformant senders exist
    ds.PatientID = "P" * 90  # LO: 64 at most
    metadata = read_header(write(ds, tmp_path / "long.dcm"))
    assert metadata.accession_number == "A" * 16
    assert metadata.patient_id == "P" * 64
