"""write_results: both objects in the outbox, read back, idempotent per source and model, and
returned as the ``result_objects`` table tracks them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import ComprehensiveSRStorage, SecondaryCaptureImageStorage

from db.models import ResultKind
from pacs.outbox import write_not_analysed, write_results
from pacs.source import SourceHeaderError
from tests.support.pacs import URGENT


def test_writes_an_sr_and_an_sc_into_the_source_study(source_file, overlay, tmp_path):
    outbox = tmp_path / "outbox"
    sr_written, sc_written = write_results(source_file, URGENT, overlay, outbox)
    sr_path, sc_path = Path(sr_written.path), Path(sc_written.path)
    source = pydicom.dcmread(source_file, stop_before_pixels=True)
    sr, sc = pydicom.dcmread(sr_path), pydicom.dcmread(sc_path)
    assert (sr.SOPClassUID, sc.SOPClassUID) == (
        ComprehensiveSRStorage,
        SecondaryCaptureImageStorage,
    )
    assert sr.StudyInstanceUID == sc.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID != sc.SeriesInstanceUID
    assert sr_path.name == f"SR_{sr.SOPInstanceUID}.dcm"
    assert sc_path.name == f"SC_{sc.SOPInstanceUID}.dcm"
    assert sorted(p.name for p in outbox.iterdir()) == sorted([sr_path.name, sc_path.name])
    assert sc.pixel_array.shape[2] == 3
    assert (sr_written.kind, sr_written.sop_instance_uid) == (ResultKind.SR, sr.SOPInstanceUID)
    assert (sc_written.kind, sc_written.sop_instance_uid) == (ResultKind.SC, sc.SOPInstanceUID)


def test_the_not_analysed_sr_is_returned_as_written(source_file, tmp_path):
    reference = pydicom.dcmread(source_file, stop_before_pixels=True)
    written = write_not_analysed(reference, "no usable picture", "sepcnn-test-1.0", tmp_path)
    report = pydicom.dcmread(written.path)
    assert written.kind is ResultKind.SR
    assert written.sop_instance_uid == report.SOPInstanceUID
    assert report.StudyInstanceUID == reference.StudyInstanceUID
    assert Path(written.path).name == f"SR_{report.SOPInstanceUID}.dcm"


def test_a_redelivered_task_rewrites_the_same_objects(source_file, overlay, tmp_path):
    outbox = tmp_path / "outbox"
    first = write_results(source_file, URGENT, overlay, outbox)
    again = write_results(source_file, URGENT, overlay, outbox)
    assert first == again
    assert len(list(outbox.iterdir())) == 2


def test_a_new_model_version_makes_new_objects_beside_the_old(source_file, overlay, tmp_path):
    outbox = tmp_path / "outbox"
    old = write_results(source_file, URGENT, overlay, outbox)
    newer = dataclasses.replace(URGENT, model_version="sepcnn-test-2.0")
    new = write_results(source_file, newer, overlay, outbox)
    assert {o.sop_instance_uid for o in old}.isdisjoint(o.sop_instance_uid for o in new)
    assert len(list(outbox.iterdir())) == 4
    assert pydicom.dcmread(new[0].path).SoftwareVersions == "sepcnn-test-2.0"


def test_images_of_one_study_share_one_sr_series(source_file, overlay, tmp_path):
    second = source_file.with_name("second.dcm")
    ds = pydicom.dcmread(source_file)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.InstanceNumber = 4
    ds.save_as(second, enforce_file_format=True)
    outbox = tmp_path / "outbox"
    a = pydicom.dcmread(write_results(source_file, URGENT, overlay, outbox)[0].path)
    b = pydicom.dcmread(write_results(second, URGENT, overlay, outbox)[0].path)
    assert a.SeriesInstanceUID == b.SeriesInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert (a.InstanceNumber, b.InstanceNumber) == (3, 4)


def test_a_jpeg_source_gets_no_dicom_results(tmp_path, reference_grey):
    jpeg = tmp_path / "chest.jpeg"
    Image.fromarray(reference_grey).save(jpeg)
    with pytest.raises(SourceHeaderError, match="not a readable DICOM"):
        write_results(jpeg, URGENT, Image.new("RGB", (64, 64)), tmp_path / "outbox")
    assert not (tmp_path / "outbox").exists() or not any((tmp_path / "outbox").iterdir())


def test_file_names_carry_no_patient_data(source_file, overlay, tmp_path):
    for written in write_results(source_file, URGENT, overlay, tmp_path / "outbox"):
        path = Path(written.path)
        assert set(path.stem[3:]) <= set("0123456789.")
        assert path.stem[3:].startswith("2.25.")


def test_overlay_pixels_survive_the_round_trip(source_file, overlay, tmp_path):
    _, sc_written = write_results(source_file, URGENT, overlay, tmp_path / "outbox")
    pixels = pydicom.dcmread(sc_written.path).pixel_array
    scale = pixels.shape[1] / overlay.width
    top = np.asarray(
        overlay.resize((pixels.shape[1], round(overlay.height * scale)), Image.Resampling.BILINEAR)
        if scale != 1
        else overlay
    )
    difference = np.abs(pixels[: top.shape[0]].astype(np.int16) - top.astype(np.int16))
    assert difference.mean() < 1.5  # JPEG baseline, quality 95


def test_derived_uids_are_stable_valid_and_distinct():
    from pacs.identity import ResultUIDs

    one = ResultUIDs.derive("1.2.3.4", "1.2.3", "v1")
    assert one == ResultUIDs.derive("1.2.3.4", "1.2.3", "v1")
    values = list(dataclasses.asdict(one).values())
    assert len(set(values)) == len(values)
    for value in values:
        assert pydicom.uid.UID(value).is_valid and len(value) <= 64
    assert ResultUIDs.derive("1.2.3.5", "1.2.3", "v1").sr_series == one.sr_series
    assert ResultUIDs.derive("1.2.3.4", "1.2.3", "v2").sr_instance != one.sr_instance
