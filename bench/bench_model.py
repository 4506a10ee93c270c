"""Model benchmark: validation metrics at the shipped threshold, training time, inference img/s.

Re-derives the patient-level validation split from the model card's seed and fraction,
scores it through the production path (ingest reader -> preprocess -> network), and times
inference on this machine. Usage:

    python bench/bench_model.py [--model DIR] [--data ../shared/data/pediatric-cxr]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from ingest import read_image
from model import dataset
from model.metrics import classification_metrics
from model.predict import Classifier

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/pediatric-cxr")
    args = parser.parse_args()

    classifier = Classifier.load(args.model)
    card = classifier.card
    split = dataset.training_split(args.data, card)

    started = time.perf_counter()
    greys = [read_image(r.path).pixels for r in split.validation]
    read_seconds = time.perf_counter() - started
    labels = np.array([r.label for r in split.validation])
    classifier.warm_up(32)  # trace the graphs outside the timings, as a worker does at start
    started = time.perf_counter()
    probabilities = np.concatenate(
        [classifier.probabilities(greys[i : i + 32]) for i in range(0, len(greys), 32)]
    )
    batch_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for grey in greys[:50]:
        classifier.probabilities([grey])
    single_seconds = (time.perf_counter() - started) / 50

    m = classification_metrics(
        labels, probabilities, card.operating_point.threshold, bootstrap=1000, seed=0
    )
    print(
        f"model {card.model_version} ({card.training.get('parameters')} parameters, "
        f"input {card.input_size} px)"
    )
    print(f"validation split: {split.summary()['validation']}")
    print(
        f"ROC AUC            {m['roc_auc']:.4f}  (95% CI {m['ci95']['roc_auc'][0]:.4f}-"
        f"{m['ci95']['roc_auc'][1]:.4f})"
    )
    print(
        f"threshold          {m['threshold']:.4f} "
        f"(suspect cut-off {card.operating_point.suspect_threshold:.4f}, sensitivity "
        f"{np.mean(probabilities[labels == 1] >= card.operating_point.suspect_threshold):.4f})"
    )
    for name in ("sensitivity", "specificity", "accuracy", "ppv", "npv", "f1"):
        low, high = m["ci95"][name]
        print(f"{name:<18} {m[name]:.4f}  (95% CI {low:.4f}-{high:.4f})")
    print(f"brier {m['brier']:.4f}  ECE {m['ece']:.4f}  confusion {m['confusion']}")
    print(
        f"training wall time {card.training['fit_wall_seconds'] / 60:.1f} min fit, "
        f"{card.training['total_wall_seconds'] / 60:.1f} min total, "
        f"{card.training['epochs_run']} epochs (best {card.training['best_epoch']}), "
        f"{card.training['train_images_per_second']} img/s on {card.training['machine']}"
    )
    n = len(greys)
    print(
        f"inference: decode {n / read_seconds:.1f} img/s; preprocess+network batch-32 "
        f"{n / batch_seconds:.1f} img/s; single image {single_seconds * 1000:.1f} ms "
        f"({os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
