"""Real-size chest DICOMs for the pipeline bench: 2,500 x 2,000, 16-bit, four encodings.

Real radiographs are not the small dataset JPEGs: a backfill of a PACS archive is bound by
the decoder. Each file here is a different dataset JPEG upscaled to 2,500 rows x 2,000
columns and stored as 16-bit MONOCHROME1 with rescale and a window, plus detector-like noise
(as ``bench_ingest.py`` builds its one file), then written in turn as uncompressed, JPEG
Lossless SV1 (imagecodecs), JPEG 2000 Lossless (pydicom's encoder) and JPEG Baseline 8-bit
(Pillow). Every file has its own UIDs, so the intake never sees a duplicate.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.ingest.dicom_factory import base_dataset, encapsulated, set_pixels, window, write

ROWS, COLUMNS = 2500, 2000
ENCODINGS = ("uncompressed", "jpeg_lossless_sv1", "jpeg2000_lossless", "jpeg_baseline_8bit")


def stored_pixels(source: Path, rng: np.random.Generator) -> np.ndarray:
    """A dataset JPEG upscaled to 2,500 x 2,000, as 16-bit MONOCHROME1 detector values."""
    with Image.open(source) as image:
        grey = np.asarray(image.convert("F").resize((COLUMNS, ROWS), Image.Resampling.BICUBIC))
    values = (255.0 - np.clip(grey, 0, 255)) * 257.0 + rng.normal(0, 40, grey.shape)
    return np.clip(values, 0, 65535).astype(np.uint16)


def write_dicom(stored: np.ndarray, encoding: str, path: Path) -> Path:
    """``stored`` as one DICOM in ``encoding`` (one of :data:`ENCODINGS`)."""
    if encoding == "jpeg_baseline_8bit":
        eight_bit = (stored >> 8).astype(np.uint8)
        ds = set_pixels(base_dataset(ROWS, COLUMNS), eight_bit, photometric="MONOCHROME1")
        buffer = io.BytesIO()
        Image.fromarray(eight_bit).save(buffer, format="JPEG", quality=95)
        return write(encapsulated(ds, buffer.getvalue(), "1.2.840.10008.1.2.4.50"), path)
    ds = set_pixels(base_dataset(ROWS, COLUMNS), stored, photometric="MONOCHROME1")
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1000"
    ds = window(ds, 2000.0, 60000.0, "LINEAR")
    if encoding == "jpeg_lossless_sv1":
        import imagecodecs  # the dev extra

        code = imagecodecs.jpeg8_encode(stored, lossless=True, predictor=1, bitspersample=16)
        ds = encapsulated(ds, bytes(code), "1.2.840.10008.1.2.4.70")
    elif encoding == "jpeg2000_lossless":
        ds.compress("1.2.840.10008.1.2.4.90")
    elif encoding != "uncompressed":
        raise ValueError(f"unknown encoding {encoding!r}")
    return write(ds, path)  # type: ignore[arg-type]


def build_mix(sources: Sequence[Path], folder: Path) -> list[Path]:
    """One real-size DICOM per source, the encodings in turn (a quarter each)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = []
    for i, source in enumerate(sources):
        encoding = ENCODINGS[i % len(ENCODINGS)]
        files.append(write_dicom(stored_pixels(source, rng), encoding, folder / f"{i:04d}.dcm"))
    return files


def encoding_of(path: Path) -> str:
    return ENCODINGS[int(path.stem) % len(ENCODINGS)]
