"""Calibrate a trained model on a deploying site's labelled sample, without retraining.

A network trained at one hospital ranks another hospital's films well but puts them at
other places on its scale: the operating point fitted on its own validation split does
not travel (the shipped model called a quarter of unseen normals URGENT). Every trusted
product handles that with a local calibration before go-live; this is ours:

1. **Probabilities**: Platt scaling of the network's logit (a slope and an offset) on the
   site sample, so ``P(pneumonia)`` means what it says at this site.
2. **Cut-offs with a guarantee that survives a small sample**, not the point estimate
   (which, on 78 pneumonias, leaves the site below 0.95 about half the time). By default
   the split-conformal rule: the URGENT cut-off is the k-th lowest site pneumonia with
   ``k = floor((1 - 0.95) * (n + 1))``, which guarantees, for any score distribution, that
   the *expected* sensitivity on the site's future pneumonias is at least 0.95.
   ``confidence=c`` asks for more: the highest cut-off whose one-sided Clopper-Pearson
   lower bound of site sensitivity reaches the target with probability ``c``. That needs
   at least 45 pneumonias at 90 % and costs much specificity on a sample of 125 (one
   low-scoring pneumonia sets the cut-off), so it is the choice of sites with larger
   samples. SUSPECT (0.99) cannot be shown by either rule on fewer than 99 pneumonias:
   its cut-off then catches every pneumonia of the sample, and the card says so.
3. **An honest estimate of what the site will see**: metrics on the sample itself are
   optimistic (it chose the cut-offs), so the card also records cross-validated figures:
   the whole procedure fitted on four fifths, measured on the fifth left out.
4. **The content check's cut-offs on the site's own films**
   (:func:`model.content_check.site_cut_offs`): raised, by the split-conformal rule, so the
   site's chest films are refused at most 0.5 % of the time, never above the ceiling that
   keeps every non-chest reference image refused; written as the new directory's
   ``content_check.npz`` and recorded, with leave-one-out refusals, in the card.

The weights are untouched. The new model directory has its own ``model_version`` (with a
site suffix), so every worklist row says which calibration scored it.
"""

from __future__ import annotations

import hashlib
import math
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import beta
from sklearn.model_selection import RepeatedStratifiedKFold

from model.calibration import Platt, threshold_for_sensitivity
from model.card import CARD_FILE, ModelCard, OperatingPoint
from model.content_check import SiteCutOffs, site_cut_offs
from model.dataset import LABELS
from model.drift import SITE_PREDICTIONS
from model.evaluate import RejectedFile, ScoredFile, labelled_files, score_folder, write_evaluation
from model.metrics import classification_metrics, expected_calibration_error
from model.predict import Classifier

#: Fewer cases than these cannot place a probability scale or a cut-off with any stability.
MIN_NORMALS = 20
MIN_PNEUMONIAS = 40


class SiteSampleError(ValueError):
    """The sample cannot support a calibration; the message says what is missing."""


class SampleTooSmallError(SiteSampleError):
    pass


class SampleOneSidedError(SiteSampleError):
    pass


@dataclass(frozen=True)
class SiteCalibration:
    card: ModelCard
    before: dict[str, Any]
    after: dict[str, Any]
    cross_validated: dict[str, Any]
    content: SiteCutOffs | None = None  # None: the model has no content check


def required_positives(target: float, confidence: float) -> int:
    """Pneumonias needed for a sample that misses none to show ``target`` at ``confidence``."""
    return math.ceil(math.log(1 - confidence) / math.log(target))


def sensitivity_lower_bound(caught: int, total: int, confidence: float) -> float:
    """One-sided Clopper-Pearson lower bound of a sensitivity of ``caught / total``."""
    if caught == 0:
        return 0.0
    return float(beta.ppf(1 - confidence, caught, total - caught + 1))


def guaranteed_threshold(
    probabilities: np.ndarray, labels: np.ndarray, target: float, confidence: float | None
) -> tuple[float, bool]:
    """The highest cut-off that keeps sensitivity >= ``target`` under the chosen guarantee.

    ``confidence=None``: split-conformal (expected sensitivity on new cases >= target).
    Otherwise: the Clopper-Pearson lower bound at ``confidence`` reaches the target.
    Returns ``(threshold, demonstrated)``; when the sample is too small to show the target,
    the threshold catches every pneumonia of the sample and ``demonstrated`` is False.
    """
    total = int((labels == 1).sum())
    if confidence is None:
        missed = math.floor((1 - target) * (total + 1)) - 1  # below the k-th lowest, k >= 1
        if missed < 0:
            return threshold_for_sensitivity(probabilities, labels, 1.0), False
        return threshold_for_sensitivity(probabilities, labels, (total - missed) / total), True
    for caught in range(1, total + 1):
        if sensitivity_lower_bound(caught, total, confidence) >= target:
            return threshold_for_sensitivity(probabilities, labels, caught / total), True
    return threshold_for_sensitivity(probabilities, labels, 1.0), False


def fit_operating_point(
    logits: np.ndarray,
    labels: np.ndarray,
    target_sensitivity: float,
    suspect_target_sensitivity: float,
    confidence: float | None = None,
) -> tuple[OperatingPoint, dict[str, bool]]:
    """Platt scaling, then both cut-offs from the sensitivity lower bounds."""
    platt = Platt.fit(logits, labels)
    point = OperatingPoint(
        temperature=1.0 / platt.slope,
        bias=platt.offset,
        threshold=1.0,
        suspect_threshold=0.0,
        target_sensitivity=target_sensitivity,
        suspect_target_sensitivity=suspect_target_sensitivity,
    )
    probabilities = point.probabilities(logits)
    threshold, urgent_shown = guaranteed_threshold(
        probabilities, labels, target_sensitivity, confidence
    )
    suspect, suspect_shown = guaranteed_threshold(
        probabilities, labels, suspect_target_sensitivity, confidence
    )
    point = replace(point, threshold=threshold, suspect_threshold=min(suspect, threshold))
    return point, {"urgent": urgent_shown, "suspect": suspect_shown}


def check_sample(
    labels: np.ndarray, target_sensitivity: float, confidence: float | None = None
) -> None:
    """Refuse, by name, a sample that cannot support the calibration."""
    positives, negatives = int((labels == 1).sum()), int((labels == 0).sum())
    if positives == 0 or negatives == 0:
        raise SampleOneSidedError(
            f"the site sample has {positives} PNEUMONIA and {negatives} NORMAL images: "
            "both classes are needed to calibrate"
        )
    needed = MIN_PNEUMONIAS
    why = "to place the cut-offs"
    if confidence is not None and required_positives(target_sensitivity, confidence) > needed:
        needed = required_positives(target_sensitivity, confidence)
        why = f"to show sensitivity >= {target_sensitivity:g} at {confidence:.0%} confidence"
    if positives < needed or negatives < MIN_NORMALS:
        raise SampleTooSmallError(
            f"the site sample has {positives} PNEUMONIA and {negatives} NORMAL images that "
            f"could be scored; calibration needs at least {needed} PNEUMONIA ({why}) and "
            f"{MIN_NORMALS} NORMAL"
        )


def calibrate_site(
    classifier: Classifier,
    site_dir: Path,
    out_dir: Path,
    source_dir: Path,
    site_name: str | None = None,
    target_sensitivity: float = 0.95,
    suspect_target_sensitivity: float = 0.99,
    confidence: float | None = None,
    bootstrap: int = 2000,
    seed: int = 20261129,
    progress: bool = True,
) -> SiteCalibration:
    """Score ``site_dir`` through the worker's reader, fit, and write ``out_dir``."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty: choose a new --out")
    files = labelled_files(site_dir)
    distances: list[np.ndarray] = []

    def logits_and_distances(images: Sequence[np.ndarray]) -> np.ndarray:
        if classifier.content_check is None:
            return classifier.logits(images)
        logits, found = classifier.logits_and_distances(images)
        distances.append(found)
        return logits

    scored, rejected = score_folder(classifier, files, progress, score=logits_and_distances)
    labels = np.array([s.label for s in scored], dtype=int)
    logits = np.array([s.probability for s in scored], dtype=float)  # raw logits here
    check_sample(labels, target_sensitivity, confidence)
    content = (
        site_cut_offs(classifier.content_check, np.concatenate(distances))
        if classifier.content_check is not None
        else None
    )

    source = classifier.card
    point, shown = fit_operating_point(
        logits, labels, target_sensitivity, suspect_target_sensitivity, confidence
    )
    name = site_name or site_dir.resolve().name
    card = replace(
        source,
        model_version=site_model_version(source.model_version, name),
        operating_point=point,
    )
    before = write_evaluation(
        out_dir / "evaluation" / "before",
        source,
        labels,
        source.operating_point.probabilities(logits),
        bootstrap,
        data=str(site_dir),
    )
    after = write_evaluation(
        out_dir / "evaluation" / "after",
        card,
        labels,
        point.probabilities(logits),
        bootstrap,
        data=str(site_dir),
    )
    cross = cross_validate(
        logits, labels, target_sensitivity, suspect_target_sensitivity, confidence, seed
    )
    card = replace(
        card,
        site_calibration={
            "site": name,
            "source_model_version": source.model_version,
            "command": shlex.join(["cxr-triage", *sys.argv[1:]]),
            "calibrated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "sample": _describe_sample(site_dir, scored, rejected),
            "method": "Platt scaling of the network logit; " + _cut_off_rule(confidence),
            "confidence": confidence,
            "target_demonstrated": shown,
            "metrics_before": _headline(before),
            "metrics_after_in_sample": _headline(after),
            "metrics_after_cross_validated": cross,
            "content_check": content.record if content is not None else None,
        },
    )
    _copy_model_files(source_dir, out_dir)
    if content is not None:  # replaces the copied check: same statistics, the site's cut-offs
        content.check.save(out_dir)
    card.save(out_dir)
    _write_site_predictions(out_dir / SITE_PREDICTIONS, scored, point.probabilities(logits))
    return SiteCalibration(card, before, after, cross, content)


def cross_validate(
    logits: np.ndarray,
    labels: np.ndarray,
    target_sensitivity: float,
    suspect_target_sensitivity: float,
    confidence: float | None,
    seed: int,
    folds: int = 5,
    repeats: int = 20,
) -> dict[str, Any]:
    """The procedure fitted on 4/5 of the sample, measured on the 1/5 left out.

    Sensitivity and specificity are the mean over folds. The calibration error is measured
    on each repeat's pooled out-of-fold probabilities (every image scored by a fit that
    never saw it), then averaged over repeats: ten bins over the 25 images of one fold
    mostly measure sampling noise (labels drawn from the site sample's own r5 scores, a
    perfectly calibrated score, show a mean ECE of 0.064 on 25 images and 0.036 on 125),
    so the per-fold mean is kept only as ``ece_per_fold_mean``. Each fold may
    hold too few pneumonias to demonstrate the target; the cut-off then catches all of
    them, which only makes these figures more conservative.
    """
    sensitivity, specificity, per_fold_ece = [], [], []
    out_of_fold = np.empty((repeats, len(labels)))
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    for i, (fit, held) in enumerate(splitter.split(logits, labels)):
        point, _ = fit_operating_point(
            logits[fit], labels[fit], target_sensitivity, suspect_target_sensitivity, confidence
        )
        p = point.probabilities(logits[held])
        out_of_fold[i // folds, held] = p
        m = classification_metrics(labels[held], p, point.threshold, bootstrap=0)
        sensitivity.append(m["sensitivity"])
        specificity.append(m["specificity"])
        per_fold_ece.append(m["ece"])
    return {
        "folds": folds,
        "repeats": repeats,
        "sensitivity": float(np.mean(sensitivity)),
        "specificity": float(np.mean(specificity)),
        "ece": float(np.mean([expected_calibration_error(labels, p) for p in out_of_fold])),
        "ece_per_fold_mean": float(np.mean(per_fold_ece)),
        "sensitivity_worst_fold_percentile_5": float(np.percentile(sensitivity, 5)),
    }


def _cut_off_rule(confidence: float | None) -> str:
    if confidence is None:
        return (
            "cut-offs by the split-conformal rule (the k-th lowest site pneumonia, "
            "k = floor((1 - target) * (n + 1))): expected site sensitivity >= target"
        )
    return (
        "cut-offs at the highest probability whose one-sided Clopper-Pearson "
        f"{confidence:.0%} lower bound of site sensitivity reaches the target"
    )


def sample_digest(files: list[tuple[Path, int]], root: Path) -> str:
    """SHA-256 over each file's label, relative path and content: which sample, exactly."""
    digest = hashlib.sha256()
    for path, label in sorted(files):
        digest.update(f"{label}\0{path.relative_to(root).as_posix()}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _describe_sample(
    site_dir: Path, scored: list[ScoredFile], rejected: list[RejectedFile]
) -> dict[str, Any]:
    files = [(s.path, s.label) for s in scored] + [(r.path, r.label) for r in rejected]
    return {
        "normal": sum(s.label == 0 for s in scored),
        "pneumonia": sum(s.label == 1 for s in scored),
        "rejected_by_reader": len(rejected),
        "sha256": sample_digest(files, site_dir),
    }


_HEADLINE = ("n", "sensitivity", "specificity", "roc_auc", "ece", "brier", "threshold", "ci95")


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    kept = {k: metrics[k] for k in _HEADLINE if k in metrics}
    kept["sensitivity_at_suspect_threshold"] = metrics.get("sensitivity_at_suspect_threshold")
    return kept


def _write_site_predictions(
    path: Path, scored: list[ScoredFile], probabilities: np.ndarray
) -> None:
    """The drift watch's reference (``model.drift``) once this site model is in use. Files
    are named by content hash: a site's file names may carry patient names."""
    lines = ["file,label,probability"]
    lines += [
        f"{hashlib.sha256(s.path.read_bytes()).hexdigest()[:16]},{LABELS[s.label]},{p:.6f}"
        for s, p in zip(scored, probabilities, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


def _copy_model_files(source_dir: Path, out_dir: Path) -> None:
    """Everything the source directory ships beside its card (weights, fitted extras)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in source_dir.iterdir():
        if item.is_file() and item.name != CARD_FILE:
            shutil.copy2(item, out_dir / item.name)


#: The worklist's model_version column holds 64 characters.
MAX_VERSION_LENGTH = 64


def site_model_version(source_version: str, site: str) -> str:
    """``<source>+site-<slug>``, shortened to fit the worklist column."""
    prefix = f"{source_version.split('+site-')[0]}+site-"
    room = MAX_VERSION_LENGTH - len(prefix)
    if room < 4:
        raise ValueError(f"model_version {source_version!r} leaves no room for a site suffix")
    slug = "".join(c if c.isalnum() else "-" for c in site.lower()).strip("-")
    return prefix + (slug[:room].strip("-") or "site")
