"""Site calibration: the guarantee on synthetic shifts, then the real command on real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from model.site_calibration import (
    SampleOneSidedError,
    SampleTooSmallError,
    check_sample,
    cross_validate,
    fit_operating_point,
    guaranteed_threshold,
    required_positives,
    sensitivity_lower_bound,
    site_model_version,
)
from tests.corpus import cr_dicom
from tests.datasets import SITE_SAMPLE, sample_files
from tests.processes import CLI, all_final, rows
from tests.support import wait_until

pytestmark = pytest.mark.tf  # model.site_calibration scores through the Classifier


def _draw(
    rng: np.random.Generator, normals: int, pneumonias: int, shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a site whose scale sits ``shift`` above the training hospital's."""
    logits = np.concatenate([rng.normal(-3.0, 1.2, normals), rng.normal(3.0, 1.5, pneumonias)])
    return logits + shift, np.array([0] * normals + [1] * pneumonias)


def test_required_positives_and_bounds() -> None:
    assert required_positives(0.95, 0.90) == 45
    assert sensitivity_lower_bound(45, 45, 0.90) >= 0.95 > sensitivity_lower_bound(44, 44, 0.90)
    assert sensitivity_lower_bound(0, 10, 0.9) == 0.0


@pytest.mark.parametrize("confidence", [None, 0.9])
@pytest.mark.parametrize("shift", [2.0, -2.0])
def test_a_known_shift_moves_the_cut_off_with_it_and_keeps_sensitivity(
    shift: float, confidence: float | None
) -> None:
    """A site whose logits sit 2 above (below) the training hospital's. The source cut-off
    then loses specificity (sensitivity) there. Calibrating on 47 + 78 site cases must move
    the cut-off the same way and keep the sensitivity guarantee on unseen site cases: on
    average >= 0.95 under the conformal rule; >= 0.95 in about 90 % of calibrations under
    the 90 % lower bound (90.7 % in theory for 78 pneumonias; the assertion allows for the
    noise of 300 trials)."""
    rng = np.random.default_rng(7)
    source_point, _ = fit_operating_point(*_draw(rng, 2000, 2000), 0.95, 0.99)
    unseen_logits, unseen_labels = _draw(rng, 20000, 20000, shift)

    def cut_in_logits(point: object) -> float:
        """The lowest unseen logit the point calls PNEUMONIA."""
        called = point.probabilities(unseen_logits) >= point.threshold  # type: ignore[attr-defined]
        return float(unseen_logits[called].min())

    def sensitivity(point: object) -> float:
        called = point.probabilities(unseen_logits) >= point.threshold  # type: ignore[attr-defined]
        return float(called[unseen_labels == 1].mean())

    source_cut = cut_in_logits(source_point)
    sensitivities, moved = [], 0
    trials = 300
    for _ in range(trials):
        point, shown = fit_operating_point(*_draw(rng, 47, 78, shift), 0.95, 0.99, confidence)
        assert shown["urgent"] and not shown["suspect"]  # 0.99 needs >= 99 pneumonias
        assert point.suspect_threshold <= point.threshold
        sensitivities.append(sensitivity(point))
        moved += (cut_in_logits(point) - source_cut) * np.sign(shift) > 0.5
    if confidence is None:
        assert np.mean(sensitivities) >= 0.95
    else:
        assert np.mean(np.array(sensitivities) >= 0.95) >= 0.86
    assert moved / trials >= 0.9, moved
    if shift < 0:
        assert sensitivity(source_point) < 0.8  # what the site would have got uncalibrated


def test_point_estimate_would_break_the_guarantee() -> None:
    """The reason for the lower bound: the plain 95th-percentile cut-off on 78 pneumonias
    falls short of 0.95 on unseen cases far more often than one time in ten."""
    rng = np.random.default_rng(11)
    unseen = rng.normal(3.0, 1.5, 50000)
    short = 0
    for _ in range(200):
        logits, labels = _draw(rng, 47, 78)
        cut = np.sort(logits[labels == 1])[int(np.floor(0.05 * 78))]
        short += float((unseen >= cut).mean()) < 0.95
    assert short / 200 > 0.2


def test_guaranteed_threshold_reports_what_it_cannot_show() -> None:
    probabilities = np.linspace(0.01, 0.99, 100)
    labels = (probabilities > 0.4).astype(int)  # 60 pneumonias
    for confidence in (None, 0.9):
        threshold, shown = guaranteed_threshold(probabilities, labels, 0.99, confidence)
        assert not shown  # 0.99 needs 99 pneumonias (conformal), 230 at 90 %
        assert threshold <= probabilities[labels == 1].min()
    threshold, shown = guaranteed_threshold(probabilities, labels, 0.95, None)
    assert shown  # k = floor(0.05 * 61) = 3: the third-lowest pneumonia sets the cut-off
    assert np.sum(probabilities[labels == 1] < threshold) == 2


def test_cross_validated_calibration_error_is_measured_on_pooled_out_of_fold_scores() -> None:
    """A perfectly calibrated score on 125 images: the pooled out-of-fold ECE sits near the
    noise floor of 125 images; the mean of per-fold (25-image) ECEs reads it as miscalibrated."""
    rng = np.random.default_rng(3)
    logits = np.concatenate([rng.normal(-2.5, 1.5, 47), rng.normal(3.0, 1.5, 78)])
    labels = (rng.random(125) < 1 / (1 + np.exp(-logits))).astype(int)
    cross = cross_validate(logits, labels, 0.95, 0.99, None, seed=1)
    assert cross["ece"] < cross["ece_per_fold_mean"]
    assert cross["ece"] < 0.06


def test_site_version_fits_the_worklist_column() -> None:
    version = site_model_version("cxr-pneumonia-2026.11-r2", "St. Elsewhere Children's " * 5)
    assert version.startswith("cxr-pneumonia-2026.11-r2+site-st--elsewhere")
    assert len(version) <= 64
    assert site_model_version("v1+site-a", "b") == "v1+site-b"  # recalibrating a site model


def test_too_small_and_one_sided_samples_are_refused_by_name() -> None:
    with pytest.raises(SampleOneSidedError, match="both classes"):
        check_sample(np.ones(80, dtype=int), 0.95, 0.9)
    with pytest.raises(SampleTooSmallError, match="at least 40 PNEUMONIA"):
        check_sample(np.array([0] * 40 + [1] * 30), 0.95)
    with pytest.raises(SampleTooSmallError, match=r"at least 45 PNEUMONIA .*90% confidence"):
        check_sample(np.array([0] * 40 + [1] * 42), 0.95, 0.9)
    with pytest.raises(SampleTooSmallError, match="20 NORMAL"):
        check_sample(np.array([0] * 5 + [1] * 100), 0.95)
    check_sample(np.array([0] * 47 + [1] * 78), 0.95, 0.9)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(PYTHONUNBUFFERED="1", CXR_DATA_DIR=str(tmp_path / "data"))
    return env


@pytest.fixture(scope="module")
def site_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``calibrate --site`` on the site sample, with one PNEUMONIA file given as DICOM."""
    site = SITE_SAMPLE.require()
    root = tmp_path_factory.mktemp("site")
    sample = root / "sample"
    shutil.copytree(site, sample, ignore=shutil.ignore_patterns("*.csv", "*.md"))
    first = sorted((sample / "PNEUMONIA").iterdir())[0]
    cr_dicom(first, first.with_suffix(".dcm"))
    first.unlink()
    out = root / "model-site"
    done = subprocess.run(
        [*CLI, "calibrate", "--site", str(sample), "--out", str(out), "--site-name", "Test Site"],
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "after (cross-validated)" in done.stdout
    return out


@pytest.mark.slow
@SITE_SAMPLE.needed
def test_site_model_directory_records_the_calibration(site_model: Path) -> None:
    card = json.loads((site_model / "model_card.json").read_text())
    assert card["model_version"].endswith("+site-test-site")
    site = card["site_calibration"]
    assert site["sample"]["normal"] + site["sample"]["pneumonia"] == 125
    assert site["sample"]["rejected_by_reader"] == 0
    assert len(site["sample"]["sha256"]) == 64
    assert site["target_demonstrated"]["urgent"] is True
    after = site["metrics_after_in_sample"]
    assert after["sensitivity"] >= 0.95
    assert set(after["ci95"]) >= {"sensitivity", "specificity", "roc_auc"}
    assert (site_model / "model.keras").is_file()
    predictions = (site_model / "site_predictions.csv").read_text().splitlines()
    assert predictions[0] == "file,label,probability" and len(predictions) == 126
    assert not any("person" in line or ".jpeg" in line for line in predictions)  # no names
    for plot in ("roc.png", "calibration.png", "confusion.png"):
        assert (site_model / "evaluation" / "after" / plot).is_file()
        assert (site_model / "evaluation" / "before" / plot).is_file()


@pytest.mark.slow
@SITE_SAMPLE.needed
def test_site_model_carries_its_own_content_check_cut_offs(site_model: Path) -> None:
    """Refitted on the site's films (never lower than shipped, never above the ceiling),
    written beside the weights, recorded in the card, and what the site model loads."""
    from model.card import SHIPPED_DIR
    from model.content_check import ContentCheck
    from model.predict import Classifier

    card = json.loads((site_model / "model_card.json").read_text())
    record = card["site_calibration"]["content_check"]
    assert record["films"] == 125 and record["reject_alpha"] == 0.005
    assert record["refused_after_in_sample"] <= record["refused_before"]
    assert record["refused_after_leave_one_out"] <= 1  # <= 0.5 % of 125, rounded up
    shipped = ContentCheck.load(
        SHIPPED_DIR, json.loads((SHIPPED_DIR / "model_card.json").read_text())["model_version"]
    )
    assert shipped is not None
    loaded = Classifier.load(site_model).content_check
    assert loaded is not None
    assert loaded.reject_threshold == pytest.approx(record["reject_threshold"])
    assert loaded.population_threshold == pytest.approx(record["population_threshold"])
    assert shipped.reject_threshold <= loaded.reject_threshold <= shipped.ceiling
    assert loaded.population_threshold >= shipped.population_threshold
    np.testing.assert_array_equal(loaded.whitening, shipped.whitening)


@pytest.mark.slow
@SITE_SAMPLE.needed
def test_site_model_evaluates_and_scores_worklist_rows(site_model: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    evaluated = subprocess.run(
        [*CLI, "evaluate", "--model", str(site_model), "--data", str(SITE_SAMPLE.path), "--out",
         str(tmp_path / "eval"), "--bootstrap", "0"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["model_version"].endswith("+site-test-site")

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for path in sorted((SITE_SAMPLE.path / "PNEUMONIA").iterdir())[:2]:
        shutil.copy(path, inbox / path.name)
    env.update(CXR_MODEL_PATH=str(site_model), CXR_QUIET_PERIOD_S="0.5")
    run = subprocess.run(
        [*CLI, "run", str(inbox), "--exit-when-idle"],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    database_url = f"sqlite:///{tmp_path / 'data' / 'worklist.sqlite3'}"
    wait_until(all_final(database_url, 2), 30, "both rows final")
    scored = rows(database_url)
    versions = {row.model_version for row in scored}
    assert versions == {json.loads((site_model / "model_card.json").read_text())["model_version"]}
    # --exit-when-idle waits for the heatmap tasks, which run after all triage work
    overlays = tmp_path / "data" / "overlays"
    assert all((overlays / f"{row.file_sha256}.png").is_file() for row in scored)


@pytest.mark.slow
def test_too_small_a_sample_is_refused_with_a_message(tmp_path: Path) -> None:
    sample = tmp_path / "small"  # real films, ten a class: the committed sample does
    for label in ("NORMAL", "PNEUMONIA"):
        (sample / label).mkdir(parents=True)
        for path in sample_files("train", label)[:10]:
            shutil.copy(path, sample / label / path.name)
    done = subprocess.run(
        [*CLI, "calibrate", "--site", str(sample), "--out", str(tmp_path / "out")],
        env=_env(tmp_path), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 2
    assert "calibration needs at least 40 PNEUMONIA" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_site_model_is_not_recalibrated_on_the_training_split(tmp_path: Path) -> None:
    """``calibrate --data`` on a site model would silently undo the site's calibration."""
    from dataclasses import replace

    from model.card import SHIPPED_DIR, ModelCard
    from model.recalibrate import recalibrate

    site = tmp_path / "site-model"
    shutil.copytree(SHIPPED_DIR, site)
    card = ModelCard.load(site)
    replace(card, model_version="v+site-x", site_calibration={"site": "x"}).save(site)
    with pytest.raises(ValueError, match="calibrated for the site 'x'"):
        recalibrate(site, tmp_path, tmp_path, lambda path: np.zeros((2, 2)), 0.95, 0.99)
