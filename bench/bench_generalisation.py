"""Generalisation benchmark: candidate models on a site sample, and crop invariance.

For each model directory: ROC AUC on the site sample with a bootstrap interval and a paired
bootstrap interval of the difference to the first model; what site calibration gives
(cross-validated specificity, sensitivity and ECE of ``calibrate --site``, and the
specificity at the point where 95 % of the site's pneumonias are caught); and the
crop-invariance table (normals trimmed top and bottom to a wider aspect) on the site sample
and on the model's own validation split (true-aspect originals only). Usage:

    python bench/bench_generalisation.py --models model/shipped runs/r2 \\
        [--site ../shared/data/pediatric-cxr-site] [--data ../shared/data/pediatric-cxr]

``--no-site`` prints only the validation-split crop table: that is the one to choose on.

The site sample is for measuring, never for choosing among many candidates: say how many
were compared when quoting these figures.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from sklearn.metrics import roc_auc_score

from ingest import load_scorable, read_image
from model import dataset
from model.crop_check import crop_invariance
from model.evaluate import labelled_files
from model.geometry import crop_to_aspect
from model.predict import Classifier
from model.site_calibration import cross_validate

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 2000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, nargs="+", required=True)
    parser.add_argument("--site", type=Path, default=REPO.parent / "shared/data/pediatric-cxr-site")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/pediatric-cxr")
    parser.add_argument("--no-validation", action="store_true", help="skip the own-split table")
    parser.add_argument(
        "--no-site",
        action="store_true",
        help="only the own-split crop table: for choosing between candidates, which the site "
        "sample must not be used for",
    )
    args = parser.parse_args()
    if args.no_site:
        for model_dir in args.models:
            classifier = Classifier.load(model_dir)
            print(f"\n== {classifier.version} ({model_dir})")
            _print_validation_crops(classifier, args.data)
        return

    files = labelled_files(args.site)
    site_images = [load_scorable(path)[0].pixels for path, _ in files]
    site_labels = np.array([label for _, label in files])
    rng = np.random.default_rng(20261129)
    resamples = [_stratified_resample(site_labels, rng) for _ in range(ROUNDS)]
    print(
        f"site sample {args.site}: {np.sum(site_labels == 0)} normal, "
        f"{np.sum(site_labels == 1)} pneumonia; {len(args.models)} candidates compared"
    )

    baseline: np.ndarray | None = None
    for model_dir in args.models:
        classifier = Classifier.load(model_dir)
        logits = _in_batches(classifier.logits, site_images)
        aucs = [roc_auc_score(site_labels[i], logits[i]) for i in resamples]
        print(f"\n== {classifier.version} ({model_dir})")
        print(
            f"site ROC AUC {roc_auc_score(site_labels, logits):.4f} "
            f"(95 % CI {np.percentile(aucs, 2.5):.4f}-{np.percentile(aucs, 97.5):.4f})"
        )
        if baseline is None:
            baseline = logits
        else:
            diffs = [
                roc_auc_score(site_labels[i], logits[i])
                - roc_auc_score(site_labels[i], baseline[i])
                for i in resamples
            ]
            print(
                f"  paired difference to the first model: {np.mean(diffs):+.4f} "
                f"(95 % CI {np.percentile(diffs, 2.5):+.4f} to {np.percentile(diffs, 97.5):+.4f})"
            )
        positives = np.sort(logits[site_labels == 1])
        cut = positives[int(np.floor(0.05 * positives.size))]
        print(
            f"  specificity at site sensitivity 0.95 (point estimate): "
            f"{np.mean(logits[site_labels == 0] < cut):.3f}"
        )
        for rule, confidence in (("conformal (default)", None), ("Clopper-Pearson 90 %", 0.9)):
            cross = cross_validate(logits, site_labels, 0.95, 0.99, confidence, seed=20261129)
            print(
                f"  calibrate --site, {rule}, cross-validated: sensitivity "
                f"{cross['sensitivity']:.3f}, specificity {cross['specificity']:.3f}, "
                f"ECE {cross['ece']:.3f} (pooled out-of-fold; mean of per-fold ECEs "
                f"{cross['ece_per_fold_mean']:.3f})"
            )
        _print_crops("site sample", crop_invariance(classifier, site_images, site_labels))
        if not args.no_validation:
            _print_validation_crops(classifier, args.data)


def _print_validation_crops(classifier: Classifier, data: Path) -> None:
    """The own-split crop table, and ROC AUC on the uncropped films, on their w/h 1.5
    crops and on both pooled (a model whose normals drift up when trimmed loses there)."""
    split = dataset.training_split(data, classifier.card)
    kept = [r for r in split.validation if not r.squashed_copy]
    images = [read_image(r.path).pixels for r in kept]
    labels = np.array([r.label for r in kept])
    _print_crops(
        f"own validation split, {len(kept)} true-aspect originals",
        crop_invariance(classifier, images, labels),
    )
    whole = _in_batches(classifier.logits, images)
    cropped = _in_batches(classifier.logits, [crop_to_aspect(i, 1.5) for i in images])
    pooled = roc_auc_score(np.concatenate([labels, labels]), np.concatenate([whole, cropped]))
    print(
        f"  own validation ROC AUC: uncropped {roc_auc_score(labels, whole):.4f}, "
        f"w/h 1.5 crops {roc_auc_score(labels, cropped):.4f}, both pooled {pooled:.4f}"
    )


def _in_batches(score: object, images: list[np.ndarray], batch: int = 32) -> np.ndarray:
    return np.concatenate(
        [score(images[i : i + batch]) for i in range(0, len(images), batch)]  # type: ignore[operator]
    )


def _stratified_resample(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Resample each class with replacement, so every round has both."""
    return np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), size=(labels == c).sum()) for c in (0, 1)]
    )


def _print_crops(title: str, rows: list) -> None:  # type: ignore[type-arg]
    print(f"  crop invariance, {title} (at the card's URGENT cut-off):")
    print("    aspect w/h   normals called pneumonia   sensitivity   median normal p")
    for row in rows:
        aspect = "uncropped" if row.aspect is None else f"{row.aspect:.1f}"
        print(
            f"    {aspect:>10}   {row.normals_called_pneumonia:24.3f}   "
            f"{row.sensitivity:11.3f}   {row.median_normal_probability:15.3f}"
        )


if __name__ == "__main__":
    main()
