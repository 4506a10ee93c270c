"""Refuse images that hold no picture before the model is asked to score them.

A Rescale Slope of 0, NaN or infinity (PS3.3 C.11.1.1.2 requires a finite, non-zero slope in
practice), a detector dark frame or a burned-out white image all reach the network as a
flat or undefined array; the model answers them with a confident score (URGENT on an all-black
image was observed). These checks turn them into the ``blank_image`` rejection instead.
"""

from __future__ import annotations

import math

import numpy as np
from pydicom.dataset import Dataset

from ingest.errors import IngestError, Reason
from ingest.limits import MIN_DISPLAY_STD

#: The display check looks at about this many pixels (a regular subsample): cheap, and a
#: radiograph's contrast is not confined to a few isolated pixels.
_SAMPLE_PIXELS = 1_000_000


def check_rescale(ds: Dataset) -> None:
    """Refuse (0028,1053) Rescale Slope 0 or non-finite, and a non-finite Rescale Intercept.

    Read from the header, so the file is refused before its pixels are decoded.
    """
    for keyword, tag in (("RescaleSlope", "(0028,1053)"), ("RescaleIntercept", "(0028,1052)")):
        raw = ds.get(keyword)
        if raw in (None, ""):
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError) as exc:
            raise IngestError(Reason.CORRUPT, f"{tag} {_word(keyword)} is not a number.") from exc
        if not math.isfinite(value):
            raise IngestError(
                Reason.BLANK_IMAGE,
                f"{tag} {_word(keyword)} is {value}; the modality values would be undefined.",
            )
        if keyword == "RescaleSlope" and value == 0.0:
            raise IngestError(
                Reason.BLANK_IMAGE,
                "(0028,1053) Rescale Slope is 0; every modality value would be the intercept.",
            )


def check_modality_values(values: np.ndarray) -> None:
    """Refuse modality-LUT output that is non-finite anywhere.

    Checked here and not only on the display levels, because a window clips +inf to white
    and would hide it. A flat image is left to :func:`check_display_levels`.
    """
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        raise IngestError(
            Reason.BLANK_IMAGE, "The modality values after the Modality LUT are not all finite."
        )


def check_display_levels(pixels: np.ndarray, min_std: float = MIN_DISPLAY_STD) -> None:
    """Refuse display levels (0..255) that are non-finite or flat (all black, all white)."""
    step = max(1, int(math.sqrt(pixels.size / _SAMPLE_PIXELS)))
    sample = pixels[::step, ::step] if pixels.ndim == 2 else pixels
    if pixels.size == 0 or not np.isfinite(pixels).all():
        raise IngestError(Reason.BLANK_IMAGE, "The display grey levels are not all finite.")
    spread = float(np.std(sample, dtype=np.float64))
    if spread < min_std:
        mean = float(np.mean(sample, dtype=np.float64))
        raise IngestError(
            Reason.BLANK_IMAGE,
            f"The image is flat (mean grey {mean:.1f} of 255, standard deviation {spread:.2f} "
            f"< {min_std:g}): all black, all white or one grey.",
        )


def _word(keyword: str) -> str:
    return "Rescale Slope" if keyword == "RescaleSlope" else "Rescale Intercept"
