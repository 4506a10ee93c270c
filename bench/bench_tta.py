"""Does test-time augmentation pay for itself? Validation metrics with and without it.

Scores the model's own patient-level validation split (re-derived from the model card) as
shipped, and averaged over small shifts and a zoom of the model input, re-fitting the
operating point each time the way training does. Usage:

    python bench/bench_tta.py [--model DIR] [--data ../shared/data/pediatric-cxr]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from ingest import read_image
from model import dataset
from model.calibration import choose_operating_point
from model.predict import Classifier

REPO = Path(__file__).resolve().parents[1]
SHIFT = 6  # pixels at the model's input size


def variants(x: np.ndarray) -> dict[str, np.ndarray]:
    size = x.shape[1]
    crop = round(size * 0.94)
    offset = (size - crop) // 2
    zoomed = tf.image.resize(x[:, offset : offset + crop, offset : offset + crop], (size, size))
    return {
        "identity": x,
        "zoom 1.06": zoomed.numpy(),
        "shift +x": np.roll(x, SHIFT, axis=2),
        "shift -x": np.roll(x, -SHIFT, axis=2),
        "shift +y": np.roll(x, SHIFT, axis=1),
        "shift -y": np.roll(x, -SHIFT, axis=1),
    }


def report(name: str, logits: np.ndarray, labels: np.ndarray, seconds: float) -> None:
    point = choose_operating_point(logits, labels, 0.95, 0.99)
    predicted = expit(logits / point.temperature) >= point.threshold
    print(
        f"{name:<22} ROC AUC {roc_auc_score(labels, logits):.4f}  sensitivity "
        f"{predicted[labels == 1].mean():.4f}  specificity {1 - predicted[labels == 0].mean():.4f}"
        f"  ({len(labels) / seconds:.0f} img/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/pediatric-cxr")
    args = parser.parse_args()
    classifier = Classifier.load(args.model)
    split = dataset.training_split(args.data, classifier.card)
    labels = np.array([r.label for r in split.validation])
    x = classifier.inputs([read_image(r.path).pixels for r in split.validation])
    logits: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for name, batch in variants(x).items():
        started = time.perf_counter()
        logits[name] = classifier.network.predict(batch, batch_size=64, verbose=0)[:, 0]
        seconds[name] = time.perf_counter() - started
    report("as shipped", logits["identity"], labels, seconds["identity"])
    shifts = ["identity", "shift +x", "shift -x", "shift +y", "shift -y"]
    report(
        "TTA: 5 shifts",
        np.mean([logits[k] for k in shifts], axis=0),
        labels,
        sum(seconds[k] for k in shifts),
    )
    report(
        "TTA: 5 shifts + zoom",
        np.mean(list(logits.values()), axis=0),
        labels,
        sum(seconds.values()),
    )


if __name__ == "__main__":
    main()
