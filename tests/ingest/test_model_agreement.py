"""The model scores a DICOM like the JPEG it was made from (|dp| <= 0.02).

The grey-level pipeline exists so that a 16-bit MONOCHROME1 DICOM with a window reaches
the network as the 8-bit JPEG did; this checks it end to end through the shipped model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ingest import read_image
from tests.datasets import REPO
from tests.ingest.dicom_factory import VARIANTS, jpeg_grey, jpeg_ls_encoder_available, write

pytestmark = pytest.mark.tf

MODEL_CARD = REPO / "model" / "shipped" / "model_card.json"
PROBABILITY_TOLERANCE = 0.02
#: One variant per grey-level path and per codec family; each must score like the JPEG.
AGREEMENT_VARIANTS = (
    "monochrome1_16bit_rescale",
    "signed_12bit_dirty_high_bits",
    "voi_lut_nonlinear",
    "rle_16bit",
    "jpeg_ls_12bit",
    "jpeg2000_16bit",
    "jpeg_lossless_sv1_12bit",
    "jpeg_extended_12bit",
)


@pytest.fixture(scope="module")
def classifier() -> Any:
    if not MODEL_CARD.exists():
        pytest.skip(f"no shipped model yet: {MODEL_CARD.relative_to(REPO)} does not exist")
    from model.predict import Classifier

    return Classifier.load()


def test_dicom_probability_matches_source_jpeg(
    classifier,
    source_jpegs: list[Path],
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    variants = [v for v in VARIANTS if v.name in AGREEMENT_VARIANTS]
    if not jpeg_ls_encoder_available():
        variants = [v for v in variants if v.name != "jpeg_ls_12bit"]
    images, labels = [], []
    for index, source in enumerate(source_jpegs):
        ref = jpeg_grey(source)
        images.append(read_image(source).pixels)
        labels.append(f"{source.name}:jpeg")
        for variant in variants:
            path = write(variant.build(ref), tmp_path / f"{index}-{variant.name}.dcm")
            images.append(read_image(path).pixels)
            labels.append(f"{source.name}:{variant.name}")
    predictions = classifier.predict(images)
    per_source = 1 + len(variants)
    for start in range(0, len(images), per_source):
        jpeg_probability = predictions[start].probability
        for offset in range(1, per_source):
            probability = predictions[start + offset].probability
            assert abs(probability - jpeg_probability) <= PROBABILITY_TOLERANCE, (
                f"{labels[start + offset]}: {probability:.4f} vs JPEG {jpeg_probability:.4f}"
            )
