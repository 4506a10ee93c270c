"""The SC, written from a real radiograph's overlay and read back: pixels, text band, identity."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage

from model.content_check import ContentVerdict
from model.prediction import Prediction
from pacs.identity import (
    NOT_FOR_DIAGNOSTIC_USE,
    OUTSIDE_TRAINING_POPULATION_CAVEAT,
    SC_SERIES_NUMBER,
    ResultUIDs,
)
from pacs.sc import MIN_WIDTH, build_capture, burn_in, result_lines
from pacs.source import read_source
from tests.support.pacs import ACCESSION, PATIENT_ID, PATIENT_NAME, ROUTINE, URGENT


def written_capture(
    source_file: Path, overlay: Image.Image, tmp_path: Path, prediction: Prediction = URGENT
) -> pydicom.Dataset:
    reference = read_source(source_file)
    uids = ResultUIDs.derive(
        reference.SOPInstanceUID, reference.StudyInstanceUID, prediction.model_version
    )
    path = tmp_path / f"sc-{prediction.priority.value}.dcm"
    build_capture(reference, overlay, prediction, uids).save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def expected_image_region(overlay: Image.Image) -> np.ndarray:
    """The overlay as the SC carries it above the text band (enlarged when narrow)."""
    if overlay.width >= MIN_WIDTH:
        return np.asarray(overlay.convert("RGB"))
    scale = MIN_WIDTH / overlay.width
    size = (round(overlay.width * scale), round(overlay.height * scale))
    return np.asarray(overlay.convert("RGB").resize(size, Image.Resampling.BILINEAR))


def assert_close(decoded: np.ndarray, expected: np.ndarray) -> None:
    """JPEG baseline at quality 95: the picture, within what lossy compression changes."""
    assert decoded.shape == expected.shape
    difference = np.abs(decoded.astype(np.int16) - expected.astype(np.int16))
    assert difference.mean() < 1.5 and np.percentile(difference, 99) < 16


def test_capture_is_rgb_overlay_with_a_text_band_below(source_file, overlay, tmp_path):
    sc = written_capture(source_file, overlay, tmp_path)
    assert sc.SOPClassUID == SecondaryCaptureImageStorage
    assert sc.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert sc.PhotometricInterpretation == "YBR_FULL_422"  # JPEG's; decoded to RGB
    assert (sc.SamplesPerPixel, sc.BitsAllocated) == (3, 8)
    pixels = sc.pixel_array
    image = expected_image_region(overlay)
    assert pixels.shape[1] == image.shape[1] and pixels.shape[2] == 3
    assert pixels.shape[0] > image.shape[0]  # the band
    # The radiograph with its heatmap, untouched by the text (up to JPEG's losses).
    assert_close(pixels[: image.shape[0]], image)
    band = pixels[image.shape[0] :]
    text = band.max(axis=2) > 128
    assert 0.005 < text.mean() < 0.5  # there is writing, and it is writing, not a fill
    # The urgent line is drawn in red.
    red = (band[..., 0] > 200) & (band[..., 1] < 120) & (band[..., 2] < 120)
    assert red.any()


def test_burned_in_region_differs_from_the_plain_radiograph(
    source_file, overlay, reference_grey, tmp_path
):
    sc = written_capture(source_file, overlay, tmp_path)
    image = expected_image_region(overlay)
    plain = np.asarray(
        Image.fromarray(reference_grey)
        .convert("RGB")
        .resize((image.shape[1], image.shape[0]), Image.Resampling.BILINEAR),
        dtype=np.int16,
    )
    region = sc.pixel_array[: image.shape[0]].astype(np.int16)
    changed = np.abs(region - plain).max(axis=2) > 25
    # The heatmap's hot spot (lower left, see synthetic_heatmap) is coloured in...
    rows, cols = image.shape[:2]
    hot = changed[int(0.6 * rows) : int(0.7 * rows), int(0.25 * cols) : int(0.35 * cols)]
    assert hot.mean() > 0.9
    # ...and the far corner, without evidence, still shows the radiograph.
    assert changed[: rows // 5, -cols // 5 :].mean() < 0.02


def test_priorities_are_burned_in_differently(source_file, overlay, tmp_path):
    urgent = written_capture(source_file, overlay, tmp_path, URGENT).pixel_array
    routine = written_capture(source_file, overlay, tmp_path, ROUTINE).pixel_array
    height = expected_image_region(overlay).shape[0]
    assert not np.array_equal(urgent[height:], routine[height:])
    assert_close(urgent[:height], routine[:height])


def test_result_lines_name_priority_probability_model_and_intended_use():
    lines = " ".join(result_lines(URGENT))
    assert "URGENT" in lines and "PNEUMONIA" in lines
    assert "0.91" in lines and "0.37" in lines
    assert URGENT.model_version in lines
    assert NOT_FOR_DIAGNOSTIC_USE in lines


def test_flagged_row_burns_in_the_population_caveat(source_file, overlay, tmp_path):
    flagged = replace(URGENT, content=ContentVerdict.OUTSIDE_POPULATION)
    assert result_lines(flagged)[-1] == OUTSIDE_TRAINING_POPULATION_CAVEAT
    assert OUTSIDE_TRAINING_POPULATION_CAVEAT not in result_lines(URGENT)
    plain = written_capture(source_file, overlay, tmp_path, URGENT)
    caveated = written_capture(source_file, overlay, tmp_path, flagged)
    assert OUTSIDE_TRAINING_POPULATION_CAVEAT in caveated.ImageComments
    assert OUTSIDE_TRAINING_POPULATION_CAVEAT not in plain.ImageComments
    assert caveated.Rows > plain.Rows  # a fourth line in the band, below the image
    assert caveated.Columns == plain.Columns


def test_capture_copies_identity_and_declares_the_burned_in_text(source_file, overlay, tmp_path):
    source = pydicom.dcmread(source_file, stop_before_pixels=True)
    sc = written_capture(source_file, overlay, tmp_path)
    assert sc.StudyInstanceUID == source.StudyInstanceUID
    assert sc.SeriesInstanceUID not in (source.SeriesInstanceUID, "")
    assert sc.SeriesNumber == SC_SERIES_NUMBER
    assert str(sc.PatientName) == PATIENT_NAME
    assert (sc.PatientID, sc.AccessionNumber) == (PATIENT_ID, ACCESSION)
    assert sc.BurnedInAnnotation == "YES"
    assert NOT_FOR_DIAGNOSTIC_USE in sc.SeriesDescription
    assert list(sc.PatientOrientation) == ["L", "F"]
    assert sc.BodyPartExamined == "CHEST"
    assert list(sc.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_unknown_orientation_is_left_empty_not_guessed(source_file, overlay, tmp_path):
    source = pydicom.dcmread(source_file)
    del source.PatientOrientation
    source.save_as(source_file, enforce_file_format=True)
    sc = written_capture(source_file, overlay, tmp_path)
    assert "PatientOrientation" in sc and not sc.PatientOrientation


def test_narrow_overlay_is_enlarged_for_legible_text():
    small = Image.new("RGB", (200, 240), (40, 40, 40))
    burned = burn_in(small, URGENT)
    assert burned.width == MIN_WIDTH
    assert burned.height > 240 * MIN_WIDTH / 200


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy not installed")
def test_dciodvfy_finds_no_errors_in_the_capture(source_file, overlay, tmp_path):
    written_capture(source_file, overlay, tmp_path)
    result = subprocess.run(
        ["dciodvfy", "-new", str(tmp_path / "sc-urgent.dcm")], capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    assert "SCImage" in output
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert not errors, "\n".join(errors)


@pytest.mark.tf
def test_capture_from_a_real_grad_cam_of_a_keras_network(source_file, reference_grey, tmp_path):
    """The SC takes what model.gradcam and model.overlay make (an untrained network will do)."""
    from model.gradcam import grad_cam
    from model.network import build_model
    from model.overlay import overlay_heatmap
    from model.preprocess import preprocess

    network = build_model(64)
    heatmap = grad_cam(network, preprocess(reference_grey.astype(np.float32), 64))
    assert heatmap.shape == (64, 64)
    overlay = overlay_heatmap(reference_grey.astype(np.float32), heatmap, caption="test")
    sc = written_capture(source_file, overlay, tmp_path)
    assert_close(
        sc.pixel_array[: expected_image_region(overlay).shape[0]], expected_image_region(overlay)
    )


def test_capture_is_compressed_and_says_it_is_lossy(source_file, overlay, tmp_path):
    sc = written_capture(source_file, overlay, tmp_path)
    size = (tmp_path / "sc-urgent.dcm").stat().st_size
    uncompressed = sc.Rows * sc.Columns * 3
    assert size < uncompressed / 5  # about a tenth: 2 MB becomes ~120 kB
    assert sc.LossyImageCompression == "01"
    assert sc.LossyImageCompressionMethod == "ISO_10918_1"
    assert float(sc.LossyImageCompressionRatio) > 5


def test_a_very_narrow_image_keeps_every_line_inside_the_band():
    narrow = Image.new("RGB", (120, 300), (40, 40, 40))  # a 120 px wide strip
    burned = np.asarray(burn_in(narrow, URGENT))
    assert burned.shape[1] == MIN_WIDTH
    band = burned[round(300 * MIN_WIDTH / 120) :]
    text_columns = np.flatnonzero((band.max(axis=2) > 128).any(axis=0))
    assert text_columns.size  # the lines are there...
    assert text_columns.max() < MIN_WIDTH - 4  # ...and none runs off the right edge
    text_rows = np.flatnonzero((band.max(axis=2) > 128).any(axis=1))
    assert text_rows.max() - text_rows.min() > 3 * 8  # three lines of legible height
