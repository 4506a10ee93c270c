"""A reference set of images that are not chest radiographs, built from files that install.

pydicom's bundled test files (CT, MR, ultrasound, nuclear medicine, a segmentation mask, a
secondary capture of text), a computed radiograph of a limb from ``pydicom-data`` (Fuji CR,
the DICOM WG04 sample RG3; MIT licence) when it is installed, and scikit-image's bundled
photographs and scientific images. Each is turned into a display-level grey image, as a
header-less PNG would reach the worker. Nothing here is a chest radiograph; none should be
scored.

The content check places its cut-off against this set (``model.content_fit``): the set is
part of the check's fit, like the validation split, and the tests hold every image of it
refused, header-less and inside a chest header. Nothing is downloaded: a file that is not
installed is left out, and the fit records which images it used.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

#: pydicom test files with a real image in them, and what each shows.
PYDICOM_FILES = {
    "CT_small.dcm": "CT slice",
    "693_J2KI.dcm": "CT head slice",
    "MR_small.dcm": "MR slice",
    "examples_overlay.dcm": "MR abdomen",
    "JPEG2000.dcm": "nuclear-medicine whole body",
    "examples_palette.dcm": "ultrasound (palette colour)",
    "examples_rgb_color.dcm": "ultrasound (RGB)",
    "examples_jpeg2k.dcm": "ultrasound (JPEG 2000)",
    "examples_ybr_color.dcm": "ultrasound cine frame",
    "image_dfl.dcm": "deflated CT slice",
    "GDCMJ2K_TextGBR.dcm": "secondary capture of text",
    "liver_1frame.dcm": "segmentation mask",
    "SC_rgb_jpeg_dcmd.dcm": "colour test pattern",
}
#: From the ``pydicom-data`` package (a development dependency), found by the same look-up.
PYDICOM_DATA_FILES = {
    "RG3_UNCR.dcm": "computed radiograph of a lower limb (Fuji CR)",
}

#: scikit-image's bundled images (no download): photographs, text, microscopy, astronomy.
SKIMAGE_FILES = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "horse.png",
    "moon.png",
    "page.png",
    "text.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "cell.png",
    "microaneurysms.png",
    "phantom.png",
    "ihc.png",
    "logo.png",
    "clock_motion.png",
    "motorcycle_left.png",
    "color.png",
    "chessboard_GRAY.png",
)


def _grey_from_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut, convert_color_space

    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pixels = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    photometric = str(ds.PhotometricInterpretation)
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
    elif photometric.startswith("YBR") and not ds.file_meta.TransferSyntaxUID.is_compressed:
        pixels = convert_color_space(pixels, photometric, "RGB")
    elif photometric.startswith("MONOCHROME"):
        pixels = apply_modality_lut(pixels, ds)
        if photometric == "MONOCHROME1":  # shown as a radiologist sees it
            pixels = pixels.max() - pixels
    return _to_grey(np.asarray(pixels, dtype=np.float64))


def _to_grey(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 3:
        pixels = pixels[..., :3] @ np.array([0.299, 0.587, 0.114])
    return pixels.astype(np.float32)


def to_uint8(grey: np.ndarray) -> np.ndarray:
    """Min-max to 0..255, as a legacy exporter would write a PNG."""
    low, high = float(grey.min()), float(grey.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.clip(np.rint((grey - low) * scale), 0, 255).astype(np.uint8)


def expected_count() -> int:
    """How many images the whole set holds, every package installed."""
    return len(PYDICOM_FILES) + len(PYDICOM_DATA_FILES) + len(SKIMAGE_FILES)


def nonchest_images() -> Iterator[tuple[str, np.ndarray]]:
    """``(name, grey image)`` for every image of the set that installs here."""
    from pydicom.data import get_testdata_file

    for name in (*PYDICOM_FILES, *PYDICOM_DATA_FILES):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = get_testdata_file(name, download=False)  # never a network fetch
        if path is not None:
            yield f"pydicom-{Path(name).stem}", _grey_from_dicom(Path(str(path)))
    try:
        import skimage
    except ImportError:
        return
    folder = Path(skimage.__file__).parent / "data"
    for name in SKIMAGE_FILES:
        if (folder / name).is_file():
            with Image.open(folder / name) as image:
                yield f"skimage-{Path(name).stem}", _to_grey(np.asarray(image.convert("RGB")))
