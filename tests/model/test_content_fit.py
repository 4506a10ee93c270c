"""``cxr-triage content-check fit`` reproduces the shipped check from the model and the data,
and refuses data that do not give the model's own split."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.card import CARD_FILE, SHIPPED_DIR, WEIGHTS_FILE, ModelCard
from model.content_check import CONTENT_CHECK_FILE, ContentCheck
from tests.datasets import FULL_DATASET, SITE_SAMPLE

pytestmark = [pytest.mark.tf, pytest.mark.slow]


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for name in (WEIGHTS_FILE, CARD_FILE, "validation_predictions.csv"):
        shutil.copy(SHIPPED_DIR / name, folder / name)
    return folder


def _fit(model: Path, data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "content-check",
            "fit",
            "--model",
            str(model),
            "--data",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )


@FULL_DATASET.needed
def test_the_fit_reproduces_the_shipped_check(model_copy: Path) -> None:
    done = _fit(model_copy, FULL_DATASET.require())
    assert done.returncode == 0, done.stderr[-2000:]
    version = ModelCard.load(SHIPPED_DIR).model_version
    fitted = ContentCheck.load(model_copy, version)
    shipped = ContentCheck.load(SHIPPED_DIR, version)
    assert fitted is not None and shipped is not None
    np.testing.assert_allclose(fitted.mean, shipped.mean, rtol=1e-5, atol=1e-6)
    assert fitted.reject_threshold == pytest.approx(shipped.reject_threshold, rel=1e-4)
    assert fitted.population_threshold == pytest.approx(shipped.population_threshold, rel=1e-4)
    section = json.loads((model_copy / CARD_FILE).read_text())["content_check"]
    assert section["validation_rejected"] <= 0.005
    assert section["validation_flagged_or_rejected"] <= 0.02
    assert section["command"].startswith("cxr-triage content-check fit")


@SITE_SAMPLE.needed
def test_data_that_do_not_give_the_model_s_split_are_refused(model_copy: Path) -> None:
    done = _fit(model_copy, SITE_SAMPLE.require())
    assert done.returncode == 2 and "Invalid value for --data" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (model_copy / CONTENT_CHECK_FILE).exists()
    assert "content_check" not in json.loads((model_copy / CARD_FILE).read_text()) or (
        json.loads((model_copy / CARD_FILE).read_text())["content_check"]
        == json.loads((SHIPPED_DIR / CARD_FILE).read_text())["content_check"]
    )


def test_an_incomplete_non_chest_set_is_refused_rather_than_fitted_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the development extras (scikit-image, pydicom-data) the reference set is
    smaller, and so would be the cut-off's ceiling: the fit says what to install instead."""
    from model import content_fit, nonchest

    monkeypatch.setattr(nonchest, "SKIMAGE_FILES", (*nonchest.SKIMAGE_FILES, "not-there.png"))
    with pytest.raises(ValueError, match=r"incomplete \(\d+ of \d+ images found\).*\[dev\]"):
        content_fit.nonchest_levels(32)
