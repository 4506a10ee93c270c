"""``cxr-triage evaluate`` on a small labelled folder mixing JPEG, PNG and DICOM."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from tests.corpus import cr_dicom, lateral_dicom
from tests.ingest.dicom_factory import sample_jpegs

pytestmark = pytest.mark.tf

REQUIRED = (
    "n",
    "accuracy",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "f1",
    "roc_auc",
    "pr_auc",
    "brier",
    "ece",
    "threshold",
    "confusion",
)


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    sources = sample_jpegs(per_class=3)
    root = tmp_path_factory.mktemp("labelled")
    for label, group in (("NORMAL", sources[:3]), ("PNEUMONIA", sources[3:])):
        folder = root / label
        folder.mkdir()
        (folder / group[0].name).write_bytes(group[0].read_bytes())
        Image.open(group[1]).save(folder / f"{group[1].stem}.png")
        cr_dicom(group[2], folder / f"{group[2].stem}.dcm")
    lateral_dicom(sources[0], root / "NORMAL" / "lateral.dcm")
    out = tmp_path_factory.mktemp("evaluation")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "evaluate",
            "--data",
            str(root),
            "--out",
            str(out),
            "--bootstrap",
            "200",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return out, json.loads((out / "metrics.json").read_text())


def test_metrics_json_has_every_field_with_intervals(evaluation) -> None:
    _, metrics = evaluation
    assert set(REQUIRED) <= set(metrics)
    assert set(metrics["confusion"]) == {"tp", "fp", "tn", "fn"}
    assert sum(metrics["confusion"].values()) == metrics["n"] == 6
    for name in ("accuracy", "sensitivity", "specificity", "roc_auc"):
        assert len(metrics["ci95"][name]) == 2


def test_files_the_worker_would_refuse_are_counted_not_scored(evaluation) -> None:
    _, metrics = evaluation
    assert metrics["n_rejected"] == 1
    assert metrics["rejected_by_reason"] == {"lateral_view": 1}


def test_reported_auc_matches_scikit_learn_on_the_written_predictions(evaluation) -> None:
    out, metrics = evaluation
    rows = [r for r in csv.DictReader((out / "predictions.csv").open()) if r["probability"]]
    labels = np.array([r["label"] == "PNEUMONIA" for r in rows], dtype=int)
    probabilities = np.array([float(r["probability"]) for r in rows])
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, probabilities))


def test_plots_and_report_are_written(evaluation) -> None:
    out, metrics = evaluation
    for name in ("roc.png", "pr.png", "confusion.png", "calibration.png"):
        assert Image.open(out / name).size[0] > 200
    report = (out / "report.md").read_text()
    assert "Not for diagnostic use" in report
    assert f"{metrics['roc_auc']:.4f}" in report
