"""The shipped model must read the lungs, not the framing: trimming the top and bottom of
a film to a wider aspect may not turn normals into pneumonia.

On the site sample (the official test split's children, framed differently from the
training films), cropping normals to w/h 1.5 moved the first shipped model's share of
normals called pneumonia from 21 % to 83 % (+62 points); the field-of-view crops of r2/r3
brought that to +6, and r5's crop-consistency training to +0
(`python bench/bench_generalisation.py`). This holds the issue's target: at most +5 points,
with the pneumonias still caught.
"""

from __future__ import annotations

import numpy as np
import pytest

from ingest import load_scorable
from model.crop_check import crop_invariance
from model.evaluate import labelled_files
from model.predict import Classifier
from tests.datasets import SITE_SAMPLE

pytestmark = [pytest.mark.tf, pytest.mark.slow, SITE_SAMPLE.needed]


def test_cropping_normals_to_a_wider_aspect_does_not_make_them_pneumonia() -> None:
    files = labelled_files(SITE_SAMPLE.require())
    images = [load_scorable(path)[0].pixels for path, _ in files]
    labels = np.array([label for _, label in files])
    uncropped, *cropped = crop_invariance(Classifier.load(), images, labels, aspects=(1.5,))
    at_1_5 = cropped[0]
    assert at_1_5.normals_called_pneumonia <= uncropped.normals_called_pneumonia + 0.05
    assert at_1_5.sensitivity >= uncropped.sensitivity - 0.05
