"""Field-of-view augmentation: crops whose framing and aspect carry no label information.

In the training data the pneumonia films are smaller originals framed wider (median w/h
1.49) than the normals (1.22), and every image is squashed to a square. A network trained on
whole images learns that shortcut: tightly framed normals from another hospital read as
pneumonia. Training on random crops whose aspect and area are drawn independently of the
label takes the shortcut away: after the square squash, framing, zoom and anatomical
stretch look alike for both classes.

Two thirds of the training images exist only as 224 x 224 copies whose true aspect was lost
(``Record.squashed_copy``). They are first stretched back to an aspect drawn from the same
label-independent range, so they add variety rather than a second, square-only population.

The crop is taken from the display-level grey image; :func:`model.preprocess.preprocess`
then turns it into network input exactly as it does in production.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class FieldOfView:
    """The distribution of training crops.

    ``aspect`` bounds the crop's width/height (log-uniform); ``min_area`` is the smallest
    share of the image a crop keeps; ``full_view`` is the probability of keeping the whole
    image, so the uncropped films production mostly sees stay well represented.
    """

    aspect: tuple[float, float] = (0.95, 1.9)
    min_area: float = 0.55
    full_view: float = 0.2
    restored_aspect: tuple[float, float] = (1.05, 1.7)  # for squashed 224 x 224 copies


def random_field_of_view(
    grey: np.ndarray, squashed_copy: bool, rng: np.random.Generator, fov: FieldOfView
) -> np.ndarray:
    """One random training view of ``grey`` (2-D, display grey levels)."""
    if squashed_copy:
        grey = stretch_to_aspect(grey, math.exp(rng.uniform(*np.log(fov.restored_aspect))))
    if rng.random() < fov.full_view:
        return grey
    height, width = grey.shape
    area = rng.uniform(fov.min_area, 1.0) * height * width
    aspect = math.exp(rng.uniform(*np.log(fov.aspect)))
    crop_h = min(height, round(math.sqrt(area / aspect)))
    crop_w = min(width, round(crop_h * aspect))
    crop_h = min(height, max(8, round(crop_w / aspect)))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    return grey[top : top + crop_h, left : left + crop_w]


def stretch_to_aspect(grey: np.ndarray, aspect: float) -> np.ndarray:
    """Resample ``grey`` to width/height ``aspect``, keeping its height."""
    height = grey.shape[0]
    width = max(8, round(height * aspect))
    image = Image.fromarray(np.ascontiguousarray(grey, dtype=np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), np.float32)


def crop_to_aspect(grey: np.ndarray, aspect: float) -> np.ndarray:
    """Trim the top and bottom equally until width/height is at least ``aspect``.

    What a tightly collimated film looks like: the crop-invariance check applies it to
    normals and pneumonias alike and compares how often each is called pneumonia.
    """
    height, width = grey.shape
    keep = min(height, max(8, round(width / aspect)))
    top = (height - keep) // 2
    return grey[top : top + keep, :]
