"""A two-step training run through the real CLI writes a loadable, calibrated model (on the
committed 28-film sample: the recipe and its files are under test, not the accuracy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.datasets import SAMPLE_DIR

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module", params=[0.0, 0.5], ids=["plain", "crop-consistency"])
def smoke_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    command = [
        sys.executable,
        "-m",
        "worker.cli",
        "train",
        "--data",
        str(SAMPLE_DIR),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "8",
        "--max-images",
        "48",
        "--input-size",
        "64",
        "--cache-dir",
        str(out / "cache"),
        "--model-version",
        "smoke",
        "--crop-consistency",
        str(request.param),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_training_writes_weights_card_history_and_curves(
    smoke_run: Path, request: pytest.FixtureRequest
) -> None:
    for name in (
        "model.keras",
        "model_card.json",
        "history.json",
        "curves.png",
        "validation_predictions.csv",
    ):
        assert (smoke_run / name).is_file(), name
    card = json.loads((smoke_run / "model_card.json").read_text())
    assert card["input_size"] == 64
    assert card["model_version"] == "smoke"
    weight = request.node.callspec.params["smoke_run"]
    assert card["training"]["config"]["crop_consistency"] == weight
    point = card["operating_point"]
    assert 0 <= point["suspect_threshold"] <= point["threshold"] <= 1
    assert card["data"]["split"]["validation"]["images"] > 0
    assert set(json.loads((smoke_run / "history.json").read_text())) >= {"loss", "val_auc"}


def test_trained_model_loads_and_scores_deterministically(smoke_run: Path) -> None:
    from model.predict import Classifier

    classifier = Classifier.load(smoke_run)
    images = [
        np.random.default_rng(i).uniform(0, 255, (80, 100)).astype(np.float32) for i in range(3)
    ]
    first = classifier.probabilities(images)
    assert first.shape == (3,)
    assert np.array_equal(first, classifier.probabilities(images))
    assert np.all((first >= 0) & (first <= 1))
