"""The shipped model: loads by default, scores deterministically, explains with Grad-CAM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.card import SHIPPED_DIR, ModelCard
from model.prediction import Label, Priority
from tests.ingest.dicom_factory import sample_jpegs

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def classifier():  # type: ignore[no-untyped-def]
    from model.predict import Classifier

    return Classifier.load()


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    from ingest import read_image

    return [read_image(p).pixels for p in sample_jpegs(per_class=2)]


def test_the_shipped_model_has_a_complete_card() -> None:
    card = ModelCard.load(SHIPPED_DIR)
    assert card.labels == ("NORMAL", "PNEUMONIA")
    assert card.operating_point.target_sensitivity >= 0.95
    assert card.validation_metrics["roc_auc"] > 0.9
    assert card.data["manifest_sha256"]
    assert card.training["command"].startswith("cxr-triage train")


def test_predictions_are_deterministic_and_batch_independent(classifier, images) -> None:
    batch = classifier.probabilities(images)
    singles = np.array([classifier.probabilities([image])[0] for image in images])
    assert np.array_equal(batch, classifier.probabilities(images))
    np.testing.assert_allclose(batch, singles, atol=1e-5)


def test_label_and_priority_follow_the_card_thresholds(classifier) -> None:
    point = classifier.card.operating_point
    at_threshold = classifier.decide(point.threshold)
    assert (at_threshold.label, at_threshold.priority) == (Label.PNEUMONIA, Priority.URGENT)
    below = classifier.decide(float(np.nextafter(point.threshold, 0)))
    assert below.label is Label.NORMAL
    assert below.priority is (
        Priority.SUSPECT if point.suspect_threshold < point.threshold else Priority.ROUTINE
    )
    under_suspect = classifier.decide(float(np.nextafter(point.suspect_threshold, 0)))
    assert (under_suspect.label, under_suspect.priority) == (Label.NORMAL, Priority.ROUTINE)


def test_gradcam_map_has_the_input_shape_and_is_not_constant(classifier, images) -> None:
    from model.gradcam import grad_cam

    pneumonia_image = images[-1]
    heatmap = grad_cam(classifier.network, classifier.inputs([pneumonia_image])[0])
    size = classifier.card.input_size
    assert heatmap.shape == (size, size)
    assert heatmap.min() >= 0.0 and heatmap.max() == pytest.approx(1.0)
    assert heatmap.std() > 0.01


def test_predict_cli_writes_json_and_a_heatmap_overlay(tmp_path: Path) -> None:
    source = sample_jpegs(per_class=1)[1]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "predict",
            str(source),
            "--json",
            "--heatmap",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = json.loads(done.stdout)
    assert result["status"] == "scored"
    assert 0.0 <= result["probability"] <= 1.0
    assert result["flags"] == ["eligibility_unverified"]
    assert Path(result["heatmap"]).is_file()


def test_predict_cli_reports_a_refused_file_with_its_reason(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 300)
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "predict", str(junk), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    (result,) = json.loads(done.stdout)
    assert result["status"] == "rejected"
    assert result["reason"]


def test_warm_up_keeps_the_scores_and_batched_heatmaps_match_single_ones(images) -> None:
    from model.predict import Classifier

    cold, warm = Classifier.load(), Classifier.load()
    warm.warm_up(batch_size=3)
    np.testing.assert_allclose(
        warm.probabilities(images), cold.probabilities(images), rtol=0, atol=1e-6
    )
    maps = warm.heatmaps(images)
    size = warm.card.input_size
    assert maps.shape == (len(images), size, size)
    for image, batched in zip(images, maps, strict=True):
        np.testing.assert_allclose(batched, cold.heatmap(image), atol=1e-4)
