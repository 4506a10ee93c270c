"""An adult chest radiograph set for the tests, built from a file that installs here.

Provenance and licence: ``RG1`` of the DICOM Working Group 4 compression samples, as shipped
by the ``pydicom-data`` package on PyPI (MIT licence; a development dependency, nothing
committed): a real posteroanterior computed radiograph of an adult's chest (Philips Medical
Systems CR, MONOCHROME1, 15 bits stored; the header gives a birth date in 1940), stored by
the package in four encodings: JPEG 2000 lossless and lossy, and both decoded back to
uncompressed explicit VR. The tests add the encodings real archives also hold, written here
from the same pixels with an installed encoder: JPEG-LS lossless (pyjpegls), 8-bit JPEG
baseline (Pillow; as DX for presentation, MONOCHROME2), and a bare implicit VR dataset without
preamble or Part-10 meta, as an ACR-NEMA-era archive exports it.

No other vendor's adult chest film installs from a package registry here (pydicom-data's
other radiograph, RG3, is a Fuji CR of a limb: it is in the non-chest set), so this is one
patient on one piece of equipment in seven encodings: it tests that reasons and readers are
right for an adult chest film, not how well the pixels separate adults from children.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import FileDataset
from pydicom.uid import JPEGBaseline8Bit, JPEGLSLossless, generate_uid

from tests.ingest.dicom_factory import DX_FOR_PRESENTATION, encapsulated, write

#: pydicom-data's files of the adult chest radiograph, and their encoding.
PACKAGED = {
    "RG1_UNCR.dcm": "explicit VR little endian (from the lossless original)",
    "RG1_UNCI.dcm": "explicit VR little endian (from the lossy JPEG 2000)",
    "RG1_J2KR.dcm": "JPEG 2000 lossless",
    "RG1_J2KI.dcm": "JPEG 2000 lossy",
}
#: Written by :func:`adult_chest_files` from RG1's pixels.
WRITTEN = {
    "RG1_JLSL.dcm": "JPEG-LS lossless (pyjpegls)",
    "RG1_DX_JPEG8.dcm": "DX for presentation, JPEG baseline 8 bit, MONOCHROME2",
    "RG1_IMPLICIT_NO_META.dcm": "implicit VR, no preamble, no Part-10 meta",
}


def packaged_path(name: str) -> Path | None:
    """A pydicom-data file, or None where that package is not installed (never a download)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = get_testdata_file(name, download=False)
    return Path(str(found)) if found else None


def available() -> bool:
    return all(packaged_path(name) is not None for name in PACKAGED)


def _source() -> FileDataset:
    path = packaged_path("RG1_UNCR.dcm")
    assert path is not None, "pydicom-data is not installed"
    return pydicom.dcmread(path)


def _jpeg_ls(directory: Path) -> Path:
    ds = _source()
    ds.compress(JPEGLSLossless)
    return write(ds, directory / "RG1_JLSL.dcm")


def _dx_jpeg_baseline(directory: Path) -> Path:
    """The film as an 8-bit MONOCHROME2 DX, as an exporter that windows and compresses writes."""
    ds = _source()
    stored = ds.pixel_array.astype(np.float64)
    low, high = np.percentile(stored, [0.5, 99.5])
    levels = np.clip((stored - low) / (high - low) * 255, 0, 255)
    levels = (255 - levels).round().astype(np.uint8)  # MONOCHROME1 -> MONOCHROME2
    buffer = io.BytesIO()
    Image.fromarray(levels, mode="L").save(buffer, format="JPEG", quality=90)
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.file_meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    for keyword in ("WindowCenter", "WindowWidth"):
        delattr(ds, keyword)
    ds.Rows, ds.Columns = levels.shape
    dataset = encapsulated(ds, buffer.getvalue(), JPEGBaseline8Bit)
    return write(dataset, directory / "RG1_DX_JPEG8.dcm")


def _implicit_without_meta(directory: Path) -> Path:
    ds = _source()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    return write(ds, directory / "RG1_IMPLICIT_NO_META.dcm", preamble=False)


def adult_chest_files(directory: Path, **attributes: object) -> dict[str, Path]:
    """Every encoding of the adult film in ``directory``, by name; ``attributes`` override
    header values in each copy (``PatientAge``, ``PatientBirthDate`` ...; None removes one).

    Each copy gets its own SOP Instance UID: the package's lossy file and its decoded copy
    share one, and a worker rightly files a second instance with the same UID as a duplicate.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for name in PACKAGED:
        source = packaged_path(name)
        assert source is not None, "pydicom-data is not installed"
        files[name] = directory / name
        files[name].write_bytes(source.read_bytes())
    files["RG1_JLSL.dcm"] = _jpeg_ls(directory)
    files["RG1_DX_JPEG8.dcm"] = _dx_jpeg_baseline(directory)
    files["RG1_IMPLICIT_NO_META.dcm"] = _implicit_without_meta(directory)
    for name, path in files.items():
        _override(
            path,
            {**attributes, "SOPInstanceUID": generate_uid()},
            preamble=name != "RG1_IMPLICIT_NO_META.dcm",
        )
    return files


def _override(path: Path, attributes: dict[str, object], preamble: bool) -> None:
    ds = pydicom.dcmread(path, force=not preamble)
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    if preamble:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(path, enforce_file_format=False, implicit_vr=True, little_endian=True)
