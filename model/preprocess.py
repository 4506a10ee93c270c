"""The one function from a display-level grey image to the network's input.

Training (through the cached array), ``evaluate``, ``predict`` and the worker all call
:func:`preprocess`; nothing else may shape model input. The choices, and why:

- **Square resize of the whole image, aspect squashed (never padded or cropped).** Two
  thirds of the training images exist only as 224 x 224 copies whose aspect was already
  squashed; squashing everything else the same way makes those, the true-aspect training
  images and full-resolution DICOMs from production reach the network alike. Pillow's
  resampling filters widen with the scale factor, so the downscale is antialiased.
- **Robust contrast stretch** from the 0.5th to the 99.5th grey-level percentile onto
  [0, 1]. Exposure and windowing differ between sites and between DICOM VOI paths; the
  stretch removes a global brightness/contrast offset the network should not learn from,
  while the training augmentation (gamma, contrast) covers what remains.
- **8-bit quantisation of the result** (``round(x * 255) / 255``), so the uint8 training
  cache holds exactly what inference computes: no train/serve skew, not even rounding.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: Percentiles of the contrast stretch; part of the preprocessing contract recorded in the
#: model card (``preprocessing.version``).
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
PREPROCESSING_VERSION = "squash-bilinear+p0.5-p99.5-stretch+u8/v1"


def preprocess(grey: np.ndarray, size: int) -> np.ndarray:
    """Return the model input for one image: float32 ``(size, size, 1)`` in [0, 1].

    ``grey`` is a 2-D array in display grey levels (0 = black), float or integer, as
    ``ingest.SourceImage.pixels`` holds it. A constant image maps to all zeros.
    """
    return network_input(to_model_levels(resize_square(grey, size)))


def network_input(levels: np.ndarray) -> np.ndarray:
    """uint8 model levels ``(N, S, S)`` (the training cache) -> float32 ``(N, S, S, 1)``."""
    return levels[..., np.newaxis].astype(np.float32) / 255.0


def resize_square(grey: np.ndarray, size: int) -> np.ndarray:
    """Resize the whole image to ``size`` x ``size`` (aspect squashed), float32 grey levels."""
    if grey.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {grey.shape}")
    if size < 8:
        raise ValueError(f"input size must be at least 8 px, got {size}")
    image = Image.fromarray(np.ascontiguousarray(grey, dtype=np.float32), mode="F")
    # reducing_gap: a fast integer box reduction first for very large inputs (DICOMs of
    # 2,500 px), then the antialiased bilinear filter for the last factor of >= 3.
    resized = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(resized, dtype=np.float32)


def to_model_levels(grey: np.ndarray) -> np.ndarray:
    """Contrast-stretch to the percentile range and quantise to uint8 levels 0..255."""
    low, high = np.percentile(grey, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if high - low < 1e-6:
        return np.zeros(grey.shape, dtype=np.uint8)
    stretched = (grey - low) * (255.0 / (high - low))
    return np.clip(np.rint(stretched), 0, 255).astype(np.uint8)
